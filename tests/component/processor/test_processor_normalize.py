"""Normalization of every span spelling into one call record, with real SDK-produced spans."""

from __future__ import annotations

import ast
import inspect
import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anthropic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costspan.pricing import Pricer, Usage, default_pricer
from costspan.processor._span_processor import span_view
from costspan.processor.ingest import _normalize as normalize_module
from costspan.processor.ingest._normalize import _OPTIONAL_KEYS, WANTED_KEYS, Normalizer, SpanView
from costspan.processor.store._batch import call_key
from costspan.processor.store._dedupe import Deduplicator
from costspan.processor.store._records import CallRecord, TokenCounts, record_from_json, record_to_json


def _view(attrs: dict[str, Any], **kw: Any) -> SpanView:
    base: dict[str, Any] = {
        "trace_id": "ab" * 16,
        "span_id": "cd" * 8,
        "parent_span_id": "",
        "start_ns": 1_764_000_000_000_000_000,
        "end_ns": 1_764_000_002_000_000_000,
        "attributes": attrs,
        "resource": {"service.name": "svc"},
        "scope_name": "scope",
    }
    base.update(kw)
    return SpanView(**base)


SPELLINGS = [
    pytest.param(
        {
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 200,
            "gen_ai.usage.cache_read.input_tokens": 100,
            "gen_ai.usage.reasoning.output_tokens": 50,
        },
        ("openai", "gpt-4o", TokenCounts(1000, 200, 100, 0, 0, 50)),
        id="semconv",
    ),
    pytest.param(
        {
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.prompt_tokens": 10,
            "gen_ai.usage.completion_tokens": 20,
        },
        ("openai", "gpt-4o", TokenCounts(10, 20)),
        id="legacy-gen_ai.system-prompt_tokens",
    ),
    pytest.param(
        {
            "gen_ai.system": "Anthropic",
            "gen_ai.request.model": "claude-sonnet-4-6",
            "llm.request.type": "chat",
            "llm.usage.prompt_tokens": 1300,
            "llm.usage.completion_tokens": 7,
            "gen_ai.usage.cache_read_input_tokens": 1000,
            "gen_ai.usage.cache_creation_input_tokens": 200,
        },
        ("anthropic", "claude-sonnet-4-6", TokenCounts(1300, 7, 1000, 200)),
        id="openllmetry-llm.usage",
    ),
    pytest.param(
        {
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "llm.usage.total_tokens": 50,
            "llm.usage.completion_tokens": 8,
        },
        ("openai", "gpt-4o-mini", TokenCounts(42, 8)),
        id="openllmetry-total-only",
    ),
    pytest.param(
        {
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-sonnet-4-6",
            "gen_ai.response.model": "claude-sonnet-4-6",
            "gen_ai.usage.input_tokens": 50,
            "gen_ai.usage.cache_creation.input_tokens": 300,
            "gen_ai.usage.cache_read.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 9,
        },
        ("anthropic", "claude-sonnet-4-6", TokenCounts(1350, 9, 1000, 300)),
        id="anthropic-exclusive-input-repaired",
    ),
    pytest.param(
        {
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-sonnet-4-6",
            "gen_ai.usage.input_tokens": 1500,
            "gen_ai.usage.output_tokens": 9,
            "anthropic.usage.cache_creation.ephemeral_5m_input_tokens": 200,
            "anthropic.usage.cache_creation.ephemeral_1h_input_tokens": 100,
        },
        ("anthropic", "claude-sonnet-4-6", TokenCounts(1500, 9, 0, 300, 100)),
        id="anthropic-ephemeral-split",
    ),
    pytest.param(
        {
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": "12",
            "gen_ai.usage.output_tokens": 3.0,
            "gen_ai.usage.cache_write.input_tokens": 2,
        },
        ("openai", "gpt-4o", TokenCounts(12, 3, 0, 2)),
        id="openlit-and-string-counts",
    ),
]


