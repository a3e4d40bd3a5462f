"""Opt-in message content (OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT), with the real SDKs."""

from __future__ import annotations

import json
from typing import Any, cast

import anthropic
import openai
import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import ReadableSpan

from costspan.instrumentation import _content
from costspan.instrumentation import attributes as attr
from costspan.instrumentation._content import CAPTURE_CONTENT_ENV, capture_mode, messages_of
from costspan.instrumentation._providers import Route, Router
from costspan.instrumentation._stream import BodyTap
from costspan.pricing import Pricer
from tests.support.fake_provider import FakeProvider
from tests.support.spans import Otel, plain

CONTENT_KEYS = (attr.GEN_AI_SYSTEM_INSTRUCTIONS, attr.GEN_AI_INPUT_MESSAGES, attr.GEN_AI_OUTPUT_MESSAGES)
ANSWER = "Hello from the fake provider."
SAY_HELLO = [{"type": "text", "content": "Say hello"}]


def content(span: ReadableSpan) -> dict[str, Any]:
    """The content attributes, decoded from their JSON strings."""
    a = plain(span)
    return {k: json.loads(a[k]) for k in CONTENT_KEYS if k in a}


def without_content(span: ReadableSpan) -> dict[str, Any]:
    return {
        k: v for k, v in plain(span).items() if k not in CONTENT_KEYS and k != attr.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK
    }


def answer(reason: str) -> list[dict[str, Any]]:
    return [{"role": "assistant", "parts": [{"type": "text", "content": ANSWER}], "finish_reason": reason}]


def openai_calls(fake: FakeProvider) -> None:
    with openai.OpenAI(base_url=fake.url("/v1"), api_key="k", max_retries=0) as c:
        c.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}],
        )
        for _ in c.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Say hello"}], stream=True
        ):
            pass


def anthropic_calls(fake: FakeProvider) -> None:
    with anthropic.Anthropic(base_url=fake.url(), api_key="k", max_retries=0, open_telemetry=False) as c:
        c.messages.create(
            model="claude-haiku-4-5",
            max_tokens=64,
            system="Be brief.",
            messages=[{"role": "user", "content": "Say hello"}],
        )
        with c.messages.stream(
            model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": "Say hello"}]
        ) as stream:
            for _ in stream:
                pass


OPENAI_EXPECTED = [
    {
        attr.GEN_AI_INPUT_MESSAGES: [
            {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
            {"role": "user", "parts": SAY_HELLO},
        ],
        attr.GEN_AI_OUTPUT_MESSAGES: answer("stop"),
    },
    {  # streamed (usage injected, chunk hidden): the output is put together from the deltas
        attr.GEN_AI_INPUT_MESSAGES: [{"role": "user", "parts": SAY_HELLO}],
        attr.GEN_AI_OUTPUT_MESSAGES: answer("stop"),
    },
]
ANTHROPIC_EXPECTED = [
    {
        attr.GEN_AI_SYSTEM_INSTRUCTIONS: [{"type": "text", "content": "Be brief."}],
        attr.GEN_AI_INPUT_MESSAGES: [{"role": "user", "parts": SAY_HELLO}],
        attr.GEN_AI_OUTPUT_MESSAGES: answer("end_turn"),
    },
    {
        attr.GEN_AI_INPUT_MESSAGES: [{"role": "user", "parts": SAY_HELLO}],
        attr.GEN_AI_OUTPUT_MESSAGES: answer("end_turn"),
    },
]


def _reinstrument(otel: Otel, **kwargs: Any) -> None:
    otel.instrumentor.uninstrument()
    otel.exporter.clear()
    otel.instrumentor.instrument(**{**otel.kwargs, **kwargs})


@pytest.mark.parametrize(
    ("calls", "expected"),
    [(openai_calls, OPENAI_EXPECTED), (anthropic_calls, ANTHROPIC_EXPECTED)],
    ids=["openai", "anthropic"],
)
def test_content_on_the_span_when_asked_and_only_then(
    otel: Otel, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch, calls: Any, expected: list[dict[str, Any]]
) -> None:
    calls(fake)  # default: off
    off = otel.spans()
    assert [content(s) for s in off] == [{}, {}]

    monkeypatch.setenv(CAPTURE_CONTENT_ENV, "SPAN_ONLY")
    _reinstrument(otel)
    calls(fake)
    on = otel.spans()
    assert [content(s) for s in on] == expected
    # nothing else about the spans changed
    assert [without_content(s) for s in on] == [without_content(s) for s in off]
    assert otel.instrumentor.internal_errors == {}


def test_off_means_no_content_work_at_all(otel: Otel, fake: FakeProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_run(*args: object) -> None:
        raise AssertionError("content was assembled while capture is off")

    monkeypatch.setattr(_content, "messages_of", must_not_run)
    openai_calls(fake)
    anthropic_calls(fake)
    assert len(otel.spans()) == 4
    assert otel.instrumentor.internal_errors == {}


def test_event_only_emits_the_operation_details_event(otel: Otel, fake: FakeProvider) -> None:
    logs = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    _reinstrument(otel, capture_message_content="EVENT_ONLY", logger_provider=provider)
    openai_calls(fake)
    spans = otel.spans()
    assert [content(s) for s in spans] == [{}, {}]
    records = [r.log_record for r in logs.get_finished_logs()]
    assert [r.event_name for r in records] == [attr.GEN_AI_OPERATION_DETAILS_EVENT] * 2
    first = dict(records[0].attributes or {})
    assert first[attr.GEN_AI_INPUT_MESSAGES] == (
        {"role": "system", "parts": ({"type": "text", "content": "Be brief."},)},
        {"role": "user", "parts": ({"type": "text", "content": "Say hello"},)},
    )
    assert first[attr.GEN_AI_REQUEST_MODEL] == "gpt-4o"
    assert records[0].span_id == spans[0].context.span_id if spans[0].context else False
    provider.shutdown()


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        (None, "NO_CONTENT"),
        ("", "NO_CONTENT"),
        ("false", "NO_CONTENT"),
        ("True", "SPAN_ONLY"),
        ("1", "SPAN_ONLY"),
        (True, "SPAN_ONLY"),
        ("span_only", "SPAN_ONLY"),
        ("EVENT_ONLY", "EVENT_ONLY"),
        ("span_and_event", "SPAN_AND_EVENT"),
        ("NO_CONTENT", "NO_CONTENT"),
        ("everything", "NO_CONTENT"),
    ],
)
def test_capture_mode_values(value: object, mode: str) -> None:
    assert capture_mode(value) == mode


