"""Hostile input against the whole server on a real socket: refused with a clear 4xx or partial success,
nothing valid lost, and every read route and ``/metrics`` still answering afterwards."""

from __future__ import annotations

import gzip
import io
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.rpc.status_pb2 import Status as RpcStatus
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from prometheus_client import CollectorRegistry

from costspan.pricing import Pricer, default_pricer
from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.api import KeyStore
from costspan.processor.api._keys_cli import run_keys
from costspan.processor.budgets import BudgetBook
from costspan.processor.serve._cli import build_parser
from costspan.processor.serve._server import build_server_app
from costspan.processor.serve._settings import Settings
from costspan.processor.store import CallRecord, Store
from costspan.processor.store._validate import MAX_ID_LENGTH, OVERFLOW
from tests.support.records import call_record

PROTOBUF = "application/x-protobuf"
NOW_NS = time.time_ns()
VALID: dict[str, Any] = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.usage.input_tokens": 1000,
    "gen_ai.usage.output_tokens": 200,
    "costspan.tenant.id": "acme",
}
#: One hostile span per case: the attributes over VALID, and the span's start time if not now.
HOSTILE: dict[str, tuple[dict[str, Any], int]] = {
    "4000-digit tokens": ({"gen_ai.usage.input_tokens": "9" * 4000}, NOW_NS),
    "negative tokens": ({"gen_ai.usage.output_tokens": -5}, NOW_NS),
    "NaN tokens": ({"gen_ai.usage.input_tokens": float("nan")}, NOW_NS),
    "1e300 tokens": ({"gen_ai.usage.input_tokens": 1e300}, NOW_NS),
    "fractional tokens": ({"gen_ai.usage.output_tokens": 2.5}, NOW_NS),
    "NaN string tokens": ({"gen_ai.usage.input_tokens": "NaN"}, NOW_NS),
    "exponent string tokens": ({"gen_ai.usage.input_tokens": "1e12"}, NOW_NS),
    "underscored string tokens": ({"gen_ai.usage.output_tokens": "1_000"}, NOW_NS),
    "fullwidth digit tokens": ({"gen_ai.usage.output_tokens": "\uff11\uff12"}, NOW_NS),
    "bool tokens": ({"gen_ai.usage.input_tokens": True}, NOW_NS),
    "CRLF tenant": ({"costspan.tenant.id": "acme\r\nX-Injected: 1"}, NOW_NS),
    "path tenant": ({"costspan.tenant.id": "../../etc/passwd"}, NOW_NS),
    "internal key tenant": ({"costspan.tenant.id": "\x00all"}, NOW_NS),
    "dot-dot tenant": ({"costspan.tenant.id": ".."}, NOW_NS),
    "long tenant": ({"costspan.tenant.id": "t" * (MAX_ID_LENGTH + 1)}, NOW_NS),
    "wildcard tenant": ({"costspan.tenant.id": "*"}, NOW_NS),
    "overflow-name tenant": ({"costspan.tenant.id": OVERFLOW}, NOW_NS),
    "NUL user": ({"costspan.user.id": "bob\x00"}, NOW_NS),
    "C1 model": ({"gen_ai.request.model": "gpt-4o\x85"}, NOW_NS),
    "start in 1970": ({}, 5 * 10**9),
    "start next year": ({}, NOW_NS + 365 * 86400 * 10**9),
}


@dataclass
class Server:
    url: str
    store: Store
    registry: CollectorRegistry
    admin: str
    ingest: str

    def post(self, body: bytes, content_type: str = PROTOBUF, **headers: str) -> httpx.Response:
        headers = {"Content-Type": content_type, "X-API-Key": self.ingest, **headers}
        return httpx.post(self.url + "/v1/traces", content=body, headers=headers, timeout=30)

    def call(self, **body: Any) -> httpx.Response:
        return httpx.post(self.url + "/api/usage/calls", json=body, headers={"X-API-Key": self.admin}, timeout=30)

    def rejected(self, reason: str) -> float:
        return _sample(self.registry, "costspan_rejected_total", {"reason": reason})


