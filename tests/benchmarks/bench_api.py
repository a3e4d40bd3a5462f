"""Usage API benchmark: every read route's latency with N calls in the store, over HTTP, and export rows/s.

    .venv/bin/python -m tests.benchmarks.bench_api [--calls 10000000] [--tenants 20] [--days 30]
        [--requests 200] [--warmup 20] [--data-dir DIR] [--keep] [--skip-load] [--load-only]
        [--queries-only] [--full-replay]

1. **Load** ``--calls`` generated call records through the store's own write path: a worker process
   generates realistic records and prepares them (``batch.prepare``: ledger lines, rollup groups,
   call sums), the bench process submits each batch of 20,000 to ``Store.submit`` (dedupe, append,
   fsync, rollups) with the usage index following it as in the server, and saves the index's
   snapshot. The workload (:mod:`tests.benchmarks.api_workload`): ``--tenants`` tenants of Zipf-like
   sizes, per tenant 300 users, 40 workflows, 6 projects and 3 services; sessions of ~10 calls by
   one user; 9 models (one unpriced, one embeddings model); token shapes from 200 to 20,000 input
   tokens, latency growing with the output, 2 % errors; spread over ``--days`` UTC days with more
   calls on recent days and working hours (at three minutes of each hour, so the store's per-minute
   rollups stay bounded).
2. **Serve**: starts the real server (``python -m costspan.processor.serve``: uvicorn, the whole
   ``build_server_app``) in its own process on the data dir; times its start (the store's start, the
   usage index's snapshot + ledger tail, or a full replay when there is no snapshot).
3. **Query**: per route, ``--warmup`` untimed then ``--requests`` timed sequential requests over one
   keep-alive connection from this process (a raw-socket client,
   :mod:`tests.benchmarks.bench_api_client`: the figure is the server's latency plus loopback, not
   an HTTP library's overhead), with a tenant key (admin for the global ones); p50 / p99 / max in
   ms, client side, and the server's CPU ms per request. Reports the server's RSS.
4. **Export**: streams a tenant's CSV export and an unfiltered JSON export of one day; rows/s.
5. **Restart**: stops the server (SIGTERM: the index writes its snapshot), starts it again, times
   the start and checks that the answers are the same as before.

``--skip-load`` reuses the ledger in ``--data-dir``; ``--load-only`` stops after step 1;
``--queries-only`` stops after step 3; ``--full-replay`` also times a start without the usage
index's snapshot.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import httpx

from costspan.processor.api import KeyStore
from tests.benchmarks.api_live import LiveIngest
from tests.benchmarks.api_workload import generate, generate_chunk, load
from tests.benchmarks.bench_api_client import LeanClient, time_routes

__all__ = ["ROUTES", "generate", "generate_chunk", "load", "main", "run"]


# --- the server, in its own process ---------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """``python -m costspan.processor.serve`` on the data dir; log lines go to ``<data>/server.log``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log: IO[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 7200, *, ingest_workers: int = 0) -> float:
        """Start and wait until the server answers; returns the seconds it took."""
        self.log = (self.data_dir / "server.log").open("ab")
        args = ["--data-dir", str(self.data_dir), "--port", str(self.port), "--log-level", "info"]
        args += ["--snapshot-interval-seconds", "600", "--ingest-workers", str(ingest_workers)]
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "costspan.processor.serve", *args], stdout=self.log, stderr=self.log
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

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def client(self) -> LeanClient:
        return LeanClient("127.0.0.1", self.port)

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
_VOLATILE = {"last_updated", "generated_at", "timestamp", "cached_at", "end_date"}


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def answers(client: LeanClient, keys: dict[str, str]) -> list[Any]:
    """Every route's answer (clock fields left out), to compare two servers."""
    return [_stable(json.loads(client.get(path, params, {"X-API-Key": keys[who]}))) for who, path, params in ROUTES]


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
    warmup: int = 20,
    ingest_rate: float = 0,
) -> None:
    if not skip_load:
        load(data_dir, calls, tenants, days, workers)
    if load_only:
        return
    keystore = KeyStore(data_dir)
    keys = {"admin": keystore.create("admin")[1], "tenant": keystore.create("tenant", "tenant-001")[1]}
    keys["ingest"] = keystore.create("ingest")[1]
    server = ServerProcess(data_dir)
    took = server.start(ingest_workers=2 if ingest_rate else 0)
    print(f"server ready in {took:.1f} s ({_index_line(data_dir)})")
    try:
        rss, peak = server.memory_gb()
        print(f"server RSS {rss:.2f} GB (peak {peak:.2f} GB)")
        with server.client() as lean:
            live = LiveIngest(server.url, keys["ingest"], ingest_rate) if ingest_rate else None
            if live is not None:
                print(f"live OTLP ingest at {ingest_rate:,.0f} spans/s (2 ingest workers) while the routes are timed")
                live.start()
            try:
                time_routes(lean, ROUTES, keys, requests, warmup=warmup, server_pid=server.pid)
            finally:
                if live is not None:
                    print(live.stop())
            rss, peak = server.memory_gb()
            print(f"server RSS after the queries {rss:.2f} GB (peak {peak:.2f} GB)")
            if queries_only:
                return
            before = answers(lean, keys)
        with httpx.Client(base_url=server.url, timeout=600) as client:
            time_exports(client, keys, days)
        print(f"server stopped in {server.stop():.1f} s (SIGTERM; snapshots written)")
        took = server.start()
        print(f"restart: server ready in {took:.1f} s ({_index_line(data_dir)})")
        with server.client() as lean:
            after = answers(lean, keys)
        same = sum(a == b for a, b in zip(before, after, strict=True))
        print(f"restart: {same}/{len(ROUTES)} answers the same as before the restart")
        if full_replay:
            server.stop()
            shutil.rmtree(data_dir / "usage-index", ignore_errors=True)
            took = server.start()
            print(f"full replay (no index snapshot): server ready in {took:.1f} s ({_index_line(data_dir)})")
            with server.client() as lean:
                replayed = answers(lean, keys)
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
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests per route before the timed ones")
    parser.add_argument("--workers", type=int, default=1, help="processes that generate and prepare batches")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the data dir")
    parser.add_argument("--skip-load", action="store_true", help="reuse the ledger in --data-dir")
    parser.add_argument("--load-only", action="store_true", help="stop after loading")
    parser.add_argument("--full-replay", action="store_true", help="also time a start without the index snapshot")
    parser.add_argument("--queries-only", action="store_true", help="no exports and no restart")
    parser.add_argument(
        "--ingest-rate", type=float, default=0, help="OTLP spans/s sent to the server while the routes are timed"
    )
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
            warmup=args.warmup,
            ingest_rate=args.ingest_rate,
        )
    finally:
        if not args.keep and args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