def _route(path: str, host: str = "api.openai.com") -> Route:
    route = Router().route(host, None, path)
    assert route is not None
    return route


def test_request_parts_tool_calls_and_media() -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is here?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "image_url", "image_url": {"url": "https://x.test/cat.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "look", "arguments": '{"x":1}'}}],
            },
            {"role": "tool", "tool_call_id": "t1", "content": "a cat"},
        ]
    }
    _, inputs, _ = messages_of(_route("/v1/chat/completions"), body, None)
    assert inputs == [
        {
            "role": "user",
            "parts": [
                {"type": "text", "content": "What is here?"},
                {"type": "blob", "modality": "image", "mime_type": "image/png", "content": "AAAA"},
                {"type": "uri", "modality": "image", "uri": "https://x.test/cat.png"},
            ],
        },
        {"role": "assistant", "parts": [{"type": "tool_call", "id": "t1", "name": "look", "arguments": {"x": 1}}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "t1", "response": "a cat"}]},
    ]
    anthropic_body = {
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "assistant", "content": [{"type": "tool_use", "id": "u1", "name": "look", "input": {"x": 1}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "u1", "content": "a cat"}]},
        ],
    }
    system, inputs, _ = messages_of(_route("/v1/messages", "api.anthropic.com"), anthropic_body, None)
    assert system == [{"type": "text", "content": "Be brief."}]
    assert inputs == [
        {"role": "assistant", "parts": [{"type": "tool_call", "id": "u1", "name": "look", "arguments": {"x": 1}}]},
        {"role": "user", "parts": [{"type": "tool_call_response", "id": "u1", "response": "a cat"}]},
    ]
    gemini_body = {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}, {"role": "model", "parts": [{"text": "Hello"}]}],
    }
    system, inputs, _ = messages_of(_route("/v1beta/models/gemini-2.5-flash:generateContent"), gemini_body, None)
    assert system == [{"type": "text", "content": "Be brief."}]
    assert [m["role"] for m in inputs or ()] == ["user", "assistant"]


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def test_streamed_tool_call_is_put_together_from_its_deltas() -> None:
    route = _route("/v1/chat/completions")
    tap = BodyTap(route, "text/event-stream", "", False, lambda t, e: None)

    def delta(d: dict[str, Any], reason: str | None = None) -> bytes:
        return _sse({"id": "c", "choices": [{"index": 0, "delta": d, "finish_reason": reason}]})

    call = {"index": 0, "id": "t1", "type": "function", "function": {"name": "look", "arguments": ""}}
    for ev in (
        delta({"role": "assistant", "content": None, "tool_calls": [call]}),
        delta({"tool_calls": [{"index": 0, "function": {"arguments": '{"x"'}}]}),
        delta({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}),
        delta({}, "tool_calls"),
        b"data: [DONE]\n\n",
    ):
        tap.feed(ev)
    tap.end_of_body()
    _, _, outputs = messages_of(route, None, tap)
    assert outputs == [
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "id": "t1", "name": "look", "arguments": {"x": 1}}],
            "finish_reason": "tool_calls",
        }
    ]


def test_the_processor_never_stores_content(otel: Otel, fake: FakeProvider, pricer: Pricer) -> None:
    from costspan.processor.ingest._normalize import Normalizer, SpanView
    from costspan.processor.store._records import record_to_json

    _reinstrument(otel, capture_message_content=True)
    openai_calls(fake)
    span = otel.spans()[0]
    assert ANSWER in str(span.attributes)
    assert span.context is not None
    view = SpanView(
        trace_id=f"{span.context.trace_id:032x}",
        span_id=f"{span.context.span_id:016x}",
        parent_span_id="",
        start_ns=span.start_time or 0,
        end_ns=span.end_time or 0,
        attributes=cast(Any, dict(span.attributes or {})),  # every attribute, content included
        resource={},
        scope_name="costspan.instrumentation",
    )
    record = Normalizer(pricer).normalize(view)
    assert record is not None
    stored = record_to_json(record)
    assert "Hello from" not in stored and "Say hello" not in stored and "Be brief" not in stored