def _sample(registry: CollectorRegistry, name: str, labels: dict[str, str]) -> float:
    return sum(
        s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


@pytest.fixture(scope="module")
def pricer() -> Pricer:
    return default_pricer()


def _server(data: Path, pricer: Pricer, **overrides: Any) -> Iterator[Server]:
    settings = Settings(data_dir=data, port=0, **overrides)
    keys = KeyStore(data)
    admin, ingest = keys.create("admin")[1], keys.create("ingest")[1]
    store = Store(settings.store_config())
    registry = CollectorRegistry(auto_describe=False)
    book = BudgetBook(data_dir=data / "budgets")
    app = build_server_app(settings, store, keys=keys, pricer=pricer, registry=registry, book=book)
    with ServerThread(app) as server:
        yield Server(server.url, store, registry, admin, ingest)


@pytest.fixture
def server(tmp_path: Path, pricer: Pricer) -> Iterator[Server]:
    yield from _server(tmp_path / "data", pricer)


def _request(spans: list[tuple[dict[str, Any], int]], first_id: int = 1) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "checkout"
    scope = rs.scope_spans.add()
    for n, (attrs, start_ns) in enumerate(spans, first_id):
        span = scope.spans.add(name="chat", trace_id=n.to_bytes(16, "big"), span_id=n.to_bytes(8, "big"))
        span.start_time_unix_nano = start_ns
        span.end_time_unix_nano = start_ns + 300_000_000
        for key, value in {**VALID, **attrs}.items():
            any_value = span.attributes.add(key=key).value
            if isinstance(value, bool):
                any_value.bool_value = value
            elif isinstance(value, int):
                any_value.int_value = value
            elif isinstance(value, float):
                any_value.double_value = value
            else:
                any_value.string_value = value
    return request


def _read_routes(server: Server) -> dict[str, bool]:
    """Every GET route of the OpenAPI document, its path parameters filled in → whether it names something."""
    spec = httpx.get(server.url + "/openapi.json", headers={"X-API-Key": server.admin}).json()
    paths = [p for p, ops in spec["paths"].items() if "get" in ops]
    return {re.sub(r"\{[^}]+\}", "acme", p): "{" in p for p in paths}


def _assert_every_route_answers(server: Server) -> None:
    routes = _read_routes(server)
    assert len(routes) > 20
    with httpx.Client(base_url=server.url, headers={"X-API-Key": server.admin}, timeout=30) as client:
        answers = {path: client.get(path, params={"tenant": "acme", "tenant_id": "acme"}) for path in routes}
        failed = {
            path: (r.status_code, r.text[:200])
            for path, r in answers.items()
            if r.status_code != 200 and not (r.status_code == 404 and routes[path])  # a named thing not there
        }
        assert failed == {}
        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert "costspan_cost_usd_total{" in metrics.text  # the cost series are all there


def _stored(server: Server) -> list[CallRecord]:
    return server.store.read_records()


def test_hostile_spans_are_refused_in_partial_success_and_the_valid_ones_stored_once(server: Server) -> None:
    spans = [(dict(VALID), NOW_NS), *HOSTILE.values(), ({"costspan.user.id": "u-2"}, NOW_NS)]
    body = _request(spans).SerializeToString()
    response = server.post(body)
    assert response.status_code == 200, response.text
    partial = ExportTraceServiceResponse.FromString(response.content).partial_success
    assert partial.rejected_spans == len(HOSTILE)
    assert partial.error_message.startswith("span refused: ")
    assert server.post(body).status_code == 200  # the exporter's retry: still once
    stored = _stored(server)
    assert sorted((r.span_id, r.tenant, r.user) for r in stored) == [
        ((1).to_bytes(8, "big").hex(), "acme", ""),
        ((len(spans)).to_bytes(8, "big").hex(), "acme", "u-2"),
    ]
    expected = {
        # 4000 digits, negative, NaN, 1e300, a fraction, four strings that are no count, a bool; each export twice
        "invalid_tokens": 2 * 10,
        "invalid_tenant": 2 * 7,
        "invalid_id": 2 * 2,
        "invalid_timestamp": 2 * 2,
    }
    assert {reason: server.rejected(reason) for reason in expected} == expected
    _assert_every_route_answers(server)


def test_over_long_values_are_truncated_like_the_sdk_limit_and_counted(server: Server) -> None:
    model = "m" * (15 * 1024 * 1024 // 8)  # a 2 MB model name (the was 15 MB)
    spans = [({"gen_ai.request.model": model, "costspan.workflow.id": "w" * 1000, "error.type": "e" * 999}, NOW_NS)]
    response = server.post(_request(spans).SerializeToString())
    assert response.status_code == 200
    assert ExportTraceServiceResponse.FromString(response.content).partial_success.rejected_spans == 0
    (record,) = _stored(server)
    assert (record.model, record.workflow, record.error_type) == ("m" * 256, "w" * 256, "e" * 256)
    assert record.tenant == "acme"
    assert server.rejected("value_truncated") == 1
    _assert_every_route_answers(server)


def test_the_sdk_exporter_gets_the_same_rules(server: Server) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    exporter = OTLPSpanExporter(endpoint=server.url + "/v1/traces", headers={"x-api-key": server.ingest})
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    for attrs in (VALID, {**VALID, "costspan.tenant.id": "evil\r\n"}, {**VALID, "gen_ai.usage.input_tokens": -1}):
        with tracer.start_as_current_span("chat", attributes=attrs):
            pass
    provider.shutdown()
    assert [(r.tenant, r.tokens.input) for r in _stored(server)] == [("acme", 1000)]
    assert (server.rejected("invalid_tenant"), server.rejected("invalid_tokens")) == (1, 1)


def _json_body(tenant: str) -> bytes:
    span = {
        "traceId": "0a" * 16,
        "spanId": "0b" * 8,
        "name": "chat",
        "startTimeUnixNano": str(NOW_NS),
        "endTimeUnixNano": str(NOW_NS + 1),
        "attributes": [
            {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "10"}},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "5"}},
            {"key": "costspan.tenant.id", "value": {"stringValue": tenant}},
        ],
    }
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()


