"""SIGKILL the server while a client sends at full rate; restart; every acknowledged span is there once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from costspan.processor.store._ledger import Ledger
from costspan.processor.store._rollups import Rollups
from costspan.processor.store._store import Store, StoreConfig

ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start(data_dir: Path, port: int, grpc_port: int = 0) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("pricing", "instrumentation", "processor")),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "costspan.processor.serve",
            "--insecure-no-auth",
            "--port",
            str(port),
            "--grpc-port",
            str(grpc_port),
            "--data-dir",
            str(data_dir),
            "--log-level",
            "warning",
            "--snapshot-interval-seconds",
            "0.5",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("server did not become ready")


def _batch(first_id: int, size: int) -> bytes:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "crash-test"
    scope = rs.scope_spans.add()
    now = time.time_ns()
    for n in range(first_id, first_id + size):
        span = scope.spans.add(trace_id=n.to_bytes(16, "big"), span_id=n.to_bytes(8, "big"), name="chat")
        span.start_time_unix_nano = now
        span.end_time_unix_nano = now + 1_000_000
        for key, value in (
            ("gen_ai.provider.name", "openai"),
            ("gen_ai.request.model", "gpt-4o"),
            ("gen_ai.operation.name", "chat"),
        ):
            span.attributes.add(key=key).value.string_value = value
        span.attributes.add(key="gen_ai.usage.input_tokens").value.int_value = 100 + n % 7
        span.attributes.add(key="gen_ai.usage.output_tokens").value.int_value = 10
    return request.SerializeToString()


def _key(n: int) -> str:
    return n.to_bytes(16, "big").hex() + n.to_bytes(8, "big").hex()


def _grpc_client(target: str, offset: int, acked: list[int], stop: threading.Event) -> None:
    """Sends over OTLP/gRPC until the server dies; records what was acknowledged."""
    import grpc

    next_id = offset
    with grpc.insecure_channel(target) as channel:
        export: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        )
        while not stop.is_set():
            try:
                export(_batch(next_id, 50), timeout=5)
            except grpc.RpcError:
                return  # the server died mid-call (or refused it): this batch was never acknowledged
            acked.extend(range(next_id, next_id + 50))
            next_id += 50


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_sigkill_under_load_loses_no_acknowledged_span(tmp_path: Path, protocol: str) -> None:
    port = _free_port()
    grpc_port = _free_port() if protocol == "grpc" else 0
    server = _start(tmp_path, port, grpc_port)
    acked: list[int] = []
    stop = threading.Event()

    def client(offset: int) -> None:
        if protocol == "grpc":
            _grpc_client(f"127.0.0.1:{grpc_port}", offset, acked, stop)
            return
        next_id = offset
        with httpx.Client(timeout=5, headers={"Content-Type": "application/x-protobuf"}) as http:
            while not stop.is_set():
                try:
                    response = http.post(f"http://127.0.0.1:{port}/v1/traces", content=_batch(next_id, 50))
                except httpx.TransportError:
                    return  # the server died mid-request: this batch was never acknowledged
                if response.status_code == 200:
                    acked.extend(range(next_id, next_id + 50))
                next_id += 50

    clients = [threading.Thread(target=client, args=(i * 10**9 + 1,)) for i in range(3)]
    for t in clients:
        t.start()
    time.sleep(2.5)
    server.send_signal(signal.SIGKILL)
    server.wait(10)
    stop.set()
    for t in clients:
        t.join(10)
    assert len(acked) > 500

    restarted = _start(tmp_path, port)
    try:
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(30)

    keys = Counter(line.key for line in Ledger(tmp_path / "ledger", fsync="never").read())
    assert max(keys.values()) == 1  # exactly once
    missing = [n for n in acked if _key(n) not in keys]
    assert missing == []
    requests = sum(
        float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith("costspan_requests_total{")
    )
    assert requests == len(keys)

    store = Store(StoreConfig(data_dir=tmp_path))
    store.start()
    recomputed = Rollups()
    recomputed.add_all(store.read_records())
    assert store.rollups.records == recomputed.records == len(keys)
    assert store.grand_total().cost == recomputed.grand_total().cost
    assert store.grand_total().input_tokens == recomputed.grand_total().input_tokens
    assert {k: v.requests for k, v in store.rollups.totals.items()} == {
        k: v.requests for k, v in recomputed.totals.items()
    }
    store.close()
