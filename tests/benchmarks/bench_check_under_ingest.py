"""Budget-check latency of `costspan serve` while large OTLP exports arrive.

    .venv/bin/python -m tests.benchmarks.bench_check_under_ingest [--seconds 10] [--body-mb 15]
        [--workers N] [--tree /path/to/a/costspan/checkout] [--senders 1]

Starts the real server (``python -m costspan.processor.serve``, the code of ``--tree``, this
checkout by default) on a temp data dir with an admin key and one budget, then measures
``POST /v1/budgets/check`` round trips from one client, one after the other: first with the server
idle, then while ``--senders`` other processes post ``--body-mb`` MB OTLP protobuf exports to
``/v1/traces`` back to back. Reports p50/p99/max of both phases and how many exports were stored.
Run it against an older checkout (``--tree``) to compare before and after; ``--workers`` sets
``--ingest-workers`` (omitted: the server's default).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.benchmarks.bench_ingest import free_port, template

ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = "bench-admin-key-0123456789"
CHECK = {"tenant": "acme", "provider": "openai", "model": "gpt-4o", "max_tokens": 100, "input_tokens": 500}


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    checks: int
    p50_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True, slots=True)
class Result:
    idle: Phase
    under_ingest: Phase
    exports: int
    body_bytes: int


def export_body(megabytes: float, first_id: int) -> bytes:
    """An OTLP protobuf export of about ``megabytes`` MB of GenAI spans, ids from ``first_id``."""
    per_span = len(template(64).SerializeToString()) / 64
    request = template(max(1, int(megabytes * 1_000_000 / per_span)))
    for n, span in enumerate(request.resource_spans[0].scope_spans[0].spans, start=first_id):
        span.trace_id = n.to_bytes(16, "big")
        span.span_id = n.to_bytes(8, "big")
    return request.SerializeToString()


def _send_exports(url: str, megabytes: float, offset: int, stop: Any, done: Any) -> None:
    """A sender process: post exports with fresh span ids until ``stop`` is set."""
    headers = {"Content-Type": "application/x-protobuf", "X-API-Key": ADMIN_KEY}
    bodies = [export_body(megabytes, offset + i * 10_000_000) for i in range(3)]
    with httpx.Client(timeout=120, headers=headers) as client:
        n = 0
        while not stop.is_set():
            response = client.post(url + "/v1/traces", content=bodies[n % len(bodies)])
            if response.status_code == 200:
                with done.get_lock():
                    done.value += 1
            n += 1


def _phase(name: str, client: httpx.Client, seconds: float) -> Phase:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        response = client.post("/v1/budgets/check", json=CHECK)
        latencies.append((time.perf_counter() - t0) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"budget check answered {response.status_code}: {response.text}")
        reservation = response.json().get("reservation_id")
        if reservation:  # keep the book small: the check is what is measured
            client.post(f"/v1/budgets/reservations/{reservation}/release")
    latencies.sort()
    return Phase(
        name,
        len(latencies),
        latencies[len(latencies) // 2],
        latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        latencies[-1],
    )


def _start(tree: Path, data_dir: Path, port: int, workers: int | None) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(tree / p) for p in ("pricing", "instrumentation", "processor")),
        "COSTSPAN_ADMIN_KEY": ADMIN_KEY,
    }
    argv = [sys.executable, "-m", "costspan.processor.serve", "--port", str(port), "--data-dir", str(data_dir)]
    argv += ["--log-level", "warning", "--max-body-bytes", str(64 * 1024 * 1024)]
    if workers is not None:
        argv += ["--ingest-workers", str(workers)]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the server did not become ready")


def run(
    *, seconds: float = 10.0, body_mb: float = 15.0, senders: int = 1, workers: int | None = None, tree: Path = ROOT
) -> Result:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="costspan-bench-") as tmp:
        server = _start(tree, Path(tmp) / "data", port, workers)
        try:
            with httpx.Client(base_url=url, headers={"X-API-Key": ADMIN_KEY}, timeout=60) as client:
                budget = {"id": "acme-day", "scope": {"tenant": "acme"}, "period": "day", "limit": "1000000"}
                created = client.post("/v1/budgets", json=budget)
                if created.status_code != 201:
                    raise RuntimeError(f"creating the budget answered {created.status_code}: {created.text}")
                idle = _phase("idle", client, min(seconds, 3.0))
                ctx = multiprocessing.get_context("spawn")
                stop, done = ctx.Event(), ctx.Value("i", 0)
                procs = [
                    ctx.Process(target=_send_exports, args=(url, body_mb, 1 + i * 10**11, stop, done))
                    for i in range(senders)
                ]
                for p in procs:
                    p.start()
                # the first export is on its way once a sender built its bodies: wait for the first ack
                deadline = time.monotonic() + 120
                while done.value == 0 and time.monotonic() < deadline:
                    time.sleep(0.05)
                busy = _phase("under ingest", client, seconds)
                stop.set()
                for p in procs:
                    p.join(180)
                exports = int(done.value)
        finally:
            server.terminate()
            server.wait(60)
    return Result(idle, busy, exports, len(export_body(body_mb, 1)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the measured phase under ingest")
    parser.add_argument("--body-mb", type=float, default=15.0, help="size of one OTLP export (MB)")
    parser.add_argument("--senders", type=int, default=1, help="processes posting exports back to back")
    parser.add_argument("--workers", type=int, default=None, help="--ingest-workers of the server")
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout whose server is measured")
    args = parser.parse_args(argv)
    result = run(seconds=args.seconds, body_mb=args.body_mb, senders=args.senders, workers=args.workers, tree=args.tree)
    workers = "default" if args.workers is None else str(args.workers)
    print(f"server: {args.tree} (ingest workers: {workers}); exports of {result.body_bytes / 1e6:.1f} MB")
    print(f"{'phase':<14}{'checks':>8}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for phase in (result.idle, result.under_ingest):
        print(f"{phase.name:<14}{phase.checks:>8}{phase.p50_ms:>10.2f}{phase.p99_ms:>10.2f}{phase.max_ms:>10.2f}")
    print(f"exports stored during the run: {result.exports}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
