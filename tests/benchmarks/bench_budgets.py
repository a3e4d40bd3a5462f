"""Budget checks: in-process check+reserve, and the remote check over loopback, side by side.

Run: ``.venv/bin/python -m tests.benchmarks.bench_budgets`` (``--quick`` for a smoke run). Prints the
median and p99 of one ``check`` (estimate, match, reserve) in memory and with the journal on, and of
one ``POST /v1/budgets/check`` from :class:`RemoteBudgetGuard` (with an ingest key) to ``costspan
serve`` on 127.0.0.1 in its own process, against the goals (in-process median <= 5 us, remote p99
<= 1 ms). Beside it: the floor (``GET /healthz`` on that server) and the same check answered by the
FastAPI route alone (no :class:`BudgetCheckEndpoint`). Settling happens between samples, untimed.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import logging
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from costspan.instrumentation._remote_guard import _read_response
from costspan.processor.api._keys import KeyStore
from costspan.processor.budgets import BudgetBook, Call, FsyncPolicy, RemoteBudgetGuard, budget_router

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


BUDGETS: tuple[dict[str, Any], ...] = (
    {"id": "global", "period": "month", "limit": "1000000000"},
    {"id": "per-tenant", "scope": {"tenant": "*"}, "period": "day", "limit": "1000000000"},
)


def _book(data_dir: str | None = None, fsync: FsyncPolicy = "interval") -> BudgetBook:
    book = BudgetBook(data_dir=data_dir, fsync=fsync, snapshot_every=10**9)
    for spec in BUDGETS:
        book.put_budget(spec)
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


def _plain_app() -> FastAPI:
    """The budget router alone on FastAPI (no fast path): what the check cost before it."""
    app = FastAPI()
    app.include_router(budget_router(_book()))
    return app


def serve(port: int) -> None:
    """The server side of the FastAPI-only comparison, in its own process."""
    uvicorn.run(_plain_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def _server(argv: list[str], port: int) -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, *argv])
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"the benchmark server did not start: {argv}") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)


@contextmanager
def costspan_serve() -> Iterator[tuple[str, str]]:
    """``costspan serve`` in its own process on a fresh data dir: (url, ingest key); budgets as in-process."""
    with tempfile.TemporaryDirectory() as tmp:
        keys = KeyStore(Path(tmp))
        admin, ingest = keys.create("admin")[1], keys.create("ingest")[1]
        port = _free_port()
        argv = ["-m", "costspan.processor.serve", "--port", str(port), "--data-dir", tmp, "--log-level", "warning"]
        with _server(argv, port) as url:
            for spec in BUDGETS:
                conn = http.client.HTTPConnection("127.0.0.1", port)
                conn.request(
                    "POST",
                    "/v1/budgets",
                    json.dumps(spec),
                    {"Authorization": f"Bearer {admin}", "Content-Type": "application/json"},
                )
                answer = conn.getresponse()
                if answer.status != 201:
                    raise RuntimeError(f"could not create the benchmark budgets: {answer.status} {answer.read()!r}")
                conn.close()
            yield url, ingest


def remote(n: int, *, plain: bool = False, floor: bool = False) -> tuple[float, float]:
    if plain:
        port = _free_port()
        with _server(["-m", "tests.benchmarks.bench_budgets", "--serve", str(port)], port) as url:
            return _remote_samples(url, None, n)
    with costspan_serve() as (url, key):
        return _floor_samples(url, n) if floor else _remote_samples(url, key, n)


def _floor_samples(url: str, n: int) -> tuple[float, float]:
    """``GET /healthz`` with the guard's own HTTP/1.1 client code: the server stack's floor."""
    host, port = url.removeprefix("http://").split(":")
    request = f"GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    with socket.create_connection((host, int(port))) as sock, sock.makefile("rb") as reader:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def healthz() -> str | None:
            sock.sendall(request)
            _read_response(reader)
            return None

        return _sample(healthz, lambda rid: None, n)


def _remote_samples(url: str, key: str | None, n: int) -> tuple[float, float]:
    guard = RemoteBudgetGuard(url, key, timeout=2.0)
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
    figures.append(Figure("remote check, loopback, `costspan serve` process", *remote(n_remote), REMOTE_GOAL_NS, True))
    figures.append(Figure("  floor: GET /healthz on that server", *remote(n_remote, floor=True), None))
    figures.append(Figure("  the FastAPI route alone, own process", *remote(n_remote, plain=True), None))
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
