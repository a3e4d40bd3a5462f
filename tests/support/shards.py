"""Several real `costspan serve` processes on 127.0.0.1 that are each other's peers (docs/scale-out.md):
``with run_shards(tmp_path, 3, tenants) as shards: ...`` (the integration test and the fan-out bench)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from costspan.processor.api import KeyStore
from costspan.processor.api._keys import KEYS_FILE

__all__ = ["ADMIN_KEY", "Shard", "run_shards"]

ROOT = Path(__file__).resolve().parents[2]
#: The admin key of every shard (``COSTSPAN_ADMIN_KEY``), also their peer key.
ADMIN_KEY = "cluster-test-admin-key-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Shard:
    url: str
    grpc_target: str  # host:port of its OTLP/gRPC receiver
    process: subprocess.Popen[bytes]
    tenant_keys: dict[str, str]  # tenant → its key (the same on every shard)

    def get(self, path: str, key: str = ADMIN_KEY, *, local: bool = False, **params: Any) -> httpx.Response:
        """``GET path``; ``local``: as a peer asks (``X-Costspan-Fanout``), answered with this shard's data only."""
        headers = {"X-API-Key": key, **({"X-Costspan-Fanout": "1"} if local else {})}
        return httpx.get(self.url + path, params=params, headers=headers, timeout=10)

    def json(self, path: str, key: str = ADMIN_KEY, *, local: bool = False, **params: Any) -> Any:
        answer = self.get(path, key, local=local, **params)
        assert answer.status_code == 200, answer.text
        return answer.json()


def _wait_ready(shards: list[Shard], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    waiting = list(shards)
    while waiting and time.monotonic() < deadline:
        shard = waiting[0]
        if shard.process.poll() is not None:
            raise RuntimeError(f"shard {shard.url} exited at start-up")
        try:
            if httpx.get(shard.url + "/readyz", timeout=1).status_code == 200:
                waiting.pop(0)
                continue
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    if waiting:
        raise RuntimeError("shards did not become ready")


@contextmanager
def run_shards(
    directory: Path, count: int, tenants: Sequence[str], *, peer_timeout_s: float = 1.0, fsync: str = "never"
) -> Iterator[list[Shard]]:
    """``count`` shards, each with ``--peers`` of all and its own ``--node-url``, the same keys (an admin
    key in the environment, a tenant key per tenant in every data dir); stopped (SIGTERM) on exit."""
    ports = [_free_port() for _ in range(count)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("pricing", "instrumentation", "processor")),
        "COSTSPAN_ADMIN_KEY": ADMIN_KEY,
    }
    keys = KeyStore(directory / "keys")
    tenant_keys = {t: keys.create("tenant", t)[1] for t in tenants}
    started: list[Shard] = []
    try:
        for port, url in zip(ports, urls, strict=True):
            data = directory / f"shard-{port}"
            data.mkdir(mode=0o700)
            shutil.copy2(keys.path, data / KEYS_FILE)
            grpc_port = _free_port()
            args = ["--port", str(port), "--grpc-port", str(grpc_port), "--data-dir", str(data)]
            args += ["--peers", ",".join(urls), "--node-url", url, "--peer-key", ADMIN_KEY]
            args += ["--peer-timeout", str(peer_timeout_s), "--log-level", "warning", "--fsync", fsync]
            process = subprocess.Popen(
                [sys.executable, "-m", "costspan.processor.serve", *args], env=env, stdout=subprocess.DEVNULL
            )
            started.append(Shard(url, f"127.0.0.1:{grpc_port}", process, tenant_keys))
        _wait_ready(started)
        yield started
    finally:
        for shard in started:
            if shard.process.poll() is None:
                shard.process.send_signal(signal.SIGTERM)
        for shard in started:
            try:
                shard.process.wait(15)
            except subprocess.TimeoutExpired:
                shard.process.kill()
                shard.process.wait(5)
