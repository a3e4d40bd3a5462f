"""What `costspan serve` protects as a process: a bounded request head, private data files, one
server per data dir, and memory that an unauthenticated flood does not grow.

The head and file tests run the whole server app in a thread (real sockets); the lock and memory
tests run ``python -m costspan.processor.serve`` as a subprocess, as an operator would.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from costspan.pricing import Pricer
from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.api import KeyStore
from costspan.processor.serve._serve_cli import add_serve_command
from costspan.processor.serve._server import build_server_app
from costspan.processor.serve._settings import Settings, load_settings
from costspan.processor.store._files import LOCK_FILE, DataDirLock
from costspan.processor.store._store import Store

ROOT = Path(__file__).resolve().parents[3]
ADMIN_KEY = "edge-test-admin-key-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _send_head(url: str, header_bytes: int) -> tuple[bytes, int]:
    """``GET /healthz`` with one header ``header_bytes`` long, sent 64 KiB at a time until the server
    answers (or closes); ``(the answer, header bytes sent)``."""
    host, port = url.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        try:
            while sent < header_bytes and not select.select([sock], [], [], 0)[0]:
                sock.sendall(b"a" * min(65536, header_bytes - sent))
                sent += min(65536, header_bytes - sent)
            if sent == header_bytes:
                sock.sendall(b"\r\nConnection: close\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while got := sock.recv(65536):
                answer += got
        return answer, sent


@pytest.fixture
def server(tmp_path: Path, pricer: Pricer) -> Iterator[str]:
    settings = Settings(data_dir=tmp_path / "data", port=0)
    app = build_server_app(settings, Store(settings.store_config()), insecure_no_auth=True, pricer=pricer)
    with ServerThread(app, max_header_bytes=32 * 1024) as running:
        yield running.url


def test_a_200_mb_header_is_refused_431_after_the_bound(server: str) -> None:
    url = server
    answer, sent = _send_head(url, 200 * 1024 * 1024)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert b"above the limit of 32768 bytes" in answer
    assert sent < 4 * 1024 * 1024  # refused near the bound, long before 200 MB
    assert httpx.get(url + "/healthz").status_code == 200  # the server carries on


def test_a_head_under_the_bound_is_served(server: str) -> None:
    url = server
    assert httpx.get(url + "/healthz", headers={"X-Big": "a" * 20_000}).status_code == 200
    answer, _ = _send_head(url, 16 * 1024)
    assert answer.startswith(b"HTTP/1.1 200 ")


def test_data_dir_modes_after_a_server_stopped(tmp_path: Path, pricer: Pricer) -> None:
    """Every file and directory the server and `costspan keys` made, after a clean stop (snapshots)."""
    data = tmp_path / "data"
    (data / "ledger").mkdir(mode=0o755, parents=True)  # a subdirectory left open: tightened at start
    os.chmod(data, 0o700)
    keystore = KeyStore(data)
    admin = {"X-API-Key": keystore.create("admin")[1]}
    settings = Settings(data_dir=data, port=0)
    app = build_server_app(settings, Store(settings.store_config()), keys=keystore, pricer=pricer)
    with ServerThread(app) as running:
        budget = {"id": "acme-day", "scope": {"tenant": "acme"}, "period": "day", "limit": "10"}
        assert httpx.post(running.url + "/v1/budgets", json=budget, headers=admin).status_code == 201
        call = {
            "tenant_id": "acme",
            "provider": "openai",
            "model": "gpt-4o",
            "prompt_tokens": 10,
            "completion_tokens": 1,
        }
        assert httpx.post(running.url + "/api/usage/calls", json=call, headers=admin).status_code == 201
        resource = {"workspace_id": "acme", "resource_type": "cpu", "amount": "2", "duration_seconds": "60"}
        assert httpx.post(running.url + "/api/resources/usage", json=resource, headers=admin).status_code == 201
    modes = {str(p.relative_to(data)): stat.S_IMODE(p.stat().st_mode) for p in [data, *data.rglob("*")] if p.exists()}
    kinds = {"ledger", "snapshots", "budgets", "usage-index", "resources", "api-keys.json"}
    assert kinds <= {name.split("/")[0] for name in modes}, modes
    wrong = {name: oct(mode) for name, mode in modes.items() if mode != (0o700 if (data / name).is_dir() else 0o600)}
    assert wrong == {}


def test_a_data_dir_open_to_others_is_kept_but_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``--data-dir .`` must not lock others out of a project directory: warned, not changed."""
    tmp_path.chmod(0o755)
    store = Store(Settings(data_dir=tmp_path).store_config())
    with caplog.at_level(logging.WARNING):
        store.start()
    store.close()
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "ledger").stat().st_mode) == 0o700
    assert any("may be entered by other users (mode 755)" in r.getMessage() for r in caplog.records)


def test_edge_settings_come_from_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = argparse.ArgumentParser(prog="costspan")
    add_serve_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", "--metrics-public", "--max-request-bytes", "2048", "--max-header-bytes", "4096"])
    assert (args.metrics_public, args.max_request_bytes, args.max_header_bytes) == (True, 2048, 4096)
    assert parser.parse_args(["serve"]).metrics_public is None  # not given: the environment decides
    monkeypatch.setenv("COSTSPAN_METRICS_PUBLIC", "true")
    monkeypatch.setenv("COSTSPAN_MAX_REQUEST_BYTES", "4096")
    settings = load_settings()
    assert (settings.metrics_public, settings.max_request_bytes, settings.max_header_bytes) == (True, 4096, 65536)
    assert load_settings(metrics_public=None).metrics_public is True


def _serve(data_dir: Path, port: int) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("pricing", "instrumentation", "processor")),
        "COSTSPAN_ADMIN_KEY": ADMIN_KEY,
    }
    argv = [sys.executable, "-m", "costspan.processor.serve", "--port", str(port), "--data-dir", str(data_dir)]
    return subprocess.Popen(
        [*argv, "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def _ready(port: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"the server did not become ready: {process.communicate()[1]}")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _unauthenticated_flood(port: int, body_bytes: int) -> int:
    """POST ``body_bytes`` without a key, streaming the body until the server answers; the status."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = "POST /api/usage/calls HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        sock.sendall(f"{head}Content-Length: {body_bytes}\r\n\r\n".encode())
        chunk = b" " * (1 << 20)
        try:
            for _ in range(body_bytes // len(chunk)):
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: the rest is never read
        answer = sock.recv(65536)
    return int(answer.split()[1])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's RSS from /proc")
def test_one_server_per_data_dir_and_floods_do_not_grow_memory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = _free_port()
    first = _serve(data, port)
    try:
        _ready(port, first)
        assert (data / LOCK_FILE).read_text().strip() == str(first.pid)
        second = _serve(data, _free_port())
        _, err = second.communicate(timeout=60)
        assert second.returncode == 2
        assert err.strip().splitlines() == [
            f"costspan serve: data dir {data} is in use by another costspan serve (pid {first.pid})"
        ]
        before = _rss_kib(first.pid)
        statuses = [_unauthenticated_flood(port, 256 << 20) for _ in range(4)]
        assert statuses == [401] * 4
        assert _rss_kib(first.pid) - before < 32 * 1024  # not the ~1 GB four such bodies would take
    finally:
        first.terminate()
        first.communicate(timeout=30)
    with DataDirLock(data):  # released at exit: the next server may start
        pass
