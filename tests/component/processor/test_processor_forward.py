"""Forwarding enriched spans onward: attributes added, bounded queue, retries."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from prometheus_client import CollectorRegistry

from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.ingest._forward import Forwarder
from costspan.processor.store._store import Store

ServerFactory = Callable[..., AbstractContextManager[tuple[ServerThread, Store, CollectorRegistry]]]


class _Sink:
    def __init__(self, failures: int = 0) -> None:
        self.bodies: list[bytes] = []
        self.failures = failures
        self.attempts = 0


@pytest.fixture
def sink() -> Iterator[tuple[str, _Sink]]:
    state = _Sink()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            state.attempts += 1
            if state.failures:
                state.failures -= 1
                self.send_response(503)
            else:
                state.bodies.append(body)
                self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", state
    server.shutdown()
    server.server_close()


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def test_stored_exports_are_forwarded_with_costspan_attributes(serve: ServerFactory, sink: tuple[str, _Sink]) -> None:
    from tests.component.processor.test_processor_receiver import CALLS, _export_with_sdk

    url, state = sink
    with serve(forward_endpoint=url) as (server, store, _):
        _export_with_sdk(server.url, CALLS, extra_plain_spans=1)
        deadline = time.monotonic() + 10
        while len(state.bodies) < len(CALLS) + 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        records = {r.span_id: r for r in store.read_records()}
    spans = [
        span
        for body in state.bodies
        for rs in ExportTraceServiceRequest.FromString(body).resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]
    assert len(spans) == len(CALLS) + 1  # plain spans are forwarded too
    for span in spans:
        attrs = {kv.key: _value(kv.value) for kv in span.attributes}
        record = records.get(span.span_id.hex())
        if record is None:
            assert not any(k.startswith("costspan.cost") for k in attrs)
        elif record.cost_total is None:
            assert attrs["costspan.cost.status"] == "unpriced"
            assert attrs["costspan.call.outcome"] == record.outcome == "degraded"  # no price: not ok
            assert "costspan.cost.usd" not in attrs and "gen_ai.usage.cost" not in attrs
        else:
            assert attrs["costspan.cost.usd"] == attrs["gen_ai.usage.cost"] == float(record.cost_total)
            assert attrs["costspan.pricing.version"] == record.pricing_version


def test_forwarding_retries_then_counts_drops(sink: tuple[str, _Sink]) -> None:
    url, state = sink
    state.failures = 1
    dropped: list[int] = []
    forwarder = Forwarder(url, retries=2, backoff_s=0.01, on_drop=lambda: dropped.append(1))
    forwarder.submit(b"first")
    forwarder.close()
    forwarder.close()  # safe twice
    assert (state.bodies, state.attempts, forwarder.sent, dropped) == ([b"first"], 2, 1, [])

    state.failures = 10
    failing = Forwarder(url, retries=1, backoff_s=0.01, on_drop=lambda: dropped.append(1))
    failing.submit(b"second")
    failing.close()
    assert (failing.dropped, len(dropped)) == (1, 1)
    with pytest.raises(ValueError, match="http"):
        Forwarder("collector:4318")
