"""The real openai 3.x SDK (httpx2) against the fake provider: one exact, priced span per attempt."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from costspan.instrumentation import attributes as attr
from costspan.pricing import Pricer, Usage
from tests.support.fake_provider import Behavior, FakeProvider, FakeUsage
from tests.support.spans import Otel, cost_attrs, plain

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]
USAGE = FakeUsage(input=1000, output=200, cache_read=100, reasoning=50)
PRICED_USAGE = Usage(input_tokens=1000, output_tokens=200, cache_read_tokens=100, reasoning_tokens=50)


def client(fake: FakeProvider, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.url("/v1"), api_key="test-key", max_retries=kw.pop("max_retries", 0), **kw)


def base_attrs(fake: FakeProvider, model: str, stream: bool, operation: str = "chat") -> dict[str, Any]:
    return {
        attr.GEN_AI_OPERATION_NAME: operation,
        attr.GEN_AI_PROVIDER_NAME: "openai",
        attr.GEN_AI_REQUEST_MODEL: model,
        **({attr.GEN_AI_REQUEST_STREAM: True} if stream else {}),  # set only for a streaming request
        attr.SERVER_ADDRESS: "127.0.0.1",
        attr.SERVER_PORT: fake.port,
        attr.RECORD_SOURCE: attr.RECORD_SOURCE_HTTPX2,
    }


def usage_attrs(u: FakeUsage) -> dict[str, Any]:
    out: dict[str, Any] = {attr.GEN_AI_USAGE_INPUT_TOKENS: u.input, attr.GEN_AI_USAGE_OUTPUT_TOKENS: u.output}
    if u.cache_read:
        out[attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = u.cache_read
    if u.reasoning:
        out[attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = u.reasoning
    return out


def test_chat_sync_exact_attributes(otel: Otel, fake: FakeProvider, pricer: Pricer) -> None:
    fake.usage = USAGE
    with client(fake) as c:
        resp = c.chat.completions.create(model="gpt-4o", messages=MESSAGES, temperature=0.5, max_tokens=300)
    assert resp.choices[0].message.content == "Hello from the fake provider."
    span = otel.span()
    assert span.name == "chat gpt-4o"
    assert span.kind.name == "CLIENT"
    assert plain(span) == {
        **base_attrs(fake, "gpt-4o", False),
        attr.GEN_AI_REQUEST_MAX_TOKENS: 300,
        attr.GEN_AI_REQUEST_TEMPERATURE: 0.5,
        attr.GEN_AI_RESPONSE_MODEL: "gpt-4o",
        attr.GEN_AI_RESPONSE_ID: "chatcmpl-fake1",
        attr.GEN_AI_RESPONSE_FINISH_REASONS: ("stop",),
        **usage_attrs(USAGE),
        **cost_attrs(pricer, "gpt-4o", "openai", PRICED_USAGE),
    }
    # The request reached the provider unchanged.
    assert fake.requests[-1].json == {
        "messages": MESSAGES,
        "model": "gpt-4o",
        "max_tokens": 300,
        "temperature": 0.5,
    }


def test_gpt4o_cost_is_pinned(otel: Otel, fake: FakeProvider) -> None:
    """$2.50 / $10 per M, cached input $1.25 per M: 900×2.5 + 100×1.25 + 200×10 per M = 0.004375."""
    fake.usage = USAGE
    with client(fake) as c:
        c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    a = otel.span().attributes or {}
    assert a[attr.COST_USD] == pytest.approx(0.004375, abs=1e-12)
    assert a[attr.COST_INPUT_USD] == pytest.approx(0.00225, abs=1e-12)
    assert a[attr.COST_CACHE_READ_USD] == pytest.approx(0.000125, abs=1e-12)
    assert a[attr.COST_OUTPUT_USD] == pytest.approx(0.002, abs=1e-12)


def test_zero_cost_parts_and_stream_false_are_not_written(otel: Otel, fake: FakeProvider) -> None:
    """An attribute that would only say 0 or false is left out: no cache tokens, no cache cost parts; a
    request that is not streaming has no gen_ai.request.stream (semconv: set if and only if streaming)."""
    fake.usage = FakeUsage(input=1000, output=200)
    with client(fake) as c:
        c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    a = otel.span().attributes or {}
    assert a[attr.COST_USD] == pytest.approx(0.0045, abs=1e-12)  # 1000×2.5 + 200×10 per M
    assert a[attr.COST_INPUT_USD] == pytest.approx(0.0025, abs=1e-12)
    assert a[attr.COST_OUTPUT_USD] == pytest.approx(0.002, abs=1e-12)
    absent = (
        attr.COST_CACHE_READ_USD,
        attr.COST_CACHE_WRITE_USD,
        attr.COST_OTHER_USD,
        attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
        attr.GEN_AI_REQUEST_STREAM,
    )
    assert [key for key in absent if key in a] == []


@pytest.mark.anyio
async def test_chat_async(otel: Otel, fake: FakeProvider, pricer: Pricer) -> None:
    fake.usage = USAGE
    async with openai.AsyncOpenAI(base_url=fake.url("/v1"), api_key="k", max_retries=0) as c:
        await c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert plain(otel.span()) == {
        **base_attrs(fake, "gpt-4o-mini", False),
        attr.GEN_AI_RESPONSE_MODEL: "gpt-4o-mini",
        attr.GEN_AI_RESPONSE_ID: "chatcmpl-fake1",
        attr.GEN_AI_RESPONSE_FINISH_REASONS: ("stop",),
        **usage_attrs(USAGE),
        **cost_attrs(pricer, "gpt-4o-mini", "openai", PRICED_USAGE),
    }


def _chunks_uninstrumented(fake: FakeProvider, otel: Otel) -> list[dict[str, Any]]:
    otel.instrumentor.uninstrument()
    try:
        with client(fake) as c:
            return [ch.model_dump() for ch in c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)]
    finally:
        otel.instrumentor.instrument(**otel.kwargs)


def test_stream_usage_injected_and_hidden(otel: Otel, fake: FakeProvider, pricer: Pricer) -> None:
    fake.usage = USAGE
    with client(fake) as c:
        chunks = [ch.model_dump() for ch in c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)]
    # costspan asked for the usage chunk ...
    assert fake.requests[-1].json["stream_options"] == {"include_usage": True}
    # ... and the application saw exactly the chunks it sees uninstrumented.
    assert [ch["choices"] for ch in chunks] == [ch["choices"] for ch in _chunks_uninstrumented(fake, otel)]
    assert all(ch["usage"] is None for ch in chunks)
    assert "stream_options" not in fake.requests[-1].json
    (span,) = [s for s in otel.spans() if s.attributes and s.attributes.get(attr.GEN_AI_REQUEST_STREAM)]
    assert plain(span) == {
        **base_attrs(fake, "gpt-4o", True),
        attr.GEN_AI_RESPONSE_MODEL: "gpt-4o",
        attr.GEN_AI_RESPONSE_ID: "chatcmpl-fake1",
        attr.GEN_AI_RESPONSE_FINISH_REASONS: ("stop",),
        attr.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: "ttfc",
        **usage_attrs(USAGE),
        **cost_attrs(pricer, "gpt-4o", "openai", PRICED_USAGE),
    }


def test_injection_adds_one_key_to_the_callers_bytes(otel: Otel, fake: FakeProvider) -> None:
    """The usage request is spliced into the body as sent, not parsed and re-serialized."""
    with client(fake) as c:
        list(c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    injected = fake.requests[-1].body
    _chunks_uninstrumented(fake, otel)
    original = fake.requests[-1].body
    assert original[:1] == b"{"
    assert injected == b'{"stream_options":{"include_usage":true},' + original[1:]


def test_stream_caller_asked_for_usage_keeps_the_chunk(otel: Otel, fake: FakeProvider) -> None:
    fake.usage = USAGE
    with client(fake) as c:
        stream = c.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 1000
    assert otel.span().attributes[attr.GEN_AI_USAGE_INPUT_TOKENS] == 1000  # type: ignore[index]


@pytest.mark.parametrize("instrument_kwargs", [{"inject_stream_usage": False}])
def test_stream_without_injection_is_estimated(otel: Otel, fake: FakeProvider, tokens: Any) -> None:
    assert tokens.loaded.wait(30)
    with client(fake) as c:
        list(c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    assert "stream_options" not in fake.requests[-1].json
    a = otel.span().attributes or {}
    assert a[attr.TOKENS_ESTIMATED] is True
    assert a[attr.TOKENS_ESTIMATOR] == "tiktoken:o200k_base"
    assert a[attr.COST_STATUS] == attr.STATUS_ESTIMATED
    # "Say hello" is 2 tokens + 4 per message; "Hello from the fake provider." is 6 tokens.
    assert (a[attr.GEN_AI_USAGE_INPUT_TOKENS], a[attr.GEN_AI_USAGE_OUTPUT_TOKENS]) == (6, 6)
    cost = a[attr.COST_USD]
    assert isinstance(cost, float) and cost > 0


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate"])
def test_compressed_stream_and_body(otel: Otel, fake: FakeProvider, encoding: str) -> None:
    fake.usage = USAGE
    fake.script(Behavior(encoding=encoding), Behavior(encoding=encoding))
    with client(fake) as c:
        chunks = list(c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
        resp = c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == resp.choices[0].message.content
    assert len(chunks) == 8  # role + 6 text chunks + finish; the usage-only chunk is hidden
    for span in otel.spans():
        assert (span.attributes or {})[attr.GEN_AI_USAGE_INPUT_TOKENS] == 1000
        assert (span.attributes or {})[attr.COST_STATUS] == attr.STATUS_PRICED


def test_retry_then_success_gives_one_error_span_and_one_priced(otel: Otel, fake: FakeProvider) -> None:
    fake.script(Behavior(status=500))
    with client(fake, max_retries=2) as c:
        c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    failed, ok = otel.spans()
    assert (failed.attributes or {})[attr.ERROR_TYPE] == "500"
    assert failed.status.status_code.name == "ERROR"
    assert attr.COST_USD not in (failed.attributes or {}) and attr.COST_STATUS not in (failed.attributes or {})
    assert attr.GEN_AI_USAGE_INPUT_TOKENS not in (failed.attributes or {})
    assert (ok.attributes or {})[attr.COST_STATUS] == attr.STATUS_PRICED
    assert len(fake.requests) == 2


@pytest.mark.parametrize("status", [400, 429, 503])
def test_error_status_reaches_caller_unchanged(otel: Otel, fake: FakeProvider, status: int) -> None:
    fake.script(Behavior(status=status))
    with client(fake) as c, pytest.raises(openai.APIStatusError) as info:
        c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert info.value.status_code == status
    assert plain(otel.span()) == {
        **base_attrs(fake, "gpt-4o", False),
        attr.ERROR_TYPE: str(status),
        attr.CALL_OUTCOME: attr.OUTCOME_ERROR,
    }


def test_timeout_is_an_error_span(otel: Otel, fake: FakeProvider) -> None:
    fake.script(Behavior(delay=0.5))
    with client(fake, timeout=0.1) as c, pytest.raises(openai.APITimeoutError):
        c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert plain(otel.span()) == {
        **base_attrs(fake, "gpt-4o", False),
        attr.ERROR_TYPE: "ReadTimeout",
        attr.CALL_OUTCOME: attr.OUTCOME_ERROR,
    }


def test_stream_cut_by_the_server_is_priced_estimated(otel: Otel, fake: FakeProvider, tokens: Any) -> None:
    assert tokens.loaded.wait(30)
    fake.script(Behavior(cut_after=4))  # role chunk + 3 text chunks, then the connection drops
    with client(fake) as c:
        stream = c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIConnectionError):
            list(stream)
    a = otel.span().attributes or {}
    assert a[attr.ERROR_TYPE] == "RemoteProtocolError"
    assert a[attr.TOKENS_ESTIMATED] is True
    assert a[attr.COST_STATUS] == attr.STATUS_ESTIMATED
    assert a[attr.GEN_AI_USAGE_OUTPUT_TOKENS] == 3  # "Hello from the"
    assert a[attr.GEN_AI_USAGE_INPUT_TOKENS] == 6


def test_stream_closed_early_by_the_app_is_estimated(otel: Otel, fake: FakeProvider, tokens: Any) -> None:
    assert tokens.loaded.wait(30)
    fake.script(Behavior(chunk_delay=0.01))
    with client(fake) as c:
        stream = c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        for n, _ in enumerate(stream):
            if n == 2:
                break
        stream.close()
    a = otel.span().attributes or {}
    assert attr.ERROR_TYPE not in a
    assert a[attr.TOKENS_ESTIMATED] is True
    assert a[attr.COST_STATUS] == attr.STATUS_ESTIMATED
    out = a[attr.GEN_AI_USAGE_OUTPUT_TOKENS]
    assert isinstance(out, int) and 1 <= out <= 3


def test_responses_api_sync_and_stream(otel: Otel, fake: FakeProvider, pricer: Pricer) -> None:
    fake.usage = USAGE
    with client(fake) as c:
        r = c.responses.create(model="gpt-4o", input="Say hello")
        events = list(c.responses.create(model="gpt-4o", input="Say hello", stream=True))
    assert r.output_text == "Hello from the fake provider."
    assert events[-1].type == "response.completed"
    expected_cost = cost_attrs(pricer, "gpt-4o", "openai", PRICED_USAGE)
    plain_span, stream_span = otel.spans()
    assert plain(plain_span) == {
        **base_attrs(fake, "gpt-4o", False),
        attr.GEN_AI_RESPONSE_MODEL: "gpt-4o",
        attr.GEN_AI_RESPONSE_ID: "resp_fake1",
        attr.GEN_AI_RESPONSE_FINISH_REASONS: ("completed",),
        **usage_attrs(USAGE),
        **expected_cost,
    }
    assert plain(stream_span) == {
        **base_attrs(fake, "gpt-4o", True),
        attr.GEN_AI_RESPONSE_MODEL: "gpt-4o",
        attr.GEN_AI_RESPONSE_ID: "resp_fake1",
        attr.GEN_AI_RESPONSE_FINISH_REASONS: ("completed",),
        attr.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: "ttfc",
        **usage_attrs(USAGE),
        **expected_cost,
    }
    assert "stream_options" not in (fake.requests[-1].json or {})  # the responses API always reports usage


def test_embeddings_and_legacy_completions(otel: Otel, fake: FakeProvider, pricer: Pricer) -> None:
    fake.usage = FakeUsage(input=12, output=0)
    with client(fake) as c:
        emb = c.embeddings.create(model="text-embedding-3-small", input="hello")
        fake.usage = FakeUsage(input=10, output=6)
        c.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hello")
    assert len(emb.data[0].embedding) == 3
    emb_span, cmpl_span = otel.spans()
    assert emb_span.name == "embeddings text-embedding-3-small"
    assert plain(emb_span) == {
        **base_attrs(fake, "text-embedding-3-small", False, "embeddings"),
        attr.GEN_AI_RESPONSE_MODEL: "text-embedding-3-small",
        attr.GEN_AI_USAGE_INPUT_TOKENS: 12,
        attr.GEN_AI_USAGE_OUTPUT_TOKENS: 0,
        **cost_attrs(pricer, "text-embedding-3-small", "openai", Usage(input_tokens=12)),
    }
    assert cmpl_span.name == "text_completion gpt-3.5-turbo-instruct"
    assert (cmpl_span.attributes or {})[attr.COST_USD] == pytest.approx(
        float(pricer.price_call("gpt-3.5-turbo-instruct", Usage(input_tokens=10, output_tokens=6)).total or 0)
    )


def test_azure_deployment_path(otel: Otel, fake: FakeProvider, pricer: Pricer) -> None:
    fake.usage = USAGE
    with openai.AzureOpenAI(
        azure_endpoint=fake.url(), api_key="k", api_version="2024-10-21", azure_deployment="prod-4o", max_retries=0
    ) as c:
        c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    req = fake.requests[-1]
    assert req.path == "/openai/deployments/prod-4o/chat/completions"
    a = plain(otel.span())
    assert a[attr.GEN_AI_PROVIDER_NAME] == "azure.ai.openai"
    assert a[attr.AZURE_DEPLOYMENT] == "prod-4o"
    assert a[attr.COST_USD] == cost_attrs(pricer, "gpt-4o", "azure.ai.openai", PRICED_USAGE)[attr.COST_USD]


def test_mid_stream_provider_error_event(otel: Otel, fake: FakeProvider) -> None:
    fake.script(Behavior(error_event=True))
    with client(fake) as c, pytest.raises(openai.APIError):
        list(c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    a = otel.span().attributes or {}
    assert a[attr.ERROR_TYPE] == "server_error"
    assert a[attr.TOKENS_ESTIMATED] is True


@pytest.mark.anyio
async def test_async_stream_injected_and_async_cut(otel: Otel, fake: FakeProvider, pricer: Pricer) -> None:
    fake.usage = USAGE
    fake.script(Behavior(), Behavior(cut_after=3))
    async with openai.AsyncOpenAI(base_url=fake.url("/v1"), api_key="k", max_retries=0) as c:
        stream = await c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        chunks = [ch async for ch in stream]
        cut = await c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIConnectionError):
            async for _ in cut:
                pass
    assert len(chunks) == 8 and all(ch.usage is None for ch in chunks)
    full, broken = otel.spans()
    assert plain(full) == {
        **base_attrs(fake, "gpt-4o", True),
        attr.GEN_AI_RESPONSE_MODEL: "gpt-4o",
        attr.GEN_AI_RESPONSE_ID: "chatcmpl-fake1",
        attr.GEN_AI_RESPONSE_FINISH_REASONS: ("stop",),
        attr.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: "ttfc",
        **usage_attrs(USAGE),
        **cost_attrs(pricer, "gpt-4o", "openai", PRICED_USAGE),
    }
    b = broken.attributes or {}
    assert b[attr.ERROR_TYPE] == "RemoteProtocolError" and b[attr.COST_STATUS] == attr.STATUS_ESTIMATED


@pytest.mark.anyio
async def test_async_timeout_and_early_break(otel: Otel, fake: FakeProvider) -> None:
    fake.script(Behavior(delay=0.5), Behavior(chunk_delay=0.01))
    async with openai.AsyncOpenAI(base_url=fake.url("/v1"), api_key="k", max_retries=0, timeout=0.2) as c:
        with pytest.raises(openai.APITimeoutError):
            await c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        stream = await c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        async for _ in stream:
            break
        await stream.close()
    timed_out, closed = otel.spans()
    assert (timed_out.attributes or {})[attr.ERROR_TYPE] == "ReadTimeout"
    c_attrs = closed.attributes or {}
    assert attr.ERROR_TYPE not in c_attrs and c_attrs[attr.TOKENS_ESTIMATED] is True


def test_public_surface_is_all() -> None:
    import costspan.instrumentation as inst

    public = {n for n in dir(inst) if not n.startswith("_")} - {"attributes", "package"}
    assert set(inst.__all__) == public