@pytest.mark.parametrize("tenant", ["a\r\nb", "../x", "x/y", "\x00all", "a\u2028b"])
def test_otlp_json_tenant_with_control_characters_or_a_path_is_refused(server: Server, tenant: str) -> None:
    response = server.post(_json_body(tenant), "application/json")
    assert response.status_code == 200
    assert response.json()["partialSuccess"]["rejectedSpans"] == "1"
    assert "tenant" in response.json()["partialSuccess"]["errorMessage"]
    assert _stored(server) == []
    ok = server.post(_json_body("acme"), "application/json")
    assert (ok.status_code, ok.content) == (200, b"{}")
    assert [r.tenant for r in _stored(server)] == ["acme"]


def test_otlp_json_nested_1000_deep_or_with_nan_is_400_and_loses_nothing(server: Server) -> None:
    assert server.post(_json_body("acme"), "application/json").status_code == 200
    deep = b'{"resourceSpans":' + b"[" * 1000 + b"]" * 1000 + b"}"
    value = '{"arrayValue":{"values":[' * 300 + "]}}" * 300
    nested_value = f'{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"a","value":{value}}}]}}}}]}}'
    for body in (deep, nested_value.encode(), b'{"resourceSpans":[],"x":NaN}'):
        response = server.post(body, "application/json")
        assert response.status_code == 400, response.text[:200]
        message = response.json()["message"]
        assert message.startswith("body is not") and len(message) < 400
    assert len(_stored(server)) == 1
    _assert_every_route_answers(server)


def test_every_gzip_member_is_read(server: Server) -> None:
    first = _request([(VALID, NOW_NS)], first_id=1).SerializeToString()
    second = _request([({"costspan.tenant.id": "globex"}, NOW_NS)], first_id=2).SerializeToString()
    body = gzip.compress(first) + gzip.compress(second)  # as `cat a.gz b.gz`: protobuf merges the two
    response = server.post(body, **{"Content-Encoding": "gzip"})
    assert response.status_code == 200
    assert sorted(r.tenant for r in _stored(server)) == ["acme", "globex"]
    trailing = server.post(gzip.compress(first) + b"garbage", **{"Content-Encoding": "gzip"})
    assert trailing.status_code == 400
    assert RpcStatus.FromString(trailing.content).message.startswith("body is not valid gzip")


