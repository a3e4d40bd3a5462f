"""Usage API benchmark: every read route's latency with N calls in the store, over HTTP, and export rows/s.

    .venv/bin/python -m tests.benchmarks.bench_api [--calls 10000000] [--tenants 20] [--days 30]
        [--requests 200] [--data-dir DIR] [--keep] [--skip-load] [--load-only] [--full-replay]

1. **Load** ``--calls`` generated call records through the store's own write path: a worker process
   generates realistic records and prepares them (``batch.prepare``: ledger lines, rollup groups,
   call sums), the bench process submits each batch of 20,000 to ``Store.submit`` (dedupe, append,
   fsync, rollups) with the usage index following it as in the server, and saves the index's
   snapshot. The workload: ``--tenants`` tenants of Zipf-like sizes, per tenant 300 users, 40
   workflows, 6 projects and 3 services; sessions of ~10 calls by one user; 9 models (one unpriced,
   one embeddings model); token shapes from 200 to 20,000 input tokens, latency growing with the
   output, 2 % errors; spread over ``--days`` UTC days with more calls on recent days and working
   hours (at three minutes of each hour, so the store's per-minute rollups stay bounded).
2. **Serve**: starts the real server (``python -m costspan.processor.serve_cli``: uvicorn, the whole
   ``build_server_app``) in its own process on the data dir; times its start (the store's start, the
   usage index's snapshot + ledger tail, or a full replay when there is no snapshot).
3. **Query**: ``--requests`` sequential requests per route over one keep-alive connection from this
   process, with a tenant key (admin for the global ones); p50 / p99 / max in ms, client side.
   Reports the server's RSS.
4. **Export**: streams a tenant's CSV export and an unfiltered JSON export of one day; rows/s.
5. **Restart**: stops the server (SIGTERM: the index writes its snapshot), starts it again, times
   the start and checks that the answers are the same as before.

``--skip-load`` reuses the ledger in ``--data-dir``; ``--load-only`` stops after step 1;
``--queries-only`` stops after step 3; ``--full-replay`` also times a start without the usage
index's snapshot.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from pathlib import Path
from typing import IO, Any

import httpx

from costspan.pricing import Usage, default_pricer
from costspan.processor.api import KeyStore, UsageIndex
from costspan.processor.api.index_snapshot import IndexSnapshots
from costspan.processor.batch import PreparedBatch, prepare
from costspan.processor.records import CallRecord, TokenCounts
from costspan.processor.settings import Settings
from costspan.processor.store import Store

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
                    f"{i:032x}",
                    f"{i + 1:016x}",
                    "",
                    start_ns,
                    start_ns + int(latency_ms * 1e6),
                    service,
                    tenant,
                    workflow,
                    user,
                    session,
                    provider,
                    model,
                    operation,
                    "bench",
                    tokens,
                    False,
                    status,
                    "" if money[0] is not None else "unknown model",
                    money[0],
                    money[1],
                    money[2],
                    money[3],
                    money[4],
                    money[5],
                    version,
                    error,
                    None,
                    project,
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


# --- the server, in its own process ---------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """``python -m costspan.processor.serve_cli`` on the data dir; log lines go to ``<data>/server.log``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log: IO[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 7200) -> float:
        """Start and wait until the server answers; returns the seconds it took."""
        self.log = (self.data_dir / "server.log").open("ab")
        args = ["--data-dir", str(self.data_dir), "--port", str(self.port), "--log-level", "info"]
        args += ["--snapshot-interval-seconds", "600"]
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "costspan.processor.serve_cli", *args], stdout=self.log, stderr=self.log
        )
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}; see {self.data_dir / 'server.log'}")
            try:
                if httpx.get(self.url + "/readyz", timeout=5).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.TransportError:
                pass
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError("the server did not start")
            time.sleep(0.05)

    def memory_gb(self) -> tuple[float, float]:
        """(RSS, peak RSS) of the server in GB."""
        assert self.proc is not None
        values = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024 / 1024
        return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)

    def stop(self, timeout: float = 600) -> float:
        """SIGTERM (a graceful stop: snapshots are written); returns the seconds it took."""
        t0 = time.perf_counter()
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout)
            self.proc = None
        if self.log is not None:
            self.log.close()
            self.log = None
        return time.perf_counter() - t0


# --- the queries -------------------------------------------------------------------------------------
def _ms(values: list[float]) -> tuple[float, float, float]:
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
    return statistics.median(values) * 1000, p99 * 1000, values[-1] * 1000


