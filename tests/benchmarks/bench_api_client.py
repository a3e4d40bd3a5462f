"""The usage API benchmark's timing: a lean keep-alive HTTP/1.1 client and the per-route loop.

httpx spends 1.5-2 ms of Python per request on this machine, as much as most routes take to answer;
:class:`LeanClient` sends prebuilt request bytes over one raw socket (``TCP_NODELAY``) and reads the
response by its ``Content-Length`` (or chunks), so a timed request is the server's latency plus
loopback and a few microseconds of client. The client's own cyclic GC is off while timing.
"""

from __future__ import annotations

import gc
import os
import socket
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

__all__ = ["LeanClient", "server_cpu_s", "time_routes"]

_CRLF2 = b"\r\n\r\n"


class LeanClient:
    """One keep-alive HTTP/1.1 connection to ``host:port``; reconnects when the server closes it."""

    def __init__(self, host: str, port: int, timeout: float = 600.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._sock: socket.socket | None = None
        self._buf = bytearray()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock, self._buf = sock, bytearray()
        return sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> LeanClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, path: str, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> bytes:
        """The bytes of ``GET path?params`` (build once, send many times with :meth:`send`)."""
        target = path + ("?" + urlencode(params) if params else "")
        lines = [f"GET {target} HTTP/1.1", f"Host: {self.host}:{self.port}", "Accept: application/json"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def get(self, path: str, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> bytes:
        """The body of a GET answered with 200 (``RuntimeError`` otherwise)."""
        status, body = self.send(self.request(path, params, headers))
        if status != 200:
            raise RuntimeError(f"GET {path} {params}: {status} {body[:300]!r}")
        return body

    def send(self, raw: bytes) -> tuple[int, bytes]:
        """Send one prebuilt request; returns (status, body)."""
        sock = self._sock or self._connect()
        try:
            sock.sendall(raw)
            return self._read(sock)
        except (ConnectionError, _ClosedError):
            self.close()  # the server closed the idle connection: once more on a new one
            sock = self._connect()
            sock.sendall(raw)
            return self._read(sock)

    def _fill(self, sock: socket.socket) -> None:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise _ClosedError
        self._buf += chunk

    def _read(self, sock: socket.socket) -> tuple[int, bytes]:
        buf = self._buf
        while (end := buf.find(_CRLF2)) < 0:
            self._fill(sock)
        head = bytes(buf[:end]).decode("latin-1").split("\r\n")
        del buf[: end + 4]
        status = int(head[0].split(" ", 2)[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
        if "content-length" in fields:
            size = int(fields["content-length"])
            while len(buf) < size:
                self._fill(sock)
            body = bytes(buf[:size])
            del buf[:size]
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            body = self._chunked(sock)
        else:
            raise RuntimeError(f"a response without a length: {head}")
        if fields.get("connection", "").lower() == "close":
            self.close()
        return status, body

    def _chunked(self, sock: socket.socket) -> bytes:
        buf, parts = self._buf, []
        while True:
            while (eol := buf.find(b"\r\n")) < 0:
                self._fill(sock)
            size = int(bytes(buf[:eol]).split(b";")[0], 16)
            del buf[: eol + 2]
            while len(buf) < size + 2:
                self._fill(sock)
            parts.append(bytes(buf[:size]))
            del buf[: size + 2]
            if not size:
                return b"".join(parts)


class _ClosedError(Exception):
    """The server closed the connection."""


def server_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds the process ``pid`` has used (0 without a pid or /proc)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ms(values: list[float]) -> tuple[float, float, float]:
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
    return statistics.median(values) * 1000, p99 * 1000, values[-1] * 1000


def time_routes(
    client: LeanClient,
    routes: Sequence[tuple[str, str, dict[str, Any]]],
    keys: dict[str, str],
    requests: int,
    *,
    warmup: int = 20,
    server_pid: int | None = None,
    out: Callable[[str], None] = print,
) -> float:
    """Time ``requests`` sequential GETs of each route after ``warmup`` untimed ones; print p50 / p99 /
    max (ms, client side) and the server's CPU per request; returns the worst p99 in ms."""
    out(f"load average before the queries: {os.getloadavg()} on {os.cpu_count()} CPUs")
    out(f"\n{'route':<76}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'cpu ms':>9}")
    worst = 0.0
    over = []
    slow: list[tuple[float, float]] = []  # (seconds into the run, ms) of each request over 10 ms
    t_start = time.perf_counter()
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        for who, path, params in routes:
            raw = client.request(path, params, {"X-API-Key": keys[who]})
            for _ in range(warmup):
                _check(client.send(raw), path)
            times = []
            cpu0 = server_cpu_s(server_pid)
            for _ in range(requests):
                t = time.perf_counter()
                answer = client.send(raw)
                took = time.perf_counter() - t
                times.append(took)
                _check(answer, path)
                if took > 0.010:
                    slow.append((t - t_start, took * 1000))
            cpu = (server_cpu_s(server_pid) - cpu0) / requests * 1000
            p50, p99, top = _ms(times)
            worst = max(worst, p99)
            label = path + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "") + f" [{who}]"
            if p99 > 10:
                over.append(label)
            out(f"{label:<76}{p50:>9.2f}{p99:>9.2f}{top:>9.2f}{cpu:>9.2f}")
    finally:
        if gc_was_on:
            gc.enable()
    out(
        f"worst p99: {worst:.2f} ms over {len(routes)} route variants x {requests} requests; "
        f"{len(routes) - len(over)}/{len(routes)} at or under 10 ms; load average after: {os.getloadavg()}"
    )
    for label in over:
        out(f"  over 10 ms: {label}")
    if slow:
        shown = ", ".join(f"{ms:.1f} ms at {at:.1f} s" for at, ms in slow[:20])
        out(f"  {len(slow)} request(s) over 10 ms (time since the first route's warm-up): {shown}")
    return worst


def _check(answer: tuple[int, bytes], path: str) -> None:
    if answer[0] != 200:
        raise RuntimeError(f"GET {path}: {answer[0]} {answer[1][:300]!r}")