def test_deflate_with_bytes_after_its_end_is_400(server: Server) -> None:
    import zlib

    body = zlib.compress(_request([(VALID, NOW_NS)]).SerializeToString())
    response = server.post(body + body, **{"Content-Encoding": "deflate"})
    assert response.status_code == 400
    expected = f"body has {len(body)} byte(s) after the end of its deflate stream"
    assert RpcStatus.FromString(response.content).message == expected
    assert _stored(server) == []


GOOD_CALL: dict[str, Any] = {
    "provider": "openai",
    "model": "gpt-4o",
    "prompt_tokens": 100,
    "completion_tokens": 10,
    "tenant_id": "acme",
}


@pytest.mark.parametrize(
    ("field", "value", "status"),
    [
        ("latency_ms", float("nan"), 400),
        ("latency_ms", float("inf"), 400),
        ("latency_ms", -1, 422),
        ("latency_ms", 1e300, 422),
        ("prompt_tokens", -1, 422),
        ("prompt_tokens", 10**13, 422),
        ("prompt_tokens", 1e300, 422),
        ("completion_tokens", float("nan"), 400),
        ("tenant_id", "acme\r\nX: 1", 422),
        ("tenant_id", "../acme", 422),
        ("tenant_id", "..", 422),
        ("tenant_id", "\x00all", 422),
        ("user_id", "bob\x00", 422),
        ("workflow_id", "w\u0085", 422),
        ("model", "m" * (MAX_ID_LENGTH + 1), 422),
        ("timestamp", "1970-01-02T00:00:00Z", 422),
        ("timestamp", "2999-01-01T00:00:00Z", 422),
    ],
)
def test_json_route_refuses_hostile_values_with_a_clear_4xx(
    server: Server, field: str, value: Any, status: int
) -> None:
    body = json.dumps({**GOOD_CALL, field: value})  # json.dumps writes NaN and Infinity bare, as an attacker would
    response = httpx.post(
        server.url + "/api/usage/calls",
        content=body,
        headers={"X-API-Key": server.admin, "Content-Type": "application/json"},
    )
    assert response.status_code == status, response.text[:300]
    if status == 400:
        assert response.json()["detail"].startswith(f"{field}: NaN and Infinity")
    assert _stored(server) == []
    assert server.call(**GOOD_CALL).status_code == 201
    assert len(_stored(server)) == 1


def test_openapi_documents_the_limits(server: Server) -> None:
    spec = httpx.get(server.url + "/openapi.json", headers={"X-API-Key": server.admin}).json()
    props = spec["components"]["schemas"]["CallIn"]["properties"]
    assert props["prompt_tokens"]["maximum"] == 10**12
    assert props["user_id"]["maxLength"] == MAX_ID_LENGTH
    assert "\\x00" in props["user_id"]["pattern"]
    assert "/" in props["tenant_id"]["pattern"]


def test_cardinality_beyond_the_bounds_is_summed_as_other_and_counted(tmp_path: Path, pricer: Pricer) -> None:
    for server in _server(tmp_path / "data", pricer, max_users_per_tenant=2, max_models_per_tenant=2):
        calls = [
            ({"costspan.user.id": f"u{i}", "gen_ai.request.model": model}, NOW_NS)
            for i, model in enumerate(["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4o"])
        ]
        assert server.post(_request(calls).SerializeToString()).status_code == 200
        assert [r.user for r in _stored(server)] == ["u0", "u1", "u2", "u3"]  # the ledger keeps every name
        top = httpx.get(
            server.url + "/api/analytics/top-users", params={"tenant": "acme"}, headers={"X-API-Key": server.admin}
        ).json()
        users = {u["user_id"]: u["request_count"] for u in top["users"]}
        assert users == {"u0": 1, "u1": 1, OVERFLOW: 2}
        assert server.rejected("cardinality_user") == 2
        assert server.rejected("cardinality_model") == 1  # gpt-4.1: the third model
        _assert_every_route_answers(server)