@pytest.mark.parametrize(("attrs", "expected"), SPELLINGS)
def test_every_spelling_becomes_one_semconv_usage(
    attrs: dict[str, Any], expected: tuple[str, str, TokenCounts], pricer: Pricer
) -> None:
    record = Normalizer(pricer).normalize(_view(attrs))
    assert record is not None
    assert (record.provider, record.model, record.tokens) == expected
    assert record.cost_status == "priced"
    t = record.tokens
    usage = Usage(
        input_tokens=t.input,
        output_tokens=t.output,
        cache_read_tokens=t.cache_read,
        cache_write_tokens=t.cache_write,
        cache_write_1h_tokens=t.cache_write_1h,
        reasoning_tokens=t.reasoning,
    )
    expected_cost = pricer.price_call(record.model, usage, provider=record.provider, at=1.764e9).total
    assert record.cost_total == expected_cost
    assert record_from_json(record_to_json(record)) == record


@pytest.mark.parametrize(
    "attrs",
    [
        {"http.request.method": "GET"},
        {"gen_ai.request.model": "claude-sonnet-4-6"},  # e.g. anthropic.messages.count_tokens
        {"gen_ai.operation.name": "invoke_agent", "gen_ai.request.model": "gpt-4o"},
        {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"},
    ],
)
def test_non_call_spans_are_ignored(attrs: dict[str, Any], pricer: Pricer) -> None:
    assert Normalizer(pricer).normalize(_view(attrs)) is None


def test_inconsistent_counts_are_stored_unpriced_with_a_reason(pricer: Pricer) -> None:
    attrs = {
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 5,
        "gen_ai.usage.reasoning.output_tokens": 9,
    }
    record = Normalizer(pricer).normalize(_view(attrs))
    assert record is not None
    assert (record.cost_status, record.cost_total) == ("unpriced", None)
    assert record.unpriced_reason.startswith("invalid usage")


def test_attribution_span_beats_resource_and_errors_are_kept(pricer: Pricer) -> None:
    attrs = {
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.operation.name": "chat",
        "costspan.workflow.id": "wf-1",
        "error.type": "RateLimitError",
        "costspan.tokens.estimated": True,
    }
    resource = {"service.name": "api", "costspan.tenant.id": "from-resource", "costspan.user.id": "u-r"}
    record = Normalizer(pricer, default_tenant="fallback").normalize(_view(attrs, resource=resource))
    assert record is not None
    assert (record.tenant, record.workflow, record.user, record.service) == ("from-resource", "wf-1", "u-r", "api")
    assert (record.status, record.error_type, record.tokens) == ("error", "RateLimitError", TokenCounts())
    assert (record.cost_status, record.cost_total) == ("estimated", Decimal(0))


# --- real anthropic SDK spans ---------------------------------------------------------------------
MESSAGE = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-6",
    "content": [{"type": "text", "text": "hello"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 50,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 300,
        "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 100},
        "output_tokens": 120,
        "service_tier": "standard",
    },
}


class _FakeAnthropic(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        body = json.dumps(MESSAGE).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def fake_anthropic() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeAnthropic)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _anthropic_spans(url: str, *, wrap: bool) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bot"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    client = anthropic.Anthropic(
        api_key="test-key", base_url=url, max_retries=0, open_telemetry={"tracer_provider": provider}
    )
    tracer = provider.get_tracer("costspan.instrumentation")

    def call() -> None:
        client.messages.create(model="claude-sonnet-4-6", max_tokens=200, messages=[{"role": "user", "content": "hi"}])

    if wrap:  # a wrapper span that carries the same usage, as costspan's instrumentation would
        with tracer.start_as_current_span("chat claude-sonnet-4-6") as span:
            call()
            span.set_attributes(
                {
                    "costspan.record.source": "costspan",
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "anthropic",
                    "gen_ai.request.model": "claude-sonnet-4-6",
                    "gen_ai.usage.input_tokens": 1350,
                    "gen_ai.usage.output_tokens": 120,
                    "gen_ai.usage.cache_read.input_tokens": 1000,
                    "gen_ai.usage.cache_write.input_tokens": 300,
                    "costspan.tenant.id": "acme",
                }
            )
    else:
        call()
    client.close()
    provider.shutdown()
    return list(exporter.get_finished_spans())


