"""The usage API benchmark's workload: generated call records, loaded through the store's own write path.

``--tenants`` tenants of Zipf-like sizes, per tenant 300 users, 40 workflows, 6 projects and 3
services; sessions of ~10 calls by one user; 9 models (one unpriced, one embeddings model); token
shapes from 200 to 20,000 input tokens, latency growing with the output, 2 % errors; spread over
``--days`` UTC days with more calls on recent days and working hours (at three minutes of each hour,
so the store's per-minute rollups stay bounded). :func:`load` submits batches of 20,000 prepared in
worker processes to ``Store.submit`` (dedupe, append, fsync, rollups), the usage index following the
store as in the server, and saves the index's snapshot (the server starts from it).
"""

from __future__ import annotations

import bisect
import functools
import random
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import UTC, datetime
from itertools import accumulate
from pathlib import Path
from typing import Any

from costspan.pricing import Usage, default_pricer
from costspan.processor.api import UsageIndex
from costspan.processor.api._index_snapshot import IndexSnapshots
from costspan.processor.serve._settings import Settings
from costspan.processor.store._batch import PreparedBatch, prepare
from costspan.processor.store._records import CallRecord, TokenCounts
from costspan.processor.store._store import Store

__all__ = ["BATCH", "MODELS", "SHAPES", "generate", "generate_chunk", "load"]

#: (provider, model, operation, share of sessions)
MODELS = [
    ("openai", "gpt-4o-mini", "chat", 30),
    ("openai", "gpt-4o", "chat", 12),
    ("openai", "gpt-4.1-mini", "chat", 10),
    ("anthropic", "claude-sonnet-4-5", "chat", 14),
    ("anthropic", "claude-haiku-4-5", "chat", 10),
    ("google", "gemini-2.5-flash", "chat", 8),
    ("google", "gemini-2.5-pro", "chat", 4),
    ("openai", "text-embedding-3-small", "embeddings", 10),
    ("openai", "no-such-model", "chat", 2),  # unpriced
]
#: (input, output) tokens of a call, and how often (the cache-read share is drawn separately)
SHAPES = [(200, 50, 20), (800, 150, 30), (1500, 300, 25), (4000, 800, 14), (12000, 1500, 8), (20000, 3000, 3)]
USERS, WORKFLOWS, PROJECTS, SERVICES = 300, 40, 6, ("checkout", "search", "support")
BATCH = 20_000
DAY = 86400


def _cum(weights: list[float]) -> list[float]:
    return list(accumulate(weights))


