"""Usage API benchmark: every read route's latency with N calls in the store, and export rows/s.

    .venv/bin/python -m tests.benchmarks.bench_api [--calls 10000000] [--tenants 20] [--days 30]
        [--requests 200] [--data-dir DIR] [--keep] [--index-only]

1. Loads ``--calls`` generated call records (unique ids, 8 models, ``--tenants`` tenants, spread
   over ``--days`` UTC days, 100 workflows, 200 users and a session per 50 calls per tenant)
   through the store's own write path (``Store.ingest``, batches of 20,000, fsync per batch).
2. Starts the real app (``create_app`` + ``include_usage_api``) on 127.0.0.1: the store loads its
   snapshot, the usage index replays the ledger (timed).
3. Sends ``--requests`` sequential requests per route over one keep-alive connection with a tenant
   key (admin for the global ones) and reports p50 / p99 / max in ms, client side.
4. Streams a tenant's CSV export and an unfiltered JSON export of one day and reports rows/s.

``--index-only`` skips the store: the records go straight into a ``UsageIndex`` (``add_many``) and
the routes are timed in-process (TestClient) — the query side at sizes the write path cannot load
in the time at hand. Records are timed at three minutes of every hour so the store's per-minute rollups stay bounded.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from costspan.pricing import Pricer, Usage, default_pricer
from costspan.processor.api import KeyStore, UsageIndex, include_usage_api
from costspan.processor.app import create_app
from costspan.processor.records import CallRecord, TokenCounts
from costspan.processor.settings import Settings
from costspan.processor.store import Store
from costspan.processor.testing import ServerThread

MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4.1-mini"),
    ("anthropic", "claude-sonnet-4-5"),
    ("anthropic", "claude-haiku-4-5"),
    ("google", "gemini-2.5-flash"),
    ("google", "gemini-2.5-pro"),
    ("openai", "no-such-model"),  # unpriced
]
SHAPES = [(200, 50), (1500, 300), (4000, 800), (12000, 1500)]
DAY = 86400


def _priced(pricer: Pricer) -> list[tuple[str, str, TokenCounts, tuple[Any, ...], str]]:
    out = []
    for provider, model in MODELS:
        for i, (inp, outp) in enumerate(SHAPES):
            cache = inp // 4 if i % 2 else 0
            b = pricer.price_call(
                model, Usage(input_tokens=inp, output_tokens=outp, cache_read_tokens=cache), provider=provider
            )
            ok = b.total is not None and b.status == "priced"
            money = (b.total, b.input, b.output, b.cache_read, b.cache_write, b.other) if ok else (None,) * 6
            out.append((provider, model, TokenCounts(inp, outp, cache), money, "priced" if ok else "unpriced"))
    return out


def generate(n: int, tenants: int, days: int, pricer: Pricer, batch: int = 20_000) -> Iterator[list[CallRecord]]:
    shapes = _priced(pricer)
    now = int(time.time())
    today = now - now % DAY
    version = pricer.catalog.version
    records: list[CallRecord] = []
    for i in range(n):
        t = i % tenants
        day = today - (i // tenants) % days * DAY
        hour = (i // (tenants * days)) % 24
        if day == today:
            hour = min(hour, max(0, (now - today) // 3600 - 1))
        start_ns = (day + hour * 3600 + (i % 3) * 60 + 7) * 10**9
        provider, model, tokens, money, status = shapes[(i * 7 + t) % len(shapes)]
        latency_ns = (150 + (i * 7919) % 4000) * 10**6
        records.append(
            CallRecord(
                f"{i:032x}",
                f"{i + 1:016x}",
                "",
                start_ns,
                start_ns + latency_ns,
                "svc",
                f"tenant-{t:03d}",
                f"wf-{i % 100}",
                f"user-{i % 200}",
                f"s-{i // (tenants * days) // 50}",
                provider,
                model,
                "chat",
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
                "error" if i % 50 == 0 else "",
            )
        )
        if len(records) >= batch:
            yield records
            records = []
    if records:
        yield records


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
    ("tenant", "/api/v2/costs", {"period_days": 30, "workflow_id": "wf-1"}),
    ("tenant", "/api/v2/costs/estimate", {"complexity": "complex"}),
    ("tenant", "/api/v2/metrics", {}),
    ("tenant", "/api/usage/metrics/realtime", {}),
    ("tenant", "/api/usage/metrics/aggregates", {"days": 30, "interval": "day"}),
    ("tenant", "/api/usage/metrics/aggregates", {"days": 7, "interval": "hour"}),
    ("admin", "/api/usage/metrics/aggregates", {"days": 30, "interval": "month"}),
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
    ("tenant", "/api/executions/wf-1/costs", {}),
    ("tenant", "/api/analytics/top-users", {"days": 30}),
    ("tenant", "/api/analytics/providers", {"days": 30, "currency": "EUR"}),
    ("tenant", "/api/analytics/token-efficiency", {"days": 30}),
    ("tenant", "/api/analytics/sessions", {"days": 7}),
]


def _timed_app(app: FastAPI) -> list[float]:
    """Record each request's time inside the app (server side), to tell it from client overhead."""
    server_times: list[float] = []

    @app.middleware("http")
    async def timed(request: Any, call_next: Any) -> Any:
        t = time.perf_counter()
        response = await call_next(request)
        server_times.append(time.perf_counter() - t)
        return response

    return server_times