#: (key, path, query) of every timed request; "tenant" uses a tenant-001 key, "admin" an admin key.
ROUTES: list[tuple[str, str, dict[str, Any]]] = [
    ("tenant", "/v1/usage", {"scope": "tenant", "period": "daily"}),
    ("tenant", "/v1/usage", {"scope": "tenant", "period": "monthly"}),
    ("tenant", "/v1/usage", {"scope": "summary"}),
    ("admin", "/v1/usage", {"scope": "global"}),
    ("tenant", "/api/v2/costs", {"period_days": 30}),
    ("tenant", "/api/v2/costs", {"period_days": 30, "workflow_id": "wf-001-1"}),
    ("tenant", "/api/v2/costs/estimate", {"complexity": "complex"}),
    ("tenant", "/api/v2/metrics", {}),
    ("tenant", "/api/usage/metrics/realtime", {}),
    ("tenant", "/api/usage/metrics/aggregates", {"days": 30, "interval": "day"}),
    ("tenant", "/api/usage/metrics/aggregates", {"days": 7, "interval": "hour"}),
    ("admin", "/api/usage/metrics/aggregates", {"days": 30, "interval": "month"}),
    ("tenant", "/api/usage/metrics/aggregates", {"days": 30, "project": "proj-001-1"}),
    ("tenant", "/api/usage/costs/by-provider", {"days": 30}),
    ("admin", "/api/usage/costs/by-provider", {"days": 30}),
    ("tenant", "/api/usage/performance/latency", {"days": 30}),
    ("tenant", "/api/usage/operations/top", {"days": 30}),
    ("tenant", "/api/usage/costs/trend", {"days": 30}),
    ("tenant", "/api/usage/errors/by-provider", {"days": 30}),
    ("tenant", "/api/workspaces/tenant-001/costs", {"period": "month"}),
    ("tenant", "/api/workspaces/tenant-001/cost-forecast", {}),
    ("tenant", "/api/workspaces/tenant-001/cost-optimization", {}),
    ("tenant", "/api/workspaces/tenant-001/cost-stats", {}),
    ("tenant", "/api/executions/wf-001-1/costs", {}),
    ("tenant", "/api/analytics/top-users", {"days": 30}),
    ("tenant", "/api/analytics/providers", {"days": 30, "currency": "EUR"}),
    ("tenant", "/api/analytics/token-efficiency", {"days": 30}),
    ("tenant", "/api/analytics/sessions", {"days": 7}),
    ("admin", "/api/analytics/top-users", {"days": 30}),
    ("tenant", "/api/dashboard/summary", {"days": 14}),
]
#: Keys whose values change from one answer to the next (clocks), left out when answers are compared.
_VOLATILE = {"last_updated", "generated_at", "timestamp"}


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def answers(client: httpx.Client, keys: dict[str, str]) -> list[Any]:
    """Every route's answer (clock fields left out), to compare two servers."""
    return [
        _stable(client.get(path, params=params, headers={"X-API-Key": keys[who]}).json())
        for who, path, params in ROUTES
    ]


def time_routes(client: httpx.Client, keys: dict[str, str], requests: int) -> float:
    """Print p50 / p99 / max per route; returns the worst p99 in ms."""
    print(f"load average before the queries: {os.getloadavg()} on {os.cpu_count()} CPUs")
    print(f"\n{'route':<76}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    worst = 0.0
    over = []
    for who, path, params in ROUTES:
        headers = {"X-API-Key": keys[who]}
        for _ in range(5):
            client.get(path, params=params, headers=headers).raise_for_status()
        times = []
        for _ in range(requests):
            t = time.perf_counter()
            client.get(path, params=params, headers=headers).raise_for_status()
            times.append(time.perf_counter() - t)
        p50, p99, top = _ms(times)
        worst = max(worst, p99)
        label = path + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "") + f" [{who}]"
        if p99 > 10:
            over.append(label)
        print(f"{label:<76}{p50:>9.2f}{p99:>9.2f}{top:>9.2f}")
    print(
        f"worst p99: {worst:.2f} ms over {len(ROUTES)} route variants x {requests} requests; "
        f"{len(ROUTES) - len(over)}/{len(ROUTES)} at or under 10 ms; load average after: {os.getloadavg()}"
    )
    for label in over:
        print(f"  over 10 ms: {label}")
    return worst