def test_anthropic_sdk_native_span_input_includes_cache_tokens(fake_anthropic: str, pricer: Pricer) -> None:
    (span,) = _anthropic_spans(fake_anthropic, wrap=False)
    assert span.name == "anthropic.messages.create"
    assert span.attributes is not None
    assert span.attributes["gen_ai.usage.input_tokens"] == 1350  # the SDK already adds the cache tokens
    view = span_view(span)
    assert view is not None
    record = Normalizer(pricer).normalize(view)
    assert record is not None
    assert record.tokens == TokenCounts(input=1350, output=120, cache_read=1000, cache_write=300, cache_write_1h=100)
    assert (record.provider, record.model, record.service, record.cost_status) == (
        "anthropic",
        "claude-sonnet-4-6",
        "bot",
        "priced",
    )
    assert record.source == "com.anthropic.sdk.python"


def test_anthropic_native_span_inside_a_costspan_wrapper_yields_one_record(fake_anthropic: str, pricer: Pricer) -> None:
    spans = _anthropic_spans(fake_anthropic, wrap=True)
    assert sorted(s.name for s in spans) == ["anthropic.messages.create", "chat claude-sonnet-4-6"]
    normalizer = Normalizer(pricer)
    records: list[CallRecord] = []
    for span in spans:
        view = span_view(span)
        assert view is not None
        record = normalizer.normalize(view)
        assert record is not None
        records.append(record)
    result = Deduplicator().filter([call_key(r) for r in records])
    (kept,) = (records[i] for i in result.kept)
    assert (kept.source, kept.tenant, result.duplicate_calls) == ("costspan", "acme", 1)


_NON_OPTIONAL_KEYS = sorted(WANTED_KEYS - _OPTIONAL_KEYS)
_VALUES = st.one_of(
    st.sampled_from(["", "chat", "openai", "anthropic", "gpt-4o", "claude-sonnet-4-6", "true", "12", "-4"]),
    st.integers(min_value=-5, max_value=5000),
    st.floats(min_value=0, max_value=5000, allow_nan=False),
    st.booleans(),
)


@settings(max_examples=400, deadline=None)
@given(
    attrs=st.dictionaries(st.sampled_from(_NON_OPTIONAL_KEYS), _VALUES, max_size=10),
    resource=st.dictionaries(
        st.sampled_from(["service.name", "costspan.tenant.id", "workflow.id", "user.id", "session.id"]),
        st.sampled_from(["", "svc", "acme", "wf", "u1"]),
        max_size=5,
    ),
    status_error=st.booleans(),
)
def test_a_span_without_the_rarer_keys_gets_exactly_the_defaults_the_general_reading_gives(
    attrs: dict[str, Any], resource: dict[str, Any], status_error: bool
) -> None:
    attrs = {"gen_ai.request.model": "gpt-4o", **attrs}
    normalizer = Normalizer(default_pricer(), default_tenant="dt")
    fast = normalizer.normalize(_view(attrs, resource=resource, status_error=status_error))
    # a rarer key whose value is never read (not a string) sends the span down the general reading
    general = normalizer.normalize(
        _view({**attrs, "costspan.budget.reservation_id": 0}, resource=dict(resource), status_error=status_error)
    )
    assert fast == general


def test_the_normalizer_builds_its_record_from_locals_named_as_the_fields() -> None:
    """The record is one tuple (keywords cost a microsecond a span): each value the local named as its field."""
    tree = ast.parse(inspect.getsource(normalize_module))
    built = [
        node.args[1]
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "_new_tuple"
        and isinstance(node.args[0], ast.Name)
        and node.args[0].id == "CallRecord"
    ]
    assert len(built) == 1 and isinstance(built[0], ast.Tuple)
    assert [elt.id if isinstance(elt, ast.Name) else ast.dump(elt) for elt in built[0].elts] == list(CallRecord._fields)
