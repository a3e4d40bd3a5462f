"""Budget checks: in-process check+reserve, and the remote check over loopback, side by side.

Run: ``.venv/bin/python -m tests.benchmarks.bench_budgets`` (``--quick`` for a smoke run). Prints the
median and p99 of one ``check`` (estimate, match, reserve) in memory and with the journal on, and of
one ``POST /v1/budgets/check`` from :class:`RemoteBudgetGuard` to uvicorn on 127.0.0.1, against the
goals (in-process median <= 5 us, remote p99 <= 1 ms). Settling happens between samples, untimed.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import logging
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import uvicorn
from fastapi import FastAPI, Response

from costspan.processor.budgets import BudgetBook, Call, FsyncPolicy, RemoteBudgetGuard, budget_router
from costspan.processor.testing import ServerThread

IN_PROCESS_GOAL_NS = 5_000
REMOTE_GOAL_NS = 1_000_000
CALL = Call(tenant="acme", service="api", provider="openai", model="gpt-4o-mini", input_tokens=800, max_tokens=300)
COST = Decimal("0.0003")


@dataclass(frozen=True, slots=True)
class Figure:
    name: str
    median_ns: float
    p99_ns: float
    goal_ns: float | None
    goal_is_p99: bool = False

    @property
    def meets_goal(self) -> bool | None:
        if self.goal_ns is None:
            return None
        return (self.p99_ns if self.goal_is_p99 else self.median_ns) <= self.goal_ns


def _book(data_dir: str | None = None, fsync: FsyncPolicy = "interval") -> BudgetBook:
    book = BudgetBook(data_dir=data_dir, fsync=fsync, snapshot_every=10**9)
    book.put_budget({"id": "global", "period": "month", "limit": "1000000000"})
    book.put_budget({"id": "per-tenant", "scope": {"tenant": "*"}, "period": "day", "limit": "1000000000"})
    return book


def _sample(check: Callable[[], str | None], settle: Callable[[str], object], n: int) -> tuple[float, float]:
    for _ in range(min(n, 2000)):  # warm-up: rate cache, match cache, allocator
        rid = check()
        if rid:
            settle(rid)
    samples = []
    gc.collect()
    for _ in range(n):
        start = time.perf_counter_ns()
        rid = check()
        samples.append(time.perf_counter_ns() - start)
        if rid:
            settle(rid)
    samples.sort()
    return samples[len(samples) // 2], samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def in_process(n: int, data_dir: str | None = None, fsync: FsyncPolicy = "interval") -> tuple[float, float]:
    book = _book(data_dir, fsync)
    try:
        return _sample(lambda: book.check(CALL).reservation_id, lambda rid: book.settle(rid, COST, 1100), n)
    finally:
        book.close()


def _app() -> FastAPI:
    app = FastAPI()
    app.include_router(budget_router(_book()))

    @app.post("/bench/noop")
    async def noop() -> Response:  # the server stack's floor: same app, no budget work
        return Response(b'{"allowed":true}', media_type="application/json")

    return app


def serve(port: int) -> None:
    """The server side of the remote benchmark, in its own process (as ``costspan serve`` would be)."""
    uvicorn.run(_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def remote(n: int, separate_process: bool = True, floor: bool = False) -> tuple[float, float]:
    if not separate_process:
        with ServerThread(_app()) as server:
            return _remote_samples(server.url, n, floor)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.benchmarks.bench_budgets", "--serve", str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the benchmark server did not start") from None
                time.sleep(0.05)
        return _remote_samples(f"http://127.0.0.1:{port}", n, floor)
    finally:
        proc.terminate()
        proc.wait(10)


def _remote_samples(url: str, n: int, floor: bool = False) -> tuple[float, float]:
    if floor:
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port))

        def noop() -> str | None:
            conn.request("POST", "/bench/noop", body=b"{}", headers={"Content-Type": "application/json"})
            conn.getresponse().read()
            return None

        try:
            return _sample(noop, lambda rid: None, n)
        finally:
            conn.close()
    guard = RemoteBudgetGuard(url, timeout=2.0)
    try:
        return _sample(lambda: guard.check(CALL)["reservation_id"], lambda rid: guard.settle(rid, COST, 1100), n)
    finally:
        guard.close()


def run(n_local: int = 50_000, n_remote: int = 3_000) -> list[Figure]:
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    figures = [Figure("in-process check+reserve (memory)", *in_process(n_local), IN_PROCESS_GOAL_NS)]
    with tempfile.TemporaryDirectory() as tmp:
        figures.append(
            Figure("in-process check+reserve (journal, fsync=never)", *in_process(n_local, tmp, "never"), None)
        )
    with tempfile.TemporaryDirectory() as tmp:
        figures.append(
            Figure("in-process check+reserve (journal, fsync=interval 1s)", *in_process(n_local, tmp, "interval"), None)
        )
    figures.append(Figure("remote check, loopback, server in its own process", *remote(n_remote), REMOTE_GOAL_NS, True))
    figures.append(Figure("  floor: an empty route on that server", *remote(n_remote, floor=True), None))
    figures.append(Figure("remote check, loopback, server thread in this process", *remote(n_remote, False), None))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few iterations only (smoke run)")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    figures = run(2_000, 200) if args.quick else run()
    base = figures[0].median_ns
    for f in figures:
        goal = "" if f.meets_goal is None else ("  goal met" if f.meets_goal else "  GOAL MISSED")
        print(
            f"{f.name:<58} median {f.median_ns / 1000:9.2f} us   p99 {f.p99_ns / 1000:9.2f} us"
            f"   x{f.median_ns / base:7.1f}{goal}"
        )


if __name__ == "__main__":
    main()