def time_exports(client: httpx.Client, keys: dict[str, str], days: int) -> None:
    today = datetime.now(UTC).date()
    day = (today - timedelta(days=1)).isoformat()
    for who, params in [
        ("tenant", {"format": "csv", "from": (today - timedelta(days=days)).isoformat(), "to": today.isoformat()}),
        ("admin", {"format": "json", "from": day, "to": day}),
    ]:
        t = time.perf_counter()
        rows = size = 0
        with client.stream("GET", "/api/usage/export", params=params, headers={"X-API-Key": keys[who]}) as r:
            r.raise_for_status()
            mark = b"\n" if params["format"] == "csv" else b'{"id"'
            tail = b""
            for chunk in r.iter_bytes():
                size += len(chunk)
                rows += (tail + chunk).count(mark)  # a mark split across chunks counts once
                tail = chunk[-(len(mark) - 1) :] if len(mark) > 1 else b""
        took = time.perf_counter() - t
        if params["format"] == "csv":
            rows -= 1  # header
        print(
            f"export {params['format']} [{who}]: {rows:,} rows, {size / 1e6:.1f} MB in {took:.1f} s "
            f"({rows / took:,.0f} rows/s; the ledger is scanned)"
        )


def _index_line(data_dir: Path) -> str:
    """The last line the usage index logged at start (what it loaded and replayed)."""
    found = ""
    log = data_dir / "server.log"
    if log.exists():
        for line in log.read_text(errors="replace").splitlines():
            if "usage index ready" in line:
                found = line.split("usage index ready", 1)[1].strip(" :")
    return found


def run(
    calls: int,
    tenants: int,
    days: int,
    requests: int,
    data_dir: Path,
    *,
    skip_load: bool = False,
    load_only: bool = False,
    full_replay: bool = False,
    workers: int = 1,
    queries_only: bool = False,
) -> None:
    if not skip_load:
        load(data_dir, calls, tenants, days, workers)
    if load_only:
        return
    keystore = KeyStore(data_dir)
    keys = {"admin": keystore.create("admin")[1], "tenant": keystore.create("tenant", "tenant-001")[1]}
    server = ServerProcess(data_dir)
    took = server.start()
    print(f"server ready in {took:.1f} s ({_index_line(data_dir)})")
    try:
        rss, peak = server.memory_gb()
        print(f"server RSS {rss:.2f} GB (peak {peak:.2f} GB)")
        with httpx.Client(base_url=server.url, timeout=600) as client:
            time_routes(client, keys, requests)
            rss, peak = server.memory_gb()
            print(f"server RSS after the queries {rss:.2f} GB (peak {peak:.2f} GB)")
            if queries_only:
                return
            time_exports(client, keys, days)
            before = answers(client, keys)
        print(f"server stopped in {server.stop():.1f} s (SIGTERM; snapshots written)")
        took = server.start()
        print(f"restart: server ready in {took:.1f} s ({_index_line(data_dir)})")
        with httpx.Client(base_url=server.url, timeout=600) as client:
            after = answers(client, keys)
        same = sum(a == b for a, b in zip(before, after, strict=True))
        print(f"restart: {same}/{len(ROUTES)} answers the same as before the restart")
        if full_replay:
            server.stop()
            shutil.rmtree(data_dir / "usage-index", ignore_errors=True)
            took = server.start()
            print(f"full replay (no index snapshot): server ready in {took:.1f} s ({_index_line(data_dir)})")
            with httpx.Client(base_url=server.url, timeout=600) as client:
                replayed = answers(client, keys)
            same = sum(a == b for a, b in zip(before, replayed, strict=True))
            print(f"full replay: {same}/{len(ROUTES)} answers the same as from the snapshot")
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=10_000_000)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1, help="processes that generate and prepare batches")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the data dir")
    parser.add_argument("--skip-load", action="store_true", help="reuse the ledger in --data-dir")
    parser.add_argument("--load-only", action="store_true", help="stop after loading")
    parser.add_argument("--full-replay", action="store_true", help="also time a start without the index snapshot")
    parser.add_argument("--queries-only", action="store_true", help="no exports and no restart")
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="costspan-bench-api-"))
    try:
        run(
            args.calls,
            args.tenants,
            args.days,
            args.requests,
            data_dir,
            skip_load=args.skip_load,
            load_only=args.load_only,
            full_replay=args.full_replay,
            workers=args.workers,
            queries_only=args.queries_only,
        )
    finally:
        if not args.keep and args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
