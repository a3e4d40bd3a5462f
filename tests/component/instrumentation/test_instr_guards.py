"""Pre-send hooks, attribution through baggage, and never breaking the host app."""

from __future__ import annotations

import asyncio
import logging
import threading
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from opentelemetry import context

from costspan.instrumentation import (
    BudgetExceededError,
    CostspanInstrumentor,
    RequestInfo,
    RequestRewrite,
    attribute,
)
from costspan.instrumentation import attributes as attr
from costspan.instrumentation._tokens import TokenCounter
from costspan.pricing import Pricer
from tests.support.fake_provider import FakeProvider
from tests.support.spans import Otel

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]


def client(fake: FakeProvider) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.url("/v1"), api_key="k", max_retries=0)


# --- pre-send hooks ----------------------------------------------------------------------------------
def test_hook_blocks_with_budget_exceeded(otel: Otel, fake: FakeProvider, tokens: TokenCounter) -> None:
    assert tokens.loaded.wait(30)
    seen: list[RequestInfo] = []

    def guard(info: RequestInfo) -> RequestRewrite | None:
        seen.append(info)
        raise BudgetExceededError("budget b-1 exhausted", budget_id="b-1", limit_usd=Decimal("10"))

    otel.instrumentor.pre_send_hooks.append(guard)
    with attribute(tenant="acme"), client(fake) as c, pytest.raises(BudgetExceededError) as info:
        c.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=50)
    assert info.value.budget_id == "b-1" and info.value.limit_usd == Decimal("10")
    assert fake.requests == []  # nothing reached the provider
    (hook_info,) = seen
    assert (hook_info.provider, hook_info.operation, hook_info.model, hook_info.max_tokens) == (
        "openai",
        "chat",
        "gpt-4o",
        50,
    )
    assert hook_info.attribution == {attr.TENANT_ID: "acme"}
    assert hook_info.estimate_input_tokens() == 6
    a = otel.span().attributes or {}
    assert a[attr.BUDGET_ACTION] == "blocked" and a[attr.BUDGET_ID] == "b-1"
    assert a[attr.ERROR_TYPE] == attr.ERROR_TYPE_BUDGET_EXCEEDED
    assert a[attr.CALL_OUTCOME] == attr.OUTCOME_BLOCKED
    assert attr.COST_USD not in a


def test_hook_rewrites_model_and_max_tokens(otel: Otel, fake: FakeProvider) -> None:
    otel.instrumentor.pre_send_hooks.append(lambda info: RequestRewrite("gpt-4o-mini", 16, "b-2:degrade"))
    with client(fake) as c:
        c.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=4000)
    assert fake.requests[-1].json == {"model": "gpt-4o-mini", "max_tokens": 16, "messages": MESSAGES}
    span = otel.span()
    a = span.attributes or {}
    assert span.name == "chat gpt-4o-mini"
    assert a[attr.GEN_AI_REQUEST_MODEL] == "gpt-4o-mini" and a[attr.GEN_AI_REQUEST_MAX_TOKENS] == 16
    assert a[attr.BUDGET_ORIGINAL_MODEL] == "gpt-4o" and a[attr.BUDGET_ORIGINAL_MAX_TOKENS] == 4000
    assert a[attr.BUDGET_ACTION] == "b-2:degrade"


