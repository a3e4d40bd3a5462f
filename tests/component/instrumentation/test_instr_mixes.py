"""Exactly one priced record per LLM call, whatever mix of instrumentations is active."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor
from opentelemetry.sdk.metrics.export import HistogramDataPoint
from opentelemetry.sdk.trace import ReadableSpan

from costspan.instrumentation import attribute
from costspan.instrumentation import attributes as attr
from costspan.pricing import Pricer, Usage
from tests.support.fake_provider import FakeProvider, FakeUsage
from tests.support.spans import Otel

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]


def call_spans(otel: Otel) -> list[ReadableSpan]:
    """Spans that are an LLM call record (ours, or a peer's that costspan priced)."""
    return [s for s in otel.spans() if attr.GEN_AI_OPERATION_NAME in (s.attributes or {})]


def priced(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if attr.COST_USD in (s.attributes or {})]


@pytest.fixture
def genai_openai(otel: Otel) -> Iterator[None]:
    inst = OpenAIInstrumentor()
    inst.instrument(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    try:
        yield
    finally:
        inst.uninstrument()


@pytest.fixture
def httpx2_instrumentor(otel: Otel) -> Iterator[None]:
    inst = HTTPX2ClientInstrumentor()
    inst.instrument(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    try:
        yield
    finally:
        inst.uninstrument()


def native_anthropic(fake: FakeProvider, otel: Otel) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=fake.url(), api_key="k", max_retries=0, open_telemetry={"tracer_provider": otel.tracer_provider}
    )


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_native_span_is_enriched_not_duplicated(
    otel: Otel, fake: FakeProvider, pricer: Pricer, stream: bool
) -> None:
    fake.usage = FakeUsage(input=1000, output=200, cache_read=100)
    with native_anthropic(fake, otel) as c, attribute(tenant="acme", workflow="wf-1"):
        if stream:
            with c.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=MESSAGES) as s:
                s.get_final_message()
        else:
            c.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=MESSAGES)
    (span,) = call_spans(otel)
    assert span.name == "anthropic.messages.create"  # the SDK's own span, no second one
    a = span.attributes or {}
    assert attr.RECORD_SOURCE not in a
    assert a[attr.ENRICHED] is True
    assert a[attr.TENANT_ID] == "acme" and a[attr.WORKFLOW_ID] == "wf-1"
    b = pricer.price_call(
        "claude-haiku-4-5", Usage(input_tokens=1000, output_tokens=200, cache_read_tokens=100), provider="anthropic"
    )
    assert a[attr.COST_USD] == float(b.total or 0)
    assert a[attr.COST_STATUS] == attr.STATUS_PRICED
    assert a[attr.GEN_AI_USAGE_OUTPUT_TOKENS] == 200


@pytest.mark.parametrize("stream", [False, True])
def test_genai_openai_span_is_enriched_not_duplicated(
    otel: Otel, fake: FakeProvider, genai_openai: None, stream: bool
) -> None:
    fake.usage = FakeUsage(input=1000, output=200)
    with openai.OpenAI(base_url=fake.url("/v1"), api_key="k", max_retries=0) as c, attribute(user="u-7"):
        if stream:
            chunks = list(c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
            assert all(ch.usage is None for ch in chunks)  # the injected usage chunk stays hidden
        else:
            c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    (span,) = call_spans(otel)
    a = span.attributes or {}
    assert attr.RECORD_SOURCE not in a
    assert a[attr.ENRICHED] is True
    assert a[attr.USER_ID] == "u-7"
    assert a[attr.GEN_AI_USAGE_INPUT_TOKENS] == 1000  # costspan filled the usage a stream hid from the peer
    assert a[attr.COST_STATUS] == attr.STATUS_PRICED
    assert len(priced(call_spans(otel))) == 1


def test_httpx_instrumentor_span_nests_under_costspan_span(
    otel: Otel, fake: FakeProvider, httpx2_instrumentor: None
) -> None:
    with openai.OpenAI(base_url=fake.url("/v1"), api_key="k", max_retries=0) as c:
        c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    (ours,) = call_spans(otel)
    (http_span,) = [s for s in otel.spans() if s is not ours]
    assert http_span.parent is not None and http_span.parent.span_id == ours.context.span_id
    assert (ours.attributes or {})[attr.RECORD_SOURCE] == attr.RECORD_SOURCE_HTTPX2
    assert "traceparent" in fake.requests[-1].headers
    assert len(priced(call_spans(otel))) == 1


def test_everything_at_once(otel: Otel, fake: FakeProvider, genai_openai: None, httpx2_instrumentor: None) -> None:
    with native_anthropic(fake, otel) as ac, openai.OpenAI(base_url=fake.url("/v1"), api_key="k", max_retries=0) as oc:
        ac.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=MESSAGES)
        list(oc.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    spans = call_spans(otel)
    assert sorted(s.name for s in spans) == ["anthropic.messages.create", "chat gpt-4o"]
    assert len(priced(spans)) == 2
    assert all((s.attributes or {}).get(attr.ENRICHED) is True for s in spans)


def test_costspan_alone_records_metrics_peers_do_not_double(otel: Otel, fake: FakeProvider) -> None:
    with openai.OpenAI(base_url=fake.url("/v1"), api_key="k", max_retries=0) as c:
        c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    data = otel.metrics.get_metrics_data()
    assert data is not None
    points: dict[str, list[HistogramDataPoint]] = {
        m.name: [p for p in m.data.data_points if isinstance(p, HistogramDataPoint)]
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        if sm.scope.name == "costspan.instrumentation"
        for m in sm.metrics
    }
    tokens = {(p.attributes or {})["gen_ai.token.type"]: p for p in points[attr.GEN_AI_CLIENT_TOKEN_USAGE]}
    assert tokens["input"].sum == 100 and tokens["output"].sum == 20
    assert list(tokens["input"].explicit_bounds)[:3] == [1, 4, 16]
    (duration,) = points[attr.GEN_AI_CLIENT_OPERATION_DURATION]
    assert duration.count == 1 and list(duration.explicit_bounds)[:2] == [0.01, 0.02]
    assert dict(duration.attributes or {}) == {
        attr.GEN_AI_OPERATION_NAME: "chat",
        attr.GEN_AI_PROVIDER_NAME: "openai",
        attr.GEN_AI_REQUEST_MODEL: "gpt-4o",
        attr.GEN_AI_RESPONSE_MODEL: "gpt-4o",
        attr.SERVER_ADDRESS: "127.0.0.1",
        attr.SERVER_PORT: fake.port,
    }


@pytest.mark.parametrize(
    ("name", "attributes", "is_peer"),
    [
        ("chat gpt-4o", {attr.GEN_AI_OPERATION_NAME: "chat"}, True),
        ("openai.chat", {attr.GEN_AI_SYSTEM: "openai"}, True),
        ("invoke_agent planner", {attr.GEN_AI_OPERATION_NAME: "invoke_agent"}, False),
        ("chat handler", {}, False),  # a user's own span named like a call is not a peer
    ],
)
def test_only_model_call_spans_are_peers(
    otel: Otel, fake: FakeProvider, name: str, attributes: dict[str, Any], is_peer: bool
) -> None:
    tracer = otel.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span(name, attributes=attributes), httpx.Client() as c:
        c.post(fake.url("/v1/chat/completions"), json={"model": "gpt-4o", "messages": MESSAGES})
    (outer,) = [s for s in otel.spans() if s.name == name]
    assert ((outer.attributes or {}).get(attr.ENRICHED) is True) is is_peer
    assert len(priced(list(otel.spans()))) == 1