@functools.cache
def _priced() -> tuple[list[list[tuple[TokenCounts, tuple[Any, ...], str]]], str]:
    """Per model: every (shape × cache share) with its price, computed once per process."""
    pricer = default_pricer()
    out = []
    for provider, model, operation, _ in MODELS:
        shapes = []
        for inp, outp, _ in SHAPES:
            for cache in (0, inp // 2):
                o = 0 if operation == "embeddings" else outp
                c = 0 if operation == "embeddings" else cache
                b = pricer.price_call(
                    model, Usage(input_tokens=inp, output_tokens=o, cache_read_tokens=c), provider=provider
                )
                ok = b.total is not None and b.status == "priced"
                money = (b.total, b.input, b.output, b.cache_read, b.cache_write, b.other) if ok else (None,) * 6
                shapes.append((TokenCounts(inp, o, c), money, "priced" if ok else "unpriced"))
        out.append(shapes)
    return out, pricer.catalog.version


def generate_chunk(start: int, count: int, tenants: int, days: int, now: int, seed: int = 7) -> list[CallRecord]:
    """Records ``start`` .. ``start + count - 1`` of the workload (deterministic; ids are the index)."""
    priced, version = _priced()
    rng = random.Random(seed * 1_000_003 + start)
    today = now - now % DAY
    tenant_w = _cum([1 / (t + 1) ** 0.7 for t in range(tenants)])
    user_w = _cum([1 / (k + 1) for k in range(USERS)])
    wf_w = _cum([1 / (k + 1) ** 0.5 for k in range(WORKFLOWS)])
    model_w = _cum([m[3] for m in MODELS])
    shape_w = _cum([s[2] for s in SHAPES])
    # recent days busier (+2 % a day), weekends at 40 %; working hours (8-18 UTC) three times busier
    day_w = _cum(
        [
            1.02 ** (days - d) * (0.4 if datetime.fromtimestamp(today - d * DAY, UTC).weekday() >= 5 else 1.0)
            for d in range(days)
        ]
    )
    hour_w = _cum([3.0 if 8 <= h < 18 else 1.0 for h in range(24)])
    pick = bisect.bisect
    out: list[CallRecord] = []
    i = start
    end = start + count
    while i < end:
        t = pick(tenant_w, rng.random() * tenant_w[-1])
        d = pick(day_w, rng.random() * day_w[-1])
        hour = pick(hour_w, rng.random() * hour_w[-1])
        base = today - d * DAY + hour * 3600 + rng.choice((0, 20, 40)) * 60
        base = min(base, now - 120)  # never in the future
        tenant = f"tenant-{t:03d}"
        user = f"user-{t:03d}-{pick(user_w, rng.random() * user_w[-1])}"
        workflow = f"wf-{t:03d}-{pick(wf_w, rng.random() * wf_w[-1])}"
        project = f"proj-{t:03d}-{rng.randrange(PROJECTS)}"
        service = SERVICES[rng.randrange(3)]
        session = f"s-{i:x}"
        m = pick(model_w, rng.random() * model_w[-1])
        length = min(1 + int(rng.expovariate(1 / 9)), end - i)
        for _ in range(length):
            if rng.random() < 0.2:  # a fifth of a session's calls go to another model
                m = pick(model_w, rng.random() * model_w[-1])
            provider, model, operation, _ = MODELS[m]
            s = pick(shape_w, rng.random() * shape_w[-1])
            tokens, money, status = priced[m][2 * s + (rng.random() < 0.3)]
            latency_ms = 120 + tokens.output * (4 + 8 * rng.random()) + tokens.input * 0.01 * rng.random()
            start_ns = (base + rng.randrange(60)) * 10**9 + rng.randrange(10**9)
            error = ("rate_limited" if rng.random() < 0.5 else "timeout") if rng.random() < 0.02 else ""
            out.append(
                CallRecord(
                    trace_id=f"{i:032x}",
                    span_id=f"{i + 1:016x}",
                    parent_span_id="",
                    start_ns=start_ns,
                    end_ns=start_ns + int(latency_ms * 1e6),
                    service=service,
                    tenant=tenant,
                    workflow=workflow,
                    user=user,
                    session=session,
                    provider=provider,
                    model=model,
                    operation=operation,
                    source="bench",
                    tokens=tokens,
                    tokens_estimated=False,
                    cost_status=status,
                    unpriced_reason="" if money[0] is not None else "unknown model",
                    cost_total=money[0],
                    cost_input=money[1],
                    cost_output=money[2],
                    cost_cache_read=money[3],
                    cost_cache_write=money[4],
                    cost_other=money[5],
                    pricing_version=version,
                    error_type=error,
                    project=project,
                )
            )
            i += 1
    return out


def generate(n: int, tenants: int, days: int, now: int | None = None) -> Iterator[list[CallRecord]]:
    """The workload in batches of :data:`BATCH` records."""
    at = int(time.time()) if now is None else now
    for start in range(0, n, BATCH):
        yield generate_chunk(start, min(BATCH, n - start), tenants, days, at)


def _prepared_chunk(start: int, count: int, tenants: int, days: int, now: int) -> PreparedBatch:
    return prepare(generate_chunk(start, count, tenants, days, now), keep_records=False)


def load(data_dir: Path, calls: int, tenants: int, days: int, workers: int = 1) -> None:
    """Append ``calls`` records through ``Store.submit``; generation and preparing run in ``workers`` processes."""
    import multiprocessing

    settings = Settings(data_dir=data_dir, port=0, snapshot_interval_seconds=600)
    store = Store(settings.store_config())
    # the usage index follows the store as in ``costspan serve`` (folding each batch's call sums) and
    # is saved at the end, so the server starts from its snapshot instead of replaying the ledger
    index = UsageIndex(store.ledger.directory)
    store.add_sums_listener(index.on_committed)
    store.start()
    now = int(time.time())
    t0 = time.perf_counter()
    done = 0
    try:
        with ProcessPoolExecutor(max(workers, 1), mp_context=multiprocessing.get_context("spawn")) as pool:
            pending: deque[Future[PreparedBatch]] = deque()
            starts = iter(range(0, calls, BATCH))
            for start in starts:
                pending.append(pool.submit(_prepared_chunk, start, min(BATCH, calls - start), tenants, days, now))
                if len(pending) >= 2 * max(workers, 1) + 1:
                    break
            while pending:
                batch = pending.popleft().result()
                nxt = next(starts, None)
                if nxt is not None:
                    pending.append(pool.submit(_prepared_chunk, nxt, min(BATCH, calls - nxt), tenants, days, now))
                store.submit(batch).result(600)
                done += len(batch)
                if done % 1_000_000 < len(batch):
                    print(f"  {done:,} loaded after {time.perf_counter() - t0:.0f} s", flush=True)
    finally:
        store.close()
        IndexSnapshots(data_dir / "usage-index").save(index)
    took = time.perf_counter() - t0
    print(
        f"loaded {done:,} calls through the store's write path in {took:.1f} s ({done / took:,.0f} calls/s); "
        f"ledger {sum(p.stat().st_size for p in (data_dir / 'ledger').glob('*.log')) / 1e9:.2f} GB"
    )