def test_broken_hook_is_counted_and_the_call_goes_on(
    otel: Otel, fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(info: RequestInfo) -> None:
        raise RuntimeError("bug in a hook")

    otel.instrumentor.pre_send_hooks.append(broken)
    with caplog.at_level(logging.WARNING), client(fake) as c:
        c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert otel.instrumentor.internal_errors == {"pre_send_hook": 2}
    assert len([r for r in caplog.records if "pre_send_hook" in r.getMessage()]) == 1  # logged once
    assert "bug in a hook" not in caplog.text
    assert len(otel.spans()) == 2


# --- never break the host ----------------------------------------------------------------------------
class ExplodingPricer:
    def price_call(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("pricing bug")


@pytest.mark.parametrize("instrument_kwargs", [{"pricer": ExplodingPricer()}])
def test_internal_error_leaves_the_call_intact(otel: Otel, fake: FakeProvider) -> None:
    with client(fake) as c:
        resp = c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        chunks = list(c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    assert resp.choices[0].message.content == "Hello from the fake provider."
    assert len(chunks) == 8
    assert otel.instrumentor.internal_errors == {"record": 2}
    assert len(otel.spans()) == 2  # the spans still ended


def test_callers_exception_is_unchanged(otel: Otel, fake: FakeProvider) -> None:
    with httpx.Client(transport=httpx.HTTPTransport(retries=0)) as c, pytest.raises(httpx.ConnectError):
        c.post("http://127.0.0.1:9/v1/chat/completions", json={"model": "gpt-4o", "messages": []})
    assert (otel.span().attributes or {})[attr.ERROR_TYPE] == "ConnectError"


# --- attribution ---------------------------------------------------------------------------------------
def _attribution(otel: Otel) -> list[dict[str, Any]]:
    keys = (attr.TENANT_ID, attr.WORKFLOW_ID, attr.USER_ID, attr.SESSION_ID)
    return [{k: v for k, v in (s.attributes or {}).items() if k in keys} for s in otel.spans()]


def test_attribute_nests_and_reaches_threads(otel: Otel, fake: FakeProvider) -> None:
    body = {"model": "gpt-4o", "messages": MESSAGES}
    with httpx.Client() as c:
        with attribute(tenant="acme", workflow="wf-42", user="u-7", session="s-1"):
            c.post(fake.url("/v1/chat/completions"), json=body)
            with attribute(workflow="wf-43"):
                ctx = context.get_current()
                t = threading.Thread(
                    target=lambda: context.attach(ctx) and c.post(fake.url("/v1/chat/completions"), json=body)
                )
                t.start()
                t.join()
        c.post(fake.url("/v1/chat/completions"), json=body)
    assert _attribution(otel) == [
        {attr.TENANT_ID: "acme", attr.WORKFLOW_ID: "wf-42", attr.USER_ID: "u-7", attr.SESSION_ID: "s-1"},
        {attr.TENANT_ID: "acme", attr.WORKFLOW_ID: "wf-43", attr.USER_ID: "u-7", attr.SESSION_ID: "s-1"},
        {},
    ]


@pytest.mark.anyio
async def test_attribute_follows_asyncio_tasks(otel: Otel, fake: FakeProvider) -> None:
    body = {"model": "gpt-4o", "messages": MESSAGES}
    async with httpx.AsyncClient() as c:

        async def call(tenant: str) -> None:
            with attribute(tenant=tenant):
                await asyncio.sleep(0)
                await c.post(fake.url("/v1/chat/completions"), json=body)

        await asyncio.gather(call("t-1"), call("t-2"), call("t-3"))
    assert sorted(a[attr.TENANT_ID] for a in _attribution(otel)) == ["t-1", "t-2", "t-3"]


def test_attribute_rejects_empty_values() -> None:
    with pytest.raises(ValueError, match="tenant"), attribute(tenant=""):
        pass


def test_entry_point_loads_the_instrumentor() -> None:
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="opentelemetry_instrumentor") if e.name == "costspan"]
    assert ep.load() is CostspanInstrumentor
    assert CostspanInstrumentor().instrumentation_dependencies() == ()


def test_unpriced_model_has_no_cost(otel: Otel, fake: FakeProvider, pricer: Pricer) -> None:
    with client(fake) as c:
        c.chat.completions.create(model="my-private-finetune", messages=MESSAGES)
    a = otel.span().attributes or {}
    assert a[attr.COST_STATUS] == attr.STATUS_UNPRICED
    assert attr.COST_USD not in a and attr.GEN_AI_USAGE_COST not in a
    assert "my-private-finetune" in str(a[attr.COST_UNPRICED_REASON])
