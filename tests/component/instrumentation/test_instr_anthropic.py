"""The real anthropic 2.x SDK (httpx2) against the fake provider, with its own spans off."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import pytest

from costspan.instrumentation import attributes as attr
from costspan.instrumentation._tokens import TokenCounter
from costspan.pricing import Pricer, Usage
from tests.support.fake_provider import Behavior, FakeProvider, FakeUsage
from tests.support.spans import Otel, cost_attrs, plain

MODEL = "claude-sonnet-4-6"
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]
# Anthropic reports input EXCLUDING cache tokens; costspan writes the semconv-inclusive sum.
USAGE = FakeUsage(input=1300, output=200, cache_read=200, cache_write=100, cache_write_1h=40)
PRICED = Usage(
    input_tokens=1300, output_tokens=200, cache_read_tokens=200, cache_write_tokens=100, cache_write_1h_tokens=40
)


def client(fake: FakeProvider, **kw: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=fake.url(), api_key="k", max_retries=kw.pop("max_retries", 0), open_telemetry=False, **kw
    )


def expected(fake: FakeProvider, pricer: Pricer, stream: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        attr.GEN_AI_OPERATION_NAME: "chat",
        attr.GEN_AI_PROVIDER_NAME: "anthropic",
        attr.GEN_AI_REQUEST_MODEL: MODEL,
        attr.GEN_AI_REQUEST_MAX_TOKENS: 256,
        **({attr.GEN_AI_REQUEST_STREAM: True} if stream else {}),  # set only for a streaming request
        attr.SERVER_ADDRESS: "127.0.0.1",
        attr.SERVER_PORT: fake.port,
        attr.RECORD_SOURCE: attr.RECORD_SOURCE_HTTPX2,
        attr.GEN_AI_RESPONSE_MODEL: MODEL,
        attr.GEN_AI_RESPONSE_ID: "msg_fake1",
        attr.GEN_AI_RESPONSE_FINISH_REASONS: ("end_turn",),
        attr.GEN_AI_USAGE_INPUT_TOKENS: 1300,
        attr.GEN_AI_USAGE_OUTPUT_TOKENS: 200,
        attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 200,
        attr.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS: 100,
        attr.ANTHROPIC_CACHE_WRITE_1H: 40,
        **cost_attrs(pricer, MODEL, "anthropic", PRICED),
    }
    if stream:
        out[attr.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = "ttfc"
    return out


def test_messages_sync(otel: Otel, fake: FakeProvider, pricer: Pricer) -> None:
    fake.usage = USAGE
    with client(fake) as c:
        msg = c.messages.create(model=MODEL, max_tokens=256, messages=MESSAGES)
    assert msg.usage.input_tokens == 1000  # the SDK sees the provider's exclusive count, untouched
    span = otel.span()
    assert span.name == f"chat {MODEL}"
    assert plain(span) == expected(fake, pricer, stream=False)


def test_messages_stream_sync(otel: Otel, fake: FakeProvider, pricer: Pricer) -> None:
    fake.usage = USAGE
    with client(fake) as c, c.messages.stream(model=MODEL, max_tokens=256, messages=MESSAGES) as stream:
        final = stream.get_final_message()
    assert final.usage.output_tokens == 200
    assert plain(otel.span()) == expected(fake, pricer, stream=True)


@pytest.mark.anyio
async def test_messages_stream_async(otel: Otel, fake: FakeProvider, pricer: Pricer) -> None:
    fake.usage = USAGE
    async with anthropic.AsyncAnthropic(base_url=fake.url(), api_key="k", max_retries=0, open_telemetry=False) as c:
        stream = await c.messages.create(model=MODEL, max_tokens=256, messages=MESSAGES, stream=True)
        kinds = [event.type async for event in stream]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert plain(otel.span()) == expected(fake, pricer, stream=True)


@pytest.mark.anyio
async def test_messages_async_gzip(otel: Otel, fake: FakeProvider, pricer: Pricer) -> None:
    fake.usage = USAGE
    fake.script(Behavior(encoding="gzip"))
    async with anthropic.AsyncAnthropic(base_url=fake.url(), api_key="k", max_retries=0, open_telemetry=False) as c:
        await c.messages.create(model=MODEL, max_tokens=256, messages=MESSAGES)
    assert plain(otel.span()) == expected(fake, pricer, stream=False)


def test_count_tokens_is_not_a_billed_call(otel: Otel, fake: FakeProvider) -> None:
    with client(fake) as c:
        assert c.messages.count_tokens(model=MODEL, messages=MESSAGES).input_tokens == 100
    assert otel.spans() == ()


def test_cut_stream_keeps_exact_input_and_estimates_output(
    otel: Otel, fake: FakeProvider, tokens: TokenCounter
) -> None:
    assert tokens.loaded.wait(30)
    fake.usage = USAGE
    fake.script(Behavior(cut_after=6))  # message_start, block start, ping, 3 text deltas
    # what the SDK raises uninstrumented too: anthropic up to 2.16 lets httpx2's error through, 2.17 wraps it
    with client(fake) as c, pytest.raises((httpx2.RemoteProtocolError, anthropic.APIConnectionError)):
        list(c.messages.create(model=MODEL, max_tokens=256, messages=MESSAGES, stream=True))
    a = otel.span().attributes or {}
    assert a[attr.ERROR_TYPE] == "RemoteProtocolError"
    assert a[attr.GEN_AI_USAGE_INPUT_TOKENS] == 1300  # from message_start: exact
    # "Hello from the" is 3 o200k tokens; a Claude estimate leans high: ceil(3 x 1.35) = 5
    assert a[attr.GEN_AI_USAGE_OUTPUT_TOKENS] == 5
    assert a[attr.TOKENS_ESTIMATED] is True
    assert a[attr.TOKENS_ESTIMATOR] == "tiktoken:o200k_base*1.35"
    assert a[attr.COST_STATUS] == attr.STATUS_ESTIMATED


def test_mid_stream_error_event(otel: Otel, fake: FakeProvider) -> None:
    fake.script(Behavior(error_event=True))
    with client(fake) as c, pytest.raises(anthropic.APIStatusError):
        list(c.messages.create(model=MODEL, max_tokens=256, messages=MESSAGES, stream=True))
    assert (otel.span().attributes or {})[attr.ERROR_TYPE] == "overloaded_error"


def test_529_retried_then_success(otel: Otel, fake: FakeProvider) -> None:
    fake.script(Behavior(status=529))
    with client(fake, max_retries=1) as c:
        c.messages.create(model=MODEL, max_tokens=256, messages=MESSAGES)
    failed, ok = otel.spans()
    assert (failed.attributes or {})[attr.ERROR_TYPE] == "529"
    assert (ok.attributes or {})[attr.COST_STATUS] == attr.STATUS_PRICED


def test_pre_call_estimate_leans_high_for_claude(otel: Otel, fake: FakeProvider, tokens: TokenCounter) -> None:
    """A budget's pre-call estimate for Claude leans high: o200k's count x 1.35, rounded up, + 4 per message."""
    assert tokens.loaded.wait(30)
    seen: list[int | None] = []
    otel.instrumentor.pre_send_hooks.append(lambda info: seen.append(info.estimate_input_tokens()))
    with client(fake) as c:
        c.messages.create(model=MODEL, max_tokens=256, messages=MESSAGES)
    assert tokens.count("Say hello")[0] == 2
    assert seen == [3 + 4]  # ceil(2 x 1.35) = 3
