"""OTLP/gRPC ``TraceService/Export`` of the whole ``costspan serve`` app, against the SDK's own gRPC exporter.

The same guarantees as OTLP/HTTP: keys from the metadata, a bound key's tenant, the body limit (gzip
included), partial success, durability before the answer, UNAVAILABLE (with RetryInfo) when the queue
is full; and, as the Collector's ``load_balancing`` exporter routes by ``costspan.tenant.id``, shards
that each hold only their tenants.
"""

from __future__ import annotations

import argparse
import gzip
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from costspan.pricing import Pricer
from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.api import KeyStore
from costspan.processor.serve._grpc import GRPC_PORT_STATE
from costspan.processor.serve._serve_cli import add_serve_command, run_serve
from costspan.processor.serve._server import build_server_app
from costspan.processor.serve._settings import Settings, load_settings
from costspan.processor.store._store import Store

DEFAULT_TENANT = "default-co"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    url: str
    target: str  # host:port of OTLP/gRPC
    store: Store
    keys: dict[str, str]  # admin, acme (tenant), ingest, ingest_acme, metrics

    def get(self, path: str, **params: Any) -> Any:
        r = httpx.get(self.url + path, params=params, headers={"X-API-Key": self.keys["admin"]}, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    def stored(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.get("/api/usage/export", format="json")
        return rows

    def export(
        self, body: bytes, key: str | None, *, compression: grpc.Compression | None = None
    ) -> ExportTraceServiceResponse:
        """One raw export through the generated ``TraceService`` client (no retries)."""
        with grpc.insecure_channel(self.target) as channel:
            metadata = () if key is None else (("x-api-key", key),)
            stub = _stub(channel)
            answer: ExportTraceServiceResponse = stub.Export(
                ExportTraceServiceRequest.FromString(body), metadata=metadata, timeout=30, compression=compression
            )
            return answer


ServerFactory = Callable[..., AbstractContextManager[Server]]


def _stub(channel: grpc.Channel) -> Any:
    """The generated ``TraceService`` client (its module is generated without annotations)."""
    return TraceServiceStub(channel)  # type: ignore[no-untyped-call]


@pytest.fixture
def serve(tmp_path: Path, pricer: Pricer) -> ServerFactory:
    """``with serve(max_body_bytes=...) as server``: the full app, with OTLP/gRPC on a free port."""

    @contextmanager
    def factory(name: str = "data", **overrides: Any) -> Iterator[Server]:
        data = tmp_path / name
        settings = Settings(data_dir=data, port=0, grpc_port=_free_port(), default_tenant=DEFAULT_TENANT, **overrides)
        keystore = KeyStore(data)
        keys = {
            "admin": keystore.create("admin")[1],
            "acme": keystore.create("tenant", "acme")[1],
            "ingest": keystore.create("ingest")[1],
            "ingest_acme": keystore.create("ingest", "acme")[1],
            "metrics": keystore.create("metrics")[1],
        }
        store = Store(settings.store_config())
        # ingest worker processes price with the default pricer: a custom one keeps ingest inline
        chosen = None if settings.ingest_workers else pricer
        app = build_server_app(settings, store, keys=keystore, pricer=chosen, registry=CollectorRegistry())
        with ServerThread(app) as running:
            port = getattr(app.state, GRPC_PORT_STATE)
            assert port == settings.grpc_port
            yield Server(running.url, f"127.0.0.1:{port}", store, keys)

    return factory


def _call(user: str, tenant: str | None, model: str = "gpt-4o", tokens: int = 1000) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": tokens,
        "gen_ai.usage.output_tokens": tokens // 10,
        "costspan.user.id": user,
    }
    if tenant is not None:
        attrs["costspan.tenant.id"] = tenant
    return attrs


def _spans(calls: Sequence[dict[str, Any]], *, plain: int = 1) -> list[ReadableSpan]:
    """LLM spans (and ``plain`` non-LLM ones) made by the real SDK."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    for attrs in calls:
        with tracer.start_as_current_span(f"chat {attrs['gen_ai.request.model']}", attributes=attrs):
            pass
    for i in range(plain):
        with tracer.start_as_current_span(f"GET /{i}"):
            pass
    spans = list(memory.get_finished_spans())
    provider.shutdown()
    return spans


def _exporter(server: Server, key: str | None, **kw: Any) -> OTLPSpanExporter:
    headers = {} if key is None else {"x-api-key": key}
    return OTLPSpanExporter(endpoint=server.target, insecure=True, headers=headers, **kw)


def _body(spans: Sequence[ReadableSpan]) -> bytes:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    return encode_spans(spans).SerializeToString()


def _code(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    error: Any = info.value
    return error.code(), error.details()


def test_sdk_export_is_stored_once_and_visible_in_the_usage_api(serve: ServerFactory) -> None:
    with serve() as server:
        spans = _spans([_call("u1", "acme"), _call("u2", "acme", tokens=3000), _call("u3", "globex")], plain=2)
        exporter = _exporter(server, server.keys["ingest"])
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        assert exporter.export(spans) is SpanExportResult.SUCCESS  # a retried export: counted once
        exporter.shutdown()
        rows = server.stored()
        assert sorted((r["user_id"], r["tenant_id"]) for r in rows) == [
            ("u1", "acme"),
            ("u2", "acme"),
            ("u3", "globex"),
        ]
        records = server.store.read_records()
        assert len(records) == 3  # acknowledged = in the ledger
        acme = [r.cost_total for r in records if r.tenant == "acme"]
        assert all(c is not None and c > 0 for c in acme)
        usage = server.get("/v1/usage", tenant_id="acme", scope="tenant")
        assert usage["request_count"] == 2
        assert Decimal(usage["daily_cost_exact"]) == sum(c for c in acme if c is not None)


def test_keys_are_checked_from_the_metadata(serve: ServerFactory) -> None:
    with serve() as server:
        body = _body(_spans([_call("u1", "acme")]))
        assert _code(lambda: server.export(body, None)) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "missing API key: send X-API-Key or Authorization: Bearer",
        )
        assert _code(lambda: server.export(body, "csk_nope_nope"))[0] is grpc.StatusCode.UNAUTHENTICATED
        for read_only in ("acme", "metrics"):
            assert _code(lambda k=read_only: server.export(body, server.keys[k])) == (  # type: ignore[misc]
                grpc.StatusCode.PERMISSION_DENIED,
                "this key may not send traces",
            )
        # the SDK's exporter does not retry a refused key, and gives up at once
        started = time.monotonic()
        assert _exporter(server, "csk_nope_nope").export(_spans([_call("u2", "acme")])) is SpanExportResult.FAILURE
        assert time.monotonic() - started < 5
        # authorization: Bearer is a key too
        with grpc.insecure_channel(server.target) as channel:
            bearer = (("authorization", "Bearer " + server.keys["ingest"]),)
            answer = _stub(channel).Export(ExportTraceServiceRequest.FromString(body), metadata=bearer)
        assert answer.partial_success.rejected_spans == 0
        assert [r["user_id"] for r in server.stored()] == ["u1"]


@pytest.mark.parametrize("workers", [0, 1], ids=["inline", "ingest-worker"])
def test_a_bound_key_sends_only_its_tenants_spans(serve: ServerFactory, workers: int) -> None:
    with serve(ingest_workers=workers) as server:
        body = _body(_spans([_call("u-own", "acme"), _call("u-other", "globex"), _call("u-none", None)]))
        answer = server.export(body, server.keys["ingest_acme"])
        assert answer.partial_success.rejected_spans == 1
        assert "1 span(s) name a tenant other than 'acme'" in answer.partial_success.error_message
        assert sorted((r["user_id"], r["tenant_id"]) for r in server.stored()) == [
            ("u-none", "acme"),
            ("u-own", "acme"),
        ]
        assert server.store.counts()[0].get("rejected_tenant") == 1


def test_gzip_is_accepted(serve: ServerFactory) -> None:
    with serve() as server:
        exporter = _exporter(server, server.keys["ingest"], compression=grpc.Compression.Gzip)
        assert exporter.export(_spans([_call("u1", "acme"), _call("u2", "acme")])) is SpanExportResult.SUCCESS
        exporter.shutdown()
        assert sorted(r["user_id"] for r in server.stored()) == ["u1", "u2"]


def test_bodies_above_the_limit_are_resource_exhausted_including_a_gzip_bomb(serve: ServerFactory) -> None:
    limit = 64 * 1024
    with serve(max_body_bytes=limit) as server:
        many = [_call(f"user-{i:05d}-" + "x" * 40, "acme") for i in range(600)]
        big = _body(_spans(many, plain=0))
        assert len(big) > limit
        code, message = _code(lambda: server.export(big, server.keys["ingest"]))
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert str(limit) in message
        # compressed it is under the limit; decompressed it is not
        assert len(gzip.compress(big)) < limit
        code, _ = _code(lambda: server.export(big, server.keys["ingest"], compression=grpc.Compression.Gzip))
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert server.stored() == []
        # and a body within the limit still goes in
        assert (
            server.export(_body(_spans(many[:3], plain=0)), server.keys["ingest"]).partial_success.rejected_spans == 0
        )
        assert len(server.stored()) == 3


def test_a_body_that_does_not_decode_is_invalid_argument(serve: ServerFactory) -> None:
    with serve() as server, grpc.insecure_channel(server.target) as channel:
        export: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        )
        metadata = (("x-api-key", server.keys["ingest"]),)
        code, _ = _code(lambda: export(b"\xff\xff\xff not protobuf", metadata=metadata, timeout=30))
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert server.store.counts()[0].get("rejected_bad_request") == 1


def test_a_full_queue_is_unavailable_with_retry_info_and_the_sdk_retries(serve: ServerFactory) -> None:
    with serve(max_pending_records=3, retry_after_seconds=1) as server:
        store = server.store
        release = threading.Event()
        entered = threading.Event()
        real_append = store.ledger.append

        def stalled(lines: list[bytes]) -> Any:
            entered.set()
            release.wait(20)
            return real_append(lines)

        store.ledger.append = stalled  # type: ignore[method-assign]
        key = server.keys["ingest"]
        answers: list[int] = []

        def send(users: list[str]) -> None:
            body = _body(_spans([_call(u, "acme") for u in users], plain=0))
            answers.append(server.export(body, key).partial_success.rejected_spans)

        first = threading.Thread(target=send, args=(["a1", "a2"],))
        first.start()
        assert entered.wait(10)  # the writer holds batch a and is stalled in its append
        second = threading.Thread(target=send, args=(["b1", "b2"],))
        second.start()
        deadline = time.monotonic() + 10
        while store.pending_records < 2 and time.monotonic() < deadline:  # batch b queues behind it
            time.sleep(0.01)
        # a raw export is refused with RetryInfo (what the OTLP exporters wait before retrying)
        body = _body(_spans([_call("c1", "acme"), _call("c2", "acme")], plain=0))
        with grpc.insecure_channel(server.target) as channel:
            call = _stub(channel).Export.with_call
            with pytest.raises(grpc.RpcError) as info:
                call(ExportTraceServiceRequest.FromString(body), metadata=(("x-api-key", key),), timeout=30)
        error: Any = info.value
        assert error.code() is grpc.StatusCode.UNAVAILABLE
        retry = RetryInfo.FromString(dict(error.trailing_metadata())["google.rpc.retryinfo-bin"])
        assert retry.retry_delay.seconds == 1
        # the SDK's exporter meets the same refusal, waits and retries: it succeeds once the ledger moves
        refused_before = store.counts()[0].get("rejected_queue_full", 0)
        results: list[SpanExportResult] = []
        exporter = _exporter(server, key, timeout=30)
        sdk = threading.Thread(
            target=lambda: results.append(exporter.export(_spans([_call("d1", "acme"), _call("d2", "acme")], plain=0)))
        )
        sdk.start()
        deadline = time.monotonic() + 10
        while store.counts()[0].get("rejected_queue_full", 0) == refused_before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store.counts()[0].get("rejected_queue_full", 0) > refused_before  # it was refused once
        release.set()
        for thread in (first, second, sdk):
            thread.join(30)
        exporter.shutdown()
        assert answers == [0, 0]
        assert results == [SpanExportResult.SUCCESS]
        assert sorted(r["user_id"] for r in server.stored()) == ["a1", "a2", "b1", "b2", "d1", "d2"]


def test_three_shards_routed_by_tenant_hold_only_their_tenants(serve: ServerFactory) -> None:
    """One exporter per shard, each fed the spans of the tenants routed to it, as the Collector's
    ``load_balancing`` exporter does with ``routing_key: attributes`` on ``costspan.tenant.id``."""
    tenants = {"acme": 0, "globex": 1, "initech": 2, "umbrella": 0, "hooli": 1}
    calls = [_call(f"{t}-u{i}", t, tokens=1000 * (i + 1)) for i in range(3) for t in tenants]
    with ExitStack() as stack:
        shards = [stack.enter_context(serve(f"shard-{n}")) for n in range(3)]
        exporters = [_exporter(shard, shard.keys["ingest"]) for shard in shards]
        routed: list[list[dict[str, Any]]] = [[], [], []]
        for attrs in calls:
            routed[tenants[attrs["costspan.tenant.id"]]].append(attrs)
        for exporter, shard_calls in zip(exporters, routed, strict=True):
            assert exporter.export(_spans(shard_calls)) is SpanExportResult.SUCCESS
            exporter.shutdown()
        for n, shard in enumerate(shards):
            mine = sorted(t for t, owner in tenants.items() if owner == n)
            rows = shard.stored()
            assert sorted({r["tenant_id"] for r in rows}) == mine
            for tenant in mine:
                usage = shard.get("/v1/usage", tenant_id=tenant, scope="tenant")
                expected = [c for c in calls if c["costspan.tenant.id"] == tenant]
                assert usage["request_count"] == len(expected) == 3
                stored_cost = sum(r.cost_total or Decimal(0) for r in shard.store.read_records() if r.tenant == tenant)
                assert Decimal(usage["daily_cost_exact"]) == stored_cost > 0
            for tenant in set(tenants) - set(mine):
                assert shard.get("/v1/usage", tenant_id=tenant, scope="tenant")["request_count"] == 0


def test_grpc_port_zero_turns_it_off(tmp_path: Path, pricer: Pricer) -> None:
    settings = Settings(data_dir=tmp_path, port=0, grpc_port=0)
    store = Store(settings.store_config())
    keys = KeyStore(tmp_path)
    keys.create("admin")
    app = build_server_app(settings, store, keys=keys, pricer=pricer, registry=CollectorRegistry())
    with ServerThread(app):
        assert getattr(app.state, GRPC_PORT_STATE) == 0


# uvicorn ends its thread with SystemExit when the app's start-up fails: that is the behaviour tested
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_grpc_port_in_use_stops_start_up(serve: ServerFactory, tmp_path: Path, pricer: Pricer) -> None:
    """Two shards on one port would split a tenant's spans between them: the second does not start."""
    with serve() as first:
        taken = int(first.target.rsplit(":", 1)[1])
        settings = Settings(data_dir=tmp_path / "second", port=0, grpc_port=taken)
        keys = KeyStore(settings.data_dir)
        keys.create("admin")
        store = Store(settings.store_config())
        app = build_server_app(settings, store, keys=keys, pricer=pricer, registry=CollectorRegistry())
        with pytest.raises(RuntimeError, match="did not start"), ServerThread(app):
            pass
        assert store.closing or not store.started  # what the failed start opened is closed again
        # the first server still takes exports
        body = _body(_spans([_call("u1", "acme")]))
        assert first.export(body, first.keys["ingest"]).partial_success.rejected_spans == 0


def test_the_grpc_port_from_flag_environment_and_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="costspan")
    add_serve_command(parser.add_subparsers(dest="command", required=True))
    assert parser.parse_args(["serve", "--grpc-port", "0"]).grpc_port == 0
    monkeypatch.delenv("COSTSPAN_GRPC_PORT")
    assert load_settings().grpc_port == 4317
    monkeypatch.setenv("COSTSPAN_GRPC_PORT", "14317")
    assert load_settings().grpc_port == 14317
    assert load_settings(grpc_port=0).grpc_port == 0  # a flag beats the environment
    assert run_serve(parser.parse_args(["serve", "--grpc-port", "70000"])) == 2
    assert "grpc_port" in capsys.readouterr().err
