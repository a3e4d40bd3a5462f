"""Bounded-state baseline: `costspan serve` fed a realistic call stream over OTLP, measured as it grows.

    .venv/bin/python -m tests.benchmarks.bench_realistic [--calls 200000] [--senders 2] [--requests 100]
        [--live-rate 1000] [--ingest-workers 2] [--order random|time] [--data-dir DIR] [--keep]

Workload (:mod:`tests.benchmarks.realistic_workload`): 50 tenants, 2,000 users, 300 workflows,
20 models over 6 providers, sessions of ~10 calls (N/10 distinct session ids), call start times
uniform over the last 30 days at any minute (not bunched into a few minutes an hour), a random
128-bit trace id and 64-bit span id per call. Sent as OTLP/HTTP protobuf exports of 512 spans with
an ingest key, by ``--senders`` keep-alive clients, as fast as they are acknowledged.

1. **Serve**: the real server (``python -m costspan.processor.serve``, this checkout's code) in its
   own process on a fresh data dir, with its default settings (fsync always, snapshots every 30 s)
   and ``--ingest-workers``.
2. **Ingest** the calls in ten equal steps; after each step (every 10 %), the server's RSS. Reports
   the base (after one warm-up export), the least-squares slope in MiB per million calls over the
   ten points, the slope of the second half, the peak RSS and the ingest rate (calls acknowledged
   per second of sending).
3. **Query**: the usage routes, listed from ``/openapi.json`` (every GET route under ``/v1/usage``
   and ``/api/``, budgets left out), each with an admin key for all tenants and, where the route
   takes a tenant, for one tenant; ``--requests`` timed requests after a warm-up, p50 / p99 / max
   ms client side. The export route is timed for one tenant's last full day, with
   ``--export-requests`` requests. Done twice: quiet, then while ``--live-rate`` calls/s of the same
   stream arrive.
4. **Export**: the whole 30-day CSV export with the admin key, rows/s (and rows == calls stored).
5. **Restart**: SIGTERM, then start the server again on the same data dir: the time until
   ``/readyz`` answers 200, the RSS after the start, and whether ``/v1/usage`` answers the same.

Ends with a one-line JSON summary (``summary:`` prefix).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

import httpx

from costspan.processor.api import KeyStore
from tests.benchmarks.bench_ingest import children, free_port, rss_kib
from tests.benchmarks.realistic_routes import export_csv, global_usage, time_routes, usage_routes
from tests.benchmarks.realistic_workload import SHAPE, Stream, Workload

__all__ = ["main", "run"]

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024


class Server:
    """``python -m costspan.processor.serve`` of this checkout on ``data_dir``; its log in ``server.log``."""

    def __init__(self, data_dir: Path, ingest_workers: int) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ingest_workers = ingest_workers
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, timeout: float = 3600) -> float:
        """Start; the seconds until ``/readyz`` answers 200."""
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("pricing", "instrumentation", "processor")),
        }
        argv = [sys.executable, "-m", "costspan.processor.serve", "--data-dir", str(self.data_dir)]
        argv += ["--port", str(self.port), "--log-level", "info", "--ingest-workers", str(self.ingest_workers)]
        self._log = (self.data_dir / "server.log").open("ab")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log, stderr=self._log)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}; see {self.data_dir / 'server.log'}")
            try:
                if httpx.get(self.url + "/readyz", timeout=5).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.TransportError:
                pass
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError("the server did not become ready")
            time.sleep(0.02)

    def stop(self, timeout: float = 600) -> float:
        """SIGTERM (a graceful stop); the seconds until the process exited."""
        t0 = time.perf_counter()
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return time.perf_counter() - t0

    def rss_mib(self) -> tuple[float, float, float]:
        """(RSS, peak RSS) of the server process and the RSS of its ingest workers, MiB."""
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
        peak = next((int(x.split()[1]) for x in status if x.startswith("VmHWM:")), 0)
        workers = sum(rss_kib(pid) for pid in children(self.proc.pid))
        return rss_kib(self.proc.pid) / MIB, peak / MIB, workers / MIB


class Poster(threading.Thread):
    """Posts the stream's exports over one keep-alive connection until it runs dry or ``stop`` is set;
    ``interval`` > 0 paces the posts (seconds between two)."""

    def __init__(self, url: str, key: str, stream: Stream, stop: threading.Event, interval: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.url, self.stream, self.stop, self.interval = url, stream, stop, interval
        self.headers = {"Content-Type": "application/x-protobuf", "X-API-Key": key}
        self.acked = 0
        self.retries = 0
        self.latencies: list[float] = []
        self.failure = ""

    def run(self) -> None:
        host, port = self.url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=120)
        due = time.perf_counter()
        try:
            while not self.stop.is_set():
                item = self.stream.next_body()
                if item is None:
                    return
                body, calls = item
                if self.interval:
                    due += self.interval
                    time.sleep(max(0.0, due - time.perf_counter()))
                while True:
                    started = time.perf_counter()
                    connection.request("POST", "/v1/traces", body, self.headers)
                    response = connection.getresponse()
                    answer = response.read()
                    if response.status == 200:
                        self.latencies.append(time.perf_counter() - started)
                        self.acked += calls
                        break
                    if response.status not in (429, 503):
                        self.failure = f"POST /v1/traces: {response.status} {answer[:200]!r}"
                        return
                    self.retries += 1
                    time.sleep(float(response.getheader("retry-after", "0.05")))
        except (OSError, http.client.HTTPException) as exc:
            self.failure = f"POST /v1/traces: {type(exc).__name__}: {exc}"
        finally:
            connection.close()


def post_all(url: str, key: str, stream: Stream, senders: int) -> tuple[int, float]:
    """Send what is left of ``stream`` with ``senders`` posters; (calls acknowledged, seconds)."""
    stop = threading.Event()
    posters = [Poster(url, key, stream, stop) for _ in range(senders)]
    t0 = time.perf_counter()
    for p in posters:
        p.start()
    for p in posters:
        p.join()
    took = time.perf_counter() - t0
    failures = [p.failure for p in posters if p.failure]
    if failures:
        raise RuntimeError(failures[0])
    return sum(p.acked for p in posters), took


def _slope(points: list[tuple[int, float]]) -> float:
    """Least-squares MiB per million calls through (calls, MiB) points."""
    if len(points) < 2:
        return 0.0
    xs = [c / 1e6 for c, _ in points]
    ys = [m for _, m in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


# --- the run ---------------------------------------------------------------------------------------
def _table(quiet: dict[str, tuple[float, float, float]], busy: dict[str, tuple[float, float, float]]) -> None:
    print(f"\n  {'route (admin key)':<82}{'quiet p50':>10}{'p99':>8}{'busy p50':>10}{'p99':>8}{'max':>8}")
    for label, (p50, p99, _) in quiet.items():
        b50, b99, bmax = busy[label]
        print(f"  {label[:81]:<82}{p50:>10.2f}{p99:>8.2f}{b50:>10.2f}{b99:>8.2f}{bmax:>8.1f}")


def run(
    calls: int,
    data_dir: Path,
    *,
    senders: int = 2,
    requests: int = 100,
    export_requests: int = 3,
    live_rate: float = 1000.0,
    ingest_workers: int = 2,
    order: str = "random",
) -> dict[str, Any]:
    """The whole benchmark on ``data_dir`` (fresh); prints the report and returns the summary."""
    print(f"costspan realistic-stream benchmark: {calls:,} calls; {SHAPE}; sent in {order} order")
    print(f"  {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start (a shared machine)")
    keys = KeyStore(data_dir)
    admin, ingest = keys.create("admin")[1], keys.create("ingest")[1]
    server = Server(data_dir, ingest_workers)
    first_start = server.start()
    try:
        stream = Stream(Workload(calls, order=order))
        stream.limit = min(stream.workload.batch, calls // 20)  # warm-up: one export, then the base is measured
        sent = post_all(server.url, ingest, stream, 1)[0]
        elapsed = 0.0
        base = server.rss_mib()[0]
        print(f"  server ready in {first_start:.1f} s; RSS {base:.0f} MiB after a warm-up export of {sent} calls")
        print(f"\n  {'calls':>12}{'RSS MiB':>10}{'+MiB':>8}{'workers MiB':>13}{'calls/s':>10}")
        points: list[tuple[int, float]] = []
        for step in range(1, 11):
            stream.limit = calls * step // 10
            acked, took = post_all(server.url, ingest, stream, senders)
            sent, elapsed = sent + acked, elapsed + took
            rss, _, workers = server.rss_mib()
            points.append((sent, rss))
            rate = acked / took if took else 0.0
            print(f"  {sent:>12,}{rss:>10.0f}{rss - base:>8.0f}{workers:>13.0f}{rate:>10,.0f}")
        rss, peak, _ = server.rss_mib()
        slope, late = _slope(points), _slope(points[len(points) // 2 - 1 :])
        print(
            f"  RSS {base:.0f} MiB base -> {rss:.0f} MiB (peak {peak:.0f}); slope {slope:.0f} MiB per million calls "
            f"(least squares over the 10 points; {late:.0f} over the second half); "
            f"ingest {sent / elapsed:,.0f} calls/s; {stream.sessions_started:,} sessions"
        )

        routes = usage_routes(server.url, admin, "tenant-000", "wf-000-0")
        print(
            f"\n  {len(routes)} route variants from /openapi.json, {requests} requests each (export {export_requests})"
        )
        quiet = time_routes(server.port, admin, routes, requests, export_requests)
        live_stream = Stream(Workload(10**12, seed=17))
        stop = threading.Event()
        live = [
            Poster(server.url, ingest, live_stream, stop, 2 * live_stream.workload.batch / live_rate) for _ in range(2)
        ]
        for p in live:
            p.start()
        try:
            busy = time_routes(server.port, admin, routes, requests, export_requests)
        finally:
            stop.set()
            for p in live:
                p.join(120)
        live_acked = sum(p.acked for p in live)
        acks = sorted(x for p in live for x in p.latencies) or [0.0]
        ack_p99 = acks[int(0.99 * (len(acks) - 1))] * 1000
        _table(quiet, busy)
        worst_quiet = max(v[1] for v in quiet.values())
        worst_busy = max(v[1] for v in busy.values())
        over_quiet = sum(v[1] > 10 for v in quiet.values())
        over_busy = sum(v[1] > 10 for v in busy.values())
        print(
            f"  worst p99: quiet {worst_quiet:.1f} ms, under ingest {worst_busy:.1f} ms; p99 over 10 ms: "
            f"{over_quiet} quiet, {over_busy} under ingest of {len(routes)}; "
            f"live ingest at {live_rate:,.0f} calls/s offered: {live_acked:,} acknowledged, ack p99 {ack_p99:.0f} ms"
        )
        ingest_rate = sent / elapsed if elapsed else 0.0
        stored = sent + live_acked

        rows, took = export_csv(server.url, admin)
        print(
            f"\n  CSV export (all tenants, 31 days): {rows:,} rows in {took:.1f} s, {rows / took:,.0f} rows/s "
            f"({'all' if rows == stored else 'NOT all'} of the {stored:,} calls acknowledged)"
        )
        before = global_usage(server.port, admin)
        stopped = server.stop()
        restart = server.start()
        rss_restart = server.rss_mib()[0]
        same = global_usage(server.port, admin) == before
        server.stop()
        print(
            f"  restart: stopped in {stopped:.1f} s (SIGTERM), ready again in {restart:.1f} s, "
            f"RSS {rss_restart:.0f} MiB, /v1/usage {'the same' if same else 'DIFFERENT'}"
        )
        print(f"  load average at the end {os.getloadavg()[0]:.2f}")
    finally:
        server.stop()
    summary = {
        "calls": sent,
        "calls_stored": stored,
        "order": order,
        "rss_base_mib": round(base),
        "rss_mib": [round(m) for _, m in points],
        "rss_peak_mib": round(peak),
        "mib_per_million_calls": round(slope, 1),
        "mib_per_million_calls_second_half": round(late, 1),
        "ingest_calls_per_s": round(ingest_rate),
        "restart_s": round(restart, 2),
        "stop_s": round(stopped, 2),
        "rss_after_restart_mib": round(rss_restart),
        "restart_same_usage": same,
        "p99_ms_quiet": round(worst_quiet, 2),
        "p99_ms_under_ingest": round(worst_busy, 2),
        "routes_p99_over_10ms": [over_quiet, over_busy, len(routes)],
        "routes": {
            k: {"quiet": [round(x, 2) for x in quiet[k]], "busy": [round(x, 2) for x in busy[k]]} for k in quiet
        },
        "export_rows": rows,
        "export_complete": rows == stored,
        "export_rows_per_s": round(rows / took if took else 0),
        "load_average": round(os.getloadavg()[0], 2),
    }
    print("summary: " + json.dumps({k: v for k, v in summary.items() if k != "routes"}, separators=(",", ":")))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200_000, help="calls to ingest (default 200,000)")
    parser.add_argument("--senders", type=int, default=2, help="concurrent OTLP clients while loading")
    parser.add_argument("--requests", type=int, default=100, help="timed requests per route variant")
    parser.add_argument("--export-requests", type=int, default=3, help="timed one-tenant, one-day exports")
    parser.add_argument("--live-rate", type=float, default=1000.0, help="calls/s sent while the routes are timed")
    parser.add_argument("--ingest-workers", type=int, default=2, help="the server's --ingest-workers")
    parser.add_argument("--order", choices=["random", "time"], default="random", help="session order of the stream")
    parser.add_argument("--data-dir", type=Path, help="an empty data dir (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the data dir")
    args = parser.parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):  # each line as it is printed, also into a file
        sys.stdout.reconfigure(line_buffering=True)
    if args.calls < 1000:
        parser.error("--calls must be at least 1000")
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="costspan-bench-realistic-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        run(
            args.calls,
            data_dir,
            senders=args.senders,
            requests=args.requests,
            export_requests=args.export_requests,
            live_rate=args.live_rate,
            ingest_workers=args.ingest_workers,
            order=args.order,
        )
    finally:
        if not args.keep and args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
