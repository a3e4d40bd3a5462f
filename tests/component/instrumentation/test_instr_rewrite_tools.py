"""Pre-send rewrites that drop the tools and lower the temperature (the budget degradation strategies),
through the real openai and anthropic SDKs to the fake provider, and in every wire family's fields."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from costspan.instrumentation import RequestInfo, RequestRewrite
from costspan.instrumentation import attributes as attr
from costspan.instrumentation._providers import Route, apply_rewrite, tool_count
from tests.support.fake_provider import FakeProvider
from tests.support.spans import Otel

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]
OPENAI_TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "b", "parameters": {"type": "object"}}},
]
ANTHROPIC_TOOLS: list[Any] = [{"name": "lookup", "input_schema": {"type": "object"}}]


def test_openai_request_loses_its_tools_and_temperature(otel: Otel, fake: FakeProvider) -> None:
    seen: list[RequestInfo] = []

    def hook(info: RequestInfo) -> RequestRewrite:
        seen.append(info)
        return RequestRewrite(disable_tools=True, temperature=0.1, reason="b-9: degraded")

    otel.instrumentor.pre_send_hooks.append(hook)
    with openai.OpenAI(base_url=fake.url("/v1"), api_key="k", max_retries=0) as c:
        c.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            tools=OPENAI_TOOLS,
            tool_choice="auto",
            parallel_tool_calls=False,
            temperature=1.2,
            max_tokens=20,
        )
    assert fake.requests[-1].json == {"model": "gpt-4o", "messages": MESSAGES, "temperature": 0.1, "max_tokens": 20}
    (info,) = seen
    assert (info.tools, info.temperature) == (2, 1.2)
    a = otel.span().attributes or {}
    assert a[attr.BUDGET_TOOLS_REMOVED] == 2 and a[attr.BUDGET_ORIGINAL_TEMPERATURE] == 1.2
    assert a[attr.GEN_AI_REQUEST_TEMPERATURE] == 0.1 and a[attr.BUDGET_ACTION] == "b-9: degraded"


def test_anthropic_request_loses_its_tools_and_temperature(otel: Otel, fake: FakeProvider) -> None:
    otel.instrumentor.pre_send_hooks.append(lambda info: RequestRewrite(disable_tools=True, temperature=0.0))
    with anthropic.Anthropic(base_url=fake.url(), api_key="k", max_retries=0, open_telemetry=False) as c:
        c.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=30,
            messages=MESSAGES,
            tools=ANTHROPIC_TOOLS,
            tool_choice={"type": "auto"},
            extra_body={"temperature": 0.9},  # this anthropic SDK has no temperature argument
        )
    assert fake.requests[-1].json == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 30,
        "messages": MESSAGES,
        "temperature": 0.0,
    }
    a = otel.span().attributes or {}
    assert a[attr.BUDGET_TOOLS_REMOVED] == 1 and a[attr.BUDGET_ORIGINAL_TEMPERATURE] == 0.9


def test_a_temperature_not_set_is_added_and_no_tools_means_nothing_removed(otel: Otel, fake: FakeProvider) -> None:
    otel.instrumentor.pre_send_hooks.append(lambda info: RequestRewrite(disable_tools=True, temperature=0.2))
    with openai.OpenAI(base_url=fake.url("/v1"), api_key="k", max_retries=0) as c:
        c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert fake.requests[-1].json == {"model": "gpt-4o", "messages": MESSAGES, "temperature": 0.2}
    a = otel.span().attributes or {}
    assert attr.BUDGET_TOOLS_REMOVED not in a and attr.BUDGET_ORIGINAL_TEMPERATURE not in a


@pytest.mark.parametrize(
    ("family", "kind", "body", "expected", "tools"),
    [
        (
            "gemini",
            "chat",
            {"contents": [], "tools": [{"functionDeclarations": [{"name": "a"}, {"name": "b"}]}], "toolConfig": {}},
            {"contents": [], "generationConfig": {"temperature": 0.3}},
            2,
        ),
        (
            "ollama",
            "chat",
            {"model": "llama3", "tools": [{"type": "function"}], "options": {"temperature": 1}},
            {"model": "llama3", "options": {"temperature": 0.3}},
            1,
        ),
        (
            "openai",
            "responses",
            {"model": "gpt-4o", "input": "x", "tools": [{"type": "web_search"}], "tool_choice": "auto"},
            {"model": "gpt-4o", "input": "x", "temperature": 0.3},
            1,
        ),
    ],
)
def test_every_wire_family_names_its_own_fields(
    family: str, kind: str, body: dict[str, Any], expected: dict[str, Any], tools: int
) -> None:
    route = Route(provider=family, family=family, kind=kind, operation="chat")
    assert tool_count(route, body) == tools
    assert apply_rewrite(route, body, None, None, disable_tools=True, temperature=0.3) == expected
