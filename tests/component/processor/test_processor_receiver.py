"""The OTLP/HTTP receiver against the real SDK exporter and hand-built bodies, on a real socket."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from decimal import Decimal
from typing import Any

import httpx
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from prometheus_client import CollectorRegistry

from costspan.pricing import Pricer, Usage
from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.store._store import Store

ServerFactory = Callable[..., AbstractContextManager[tuple[ServerThread, Store, CollectorRegistry]]]

PROTOBUF = {"Content-Type": "application/x-protobuf"}

CALLS: list[dict[str, Any]] = [
    {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 200,
        "gen_ai.usage.cache_read.input_tokens": 100,
        "costspan.tenant.id": "acme",
    },
    {
        "gen_ai.system": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4-5",
        "gen_ai.usage.prompt_tokens": 3000,
        "gen_ai.usage.completion_tokens": 400,
        "costspan.tenant.id": "globex",
    },
    {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "no-such-model-xyz",
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 5,
        "costspan.tenant.id": "acme",
    },
]


def _export_with_sdk(url: str, calls: list[dict[str, Any]], *, extra_plain_spans: int = 2) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=url + "/v1/traces")))
    tracer = provider.get_tracer("test")
    for i in range(extra_plain_spans):
        with tracer.start_as_current_span(f"GET /{i}", attributes={"http.request.method": "GET"}):
            pass
    for attrs in calls:
        with tracer.start_as_current_span("chat", attributes=attrs):
            pass
    provider.shutdown()


def _sample(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    total = 0.0
    for family in registry.collect():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in (labels or {}).items()):
                total += s.value
    return total


def test_sdk_protobuf_export_is_priced_and_metrics_equal_the_priced_sum(serve: ServerFactory, pricer: Pricer) -> None:
    with serve() as (server, store, registry):
        _export_with_sdk(server.url, CALLS)
        records = sorted(store.read_records(), key=lambda r: r.model)
        assert [(r.model, r.tenant, r.service, r.cost_status) for r in records] == [
            ("claude-sonnet-4-5", "globex", "checkout", "priced"),
            ("gpt-4o", "acme", "checkout", "priced"),
            ("no-such-model-xyz", "acme", "checkout", "unpriced"),
        ]
        expected_gpt = pricer.price_call(
            "gpt-4o", Usage(input_tokens=1000, output_tokens=200, cache_read_tokens=100), provider="openai"
        ).total
        assert records[1].cost_total == expected_gpt
        assert records[2].cost_total is None
        assert records[2].unpriced_reason
        priced_sum = sum((r.cost_total for r in records if r.cost_total is not None), Decimal(0))
        assert store.grand_total().cost == priced_sum
        text = httpx.get(server.url + "/metrics").text
        assert "costspan_cost_usd_total" in text
        assert _sample(registry, "costspan_cost_usd_total") == float(priced_sum)
        assert _sample(registry, "costspan_unpriced_requests_total") == 1
        assert _sample(registry, "costspan_requests_total", {"status": "ok"}) == 3
        assert _sample(registry, "costspan_tokens_total", {"token_type": "input", "tenant": "acme"}) == 1010
        assert _sample(registry, "gen_ai_client_token_usage_count", {"gen_ai_token_type": "input"}) == 3


def _json_body(span_id: str, model: str = "gpt-4o") -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "billing"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "hand-built"},
                        "spans": [
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": span_id,
                                "name": "chat gpt-4o",
                                "kind": 3,
                                "startTimeUnixNano": "1764000000000000000",
                                "endTimeUnixNano": "1764000001500000000",
                                "attributes": [
                                    {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                                    {"key": "gen_ai.provider.name", "value": {"stringValue": "openai"}},
                                    {"key": "gen_ai.request.model", "value": {"stringValue": model}},
                                    {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "1200"}},
                                    {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 300}},
                                    {"key": "costspan.user.id", "value": {"stringValue": "u-7"}},
                                ],
                                "status": {},
                            }
                        ],
                    }
                ],
            }
        ]
    }


def test_hand_built_json_body_gzip_and_resend_is_stored_once(serve: ServerFactory, pricer: Pricer) -> None:
    with serve() as (server, store, _):
        body = gzip.compress(json.dumps(_json_body("eee19b7ec3c1b174")).encode())
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        first = httpx.post(server.url + "/v1/traces", content=body, headers=headers)
        again = httpx.post(server.url + "/v1/traces", content=body, headers=headers)
        assert (first.status_code, first.headers["content-type"], first.json()) == (200, "application/json", {})
        assert again.status_code == 200
        (record,) = store.read_records()
        assert (record.trace_id, record.span_id) == ("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174")
        assert (record.service, record.user, record.tokens.input, record.tokens.output) == ("billing", "u-7", 1200, 300)
        assert record.duration_s == 1.5
        expected = pricer.price_call(
            "gpt-4o", Usage(input_tokens=1200, output_tokens=300), provider="openai", at=1.764e9
        )
        assert record.cost_total == expected.total
        assert store.counters["duplicate_spans"] == 1


def test_partial_success_reports_rejected_spans(serve: ServerFactory) -> None:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id = b"\x01" * 16
    span.span_id = b"\x02" * 3  # invalid length
    with serve() as (server, store, _):
        response = httpx.post(server.url + "/v1/traces", content=request.SerializeToString(), headers=PROTOBUF)
        assert response.status_code == 200
        decoded = ExportTraceServiceResponse.FromString(response.content)
        assert decoded.partial_success.rejected_spans == 1
        assert store.read_records() == []


def test_malformed_bodies_are_400_with_a_reason_and_nothing_stored(serve: ServerFactory) -> None:
    with serve() as (server, store, _):
        bad_proto = httpx.post(server.url + "/v1/traces", content=b"\xff\xff\xff\x0f garbage", headers=PROTOBUF)
        bad_json = httpx.post(
            server.url + "/v1/traces", content=b'{"resourceSpans": [', headers={"Content-Type": "application/json"}
        )
        bad_ids = httpx.post(
            server.url + "/v1/traces",
            content=json.dumps(_json_body("not-hex-at-all!!")).encode(),
            headers={"Content-Type": "application/json"},
        )
        bad_gzip = httpx.post(
            server.url + "/v1/traces", content=b"not gzip", headers={**PROTOBUF, "Content-Encoding": "gzip"}
        )
        wrong_type = httpx.post(server.url + "/v1/traces", content=b"x", headers={"Content-Type": "text/plain"})
        assert bad_proto.status_code == 400
        assert bad_json.status_code == 400
        assert "not valid JSON" in bad_json.json()["message"]
        assert bad_ids.status_code == 400
        assert "not hex" in bad_ids.json()["message"]
        assert bad_gzip.status_code == 400
        assert wrong_type.status_code == 415
        assert store.read_records() == []
        assert store.counters["rejected_bad_request"] == 5


def test_bodies_above_the_limit_are_413_including_a_gzip_bomb(serve: ServerFactory) -> None:
    limit = 64 * 1024
    with serve(max_body_bytes=limit) as (server, store, _):
        big = httpx.post(server.url + "/v1/traces", content=b"\x00" * (limit + 1), headers=PROTOBUF)
        bomb = gzip.compress(b"\x00" * (100 * limit))
        assert len(bomb) < limit
        bombed = httpx.post(server.url + "/v1/traces", content=bomb, headers={**PROTOBUF, "Content-Encoding": "gzip"})
        assert big.status_code == 413
        assert bombed.status_code == 413
        assert store.read_records() == []


def test_full_queue_is_503_with_retry_after_never_a_silent_drop(serve: ServerFactory) -> None:
    with serve(max_pending_records=2, retry_after_seconds=3) as (server, store, _):
        calls = [dict(CALLS[0], **{"costspan.user.id": f"u{i}"}) for i in range(3)]
        request = ExportTraceServiceRequest()
        scope = request.resource_spans.add().scope_spans.add()
        for i, attrs in enumerate(calls):
            span = scope.spans.add(
                trace_id=b"\x0a" * 16, span_id=bytes([0, 0, 0, 0, 0, 0, 1, i + 1]), start_time_unix_nano=time.time_ns()
            )
            for key, value in attrs.items():
                kv = span.attributes.add(key=key)
                if isinstance(value, int):
                    kv.value.int_value = value
                else:
                    kv.value.string_value = value
        response = httpx.post(server.url + "/v1/traces", content=request.SerializeToString(), headers=PROTOBUF)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "3"
        assert store.read_records() == []
        assert store.counters["rejected_queue_full"] == 3


def test_health_and_readiness(serve: ServerFactory) -> None:
    with serve() as (server, _, _):
        assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
        assert httpx.get(server.url + "/readyz").status_code == 200


def test_acknowledged_means_durable_in_the_ledger_file(serve: ServerFactory) -> None:
    with serve() as (server, store, _):
        started = time.monotonic()
        _export_with_sdk(server.url, CALLS[:1], extra_plain_spans=0)
        assert time.monotonic() - started < 10
        segment = store.ledger.directory / "segment-00000001.log"
        assert segment.read_bytes().count(b"\n") == 1


def _request_with_calls(first: int, count: int) -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for n in range(first, first + count):
        span = scope.spans.add(
            trace_id=n.to_bytes(16, "big"), span_id=n.to_bytes(8, "big"), start_time_unix_nano=time.time_ns()
        )
        for key, value in CALLS[0].items():
            kv = span.attributes.add(key=key)
            if isinstance(value, int):
                kv.value.int_value = value
            else:
                kv.value.string_value = value
    return request.SerializeToString()


def test_a_queue_filled_behind_a_stalled_ledger_answers_503_then_recovers(serve: ServerFactory) -> None:
    import threading

    with serve(max_pending_records=3) as (server, store, _):
        release = threading.Event()
        entered = threading.Event()
        real_append = store.ledger.append

        def stalled(lines: list[bytes]) -> Any:
            entered.set()
            release.wait(10)
            return real_append(lines)

        store.ledger.append = stalled  # type: ignore[method-assign]
        url = server.url + "/v1/traces"
        answers: dict[int, int] = {}

        def send(first: int) -> None:
            answers[first] = httpx.post(url, content=_request_with_calls(first, 2), headers=PROTOBUF).status_code

        first = threading.Thread(target=send, args=(100,))
        first.start()
        assert entered.wait(5)  # the writer took batch 100 and is stalled in its append
        second = threading.Thread(target=send, args=(200,))
        second.start()
        deadline = time.monotonic() + 5
        while store.pending_records < 2 and time.monotonic() < deadline:  # batch 200 queues behind it
            time.sleep(0.01)
        third = httpx.post(url, content=_request_with_calls(300, 2), headers=PROTOBUF)
        assert third.status_code == 503
        assert third.headers["retry-after"] == "1"
        release.set()
        first.join(10)
        second.join(10)
        assert answers == {100: 200, 200: 200}
        assert sorted(int(r.span_id, 16) for r in store.read_records()) == [100, 101, 200, 201]