def test_a_ledger_poisoned_by_an_older_version_still_loads_and_answers(tmp_path: Path, pricer: Pricer) -> None:
    data = tmp_path / "data"
    older = Store(Settings(data_dir=data).store_config())
    older.start()
    good = call_record(1, start_ns=NOW_NS, cost=Decimal("0.5"))
    poisoned = call_record(2, start_ns=NOW_NS, tokens=(10**3999, 10))  # what an older version stored
    older.ingest([good, poisoned])
    older.close()
    for server in _server(data, pricer):
        assert server.rejected("invalid_stored_record") == 1
        _assert_every_route_answers(server)
        usage = httpx.get(
            server.url + "/v1/usage", params={"tenant_id": "acme"}, headers={"X-API-Key": server.admin}
        ).json()
        assert (usage["request_count"], usage["daily_cost_exact"]) == (1, "0.50000000")
        export = httpx.get(
            server.url + "/api/usage/export",
            params={"format": "json", "tenant": "acme"},
            headers={"X-API-Key": server.admin},
        )
        assert export.status_code == 200
        assert len(export.json()) == 1


def test_cli_refuses_a_hostile_tenant_for_a_key(tmp_path: Path) -> None:
    def create(tenant: str) -> tuple[int, str]:
        args = build_parser().parse_args(
            ["keys", "--data-dir", str(tmp_path), "create", "--role", "tenant", "--tenant", tenant]
        )
        out, err = io.StringIO(), io.StringIO()
        return run_keys(args, out, err), err.getvalue()

    assert create("../globex") == (2, "costspan keys: --tenant holds a path separator or is '.' or '..'\n")
    assert create("acme\r\n") == (2, "costspan keys: --tenant holds a control character\n")
    assert create("*") == (2, "costspan keys: --tenant is '*', a name costspan keeps for itself\n")
    assert create("acme")[0] == 0
    assert [k.tenant for k in KeyStore(tmp_path).list()] == ["acme"]


@pytest.mark.parametrize("field", ["workspace_id", "execution_id", "project_id"])
def test_resource_usage_refuses_control_characters_in_its_ids(server: Server, field: str) -> None:
    body = {"workspace_id": "acme", "resource_type": "cpu", "amount": "1", "duration_seconds": "60"}
    headers = {"X-API-Key": server.admin}
    response = httpx.post(server.url + "/api/resources/usage", json={**body, field: "x\r\ny"}, headers=headers)
    assert response.status_code == 422, response.text[:300]
    assert httpx.post(server.url + "/api/resources/usage", json=body, headers=headers).status_code == 201


def test_resource_usage_refuses_a_cost_beyond_one_reports_bound_and_a_crlf_id(server: Server) -> None:
    headers = {"X-API-Key": server.admin}
    huge = {"workspace_id": "acme", "resource_type": "gpu", "amount": 1e9, "duration_seconds": 31536000}
    response = httpx.post(server.url + "/api/resources/usage", json=huge, headers=headers)
    assert response.status_code == 422 and "above 1000000000 for one report" in response.json()["detail"]
    crlf = {"workspace_id": "acme", "resource_type": "cpu", "amount": "1", "duration_seconds": "60", "id": "r\r\nx"}
    assert httpx.post(server.url + "/api/resources/usage", json=crlf, headers=headers).status_code == 422
    costs = httpx.get(server.url + "/api/workspaces/acme/costs", headers=headers).json()
    assert costs["compute_cost_exact"] == "0.00000000"  # neither was stored


def test_an_unpriceable_token_count_leaves_every_route_answering(server: Server) -> None:
    """10^12 tokens is a count (stored, unpriced: beyond what pricing takes for one call); the routes that
    average usage per call must not turn it into a 500, now or after a restart."""
    spans = [(dict(VALID), NOW_NS), ({"gen_ai.usage.input_tokens": 10**12}, NOW_NS)]
    response = server.post(_request(spans).SerializeToString())
    assert response.status_code == 200
    assert ExportTraceServiceResponse.FromString(response.content).partial_success.rejected_spans == 0
    assert sorted(r.cost_status for r in _stored(server)) == ["priced", "unpriced"]
    _assert_every_route_answers(server)