def time_routes(client: Any, keys: dict[str, str], requests: int, server_times: list[float]) -> None:
    print(f"load average before the queries: {os.getloadavg()} on {os.cpu_count()} CPUs")
    print(f"\n{'route':<72}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'server p50':>12}{'server p99':>12}")
    worst = worst_server = 0.0
    for who, path, params in ROUTES:
        headers = {"X-API-Key": keys[who]}
        for _ in range(5):
            client.get(path, params=params, headers=headers).raise_for_status()
        times = []
        server_times.clear()
        for _ in range(requests):
            t = time.perf_counter()
            client.get(path, params=params, headers=headers).raise_for_status()
            times.append(time.perf_counter() - t)
        p50, p99, top = _ms(times)
        s50, s99, _ = _ms(server_times)
        worst = max(worst, p99)
        worst_server = max(worst_server, s99)
        label = path + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "") + f" [{who}]"
        print(f"{label:<72}{p50:>9.2f}{p99:>9.2f}{top:>9.2f}{s50:>12.2f}{s99:>12.2f}")
    print(
        f"worst p99: {worst:.2f} ms client side, {worst_server:.2f} ms server side, over {len(ROUTES)} "
        f"route variants x {requests} requests; load average after: {os.getloadavg()}"
    )


def _api_keys(keystore: KeyStore) -> dict[str, str]:
    return {"admin": keystore.create("admin")[1], "tenant": keystore.create("tenant", "tenant-001")[1]}


def run(calls: int, tenants: int, days: int, requests: int, data_dir: Path) -> None:
    pricer = default_pricer()
    settings = Settings(data_dir=data_dir, port=0, snapshot_interval_seconds=3600)
    store = Store(settings.store_config())
    store.start()
    t0 = time.perf_counter()
    done = 0
    for batch in generate(calls, tenants, days, pricer):
        store.ingest(batch, timeout=600)
        done += len(batch)
        if done % 1_000_000 < len(batch):
            print(f"  {done:,} loaded after {time.perf_counter() - t0:.0f} s", flush=True)
    store.close()
    load_s = time.perf_counter() - t0
    print(f"loaded {calls:,} calls through Store.ingest in {load_s:.1f} s ({calls / load_s:,.0f} calls/s)")

    keystore = KeyStore(data_dir)
    keys = _api_keys(keystore)
    store = Store(settings.store_config())
    app = create_app(settings, store, pricer=pricer, registry=CollectorRegistry(auto_describe=False))
    index = include_usage_api(app, store, settings, keys=keystore, pricer=pricer)
    server_times = _timed_app(app)
    t0 = time.perf_counter()
    with ServerThread(app, timeout=7200) as server:
        start_s = time.perf_counter() - t0
        rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
        print(f"server ready in {start_s:.1f} s (index replayed {index.records:,} records); max RSS {rss_gb:.2f} GB")
        assert index.records == calls, index.records
        today = datetime.now(UTC).date()
        with httpx.Client(base_url=server.url, timeout=60) as client:
            time_routes(client, keys, requests, server_times)
            day = (today - timedelta(days=1)).isoformat()
            for who, params in [
                (
                    "tenant",
                    {"format": "csv", "from": (today - timedelta(days=days)).isoformat(), "to": today.isoformat()},
                ),
                ("admin", {"format": "json", "from": day, "to": day}),
            ]:
                t = time.perf_counter()
                rows = 0
                size = 0
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
                    f"({rows / took:,.0f} rows/s; the whole ledger of {calls:,} lines is scanned)"
                )


def run_index_only(calls: int, tenants: int, days: int, requests: int, data_dir: Path) -> None:
    """The index alone at ``calls`` calls (fed with ``add_many``, no ledger), queried in-process.

    Measures the query side at a size the write path cannot load in the time at hand: index
    build rate and memory, and each route through the full ASGI stack (Starlette's TestClient).
    """
    from fastapi.testclient import TestClient

    pricer = default_pricer()
    settings = Settings(data_dir=data_dir, port=0)
    keystore = KeyStore(data_dir)
    keys = _api_keys(keystore)
    store = Store(settings.store_config())
    app = create_app(settings, store, pricer=pricer, registry=CollectorRegistry(auto_describe=False))
    include_usage_api(app, store, settings, keys=keystore, pricer=pricer)
    index = UsageIndex()
    t0 = time.perf_counter()
    for batch in generate(calls, tenants, days, pricer):
        index.add_many(batch)
        if index.records % 1_000_000 < len(batch):
            print(f"  {index.records:,} indexed after {time.perf_counter() - t0:.0f} s", flush=True)
    took = time.perf_counter() - t0
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    print(f"generated and indexed {calls:,} calls in {took:.1f} s ({calls / took:,.0f}/s); max RSS {rss_gb:.2f} GB")
    app.state.usage_index = index
    server_times = _timed_app(app)
    with TestClient(app) as client:
        app.state.usage_index = index  # the lifespan ran; keep the filled index
        time_routes(client, keys, requests, server_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=10_000_000)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the data dir")
    parser.add_argument("--index-only", action="store_true", help="skip the store: fill the index directly")
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="costspan-bench-api-"))
    try:
        (run_index_only if args.index_only else run)(args.calls, args.tenants, args.days, args.requests, data_dir)
    finally:
        if not args.keep and args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
