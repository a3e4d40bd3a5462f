"""With COSTSPAN_ENDPOINT set, the instrumentor guards every call against costspan serve's budgets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider

from costspan.instrumentation import BudgetExceededError, CostspanInstrumentor, attribute
from costspan.instrumentation._remote_guard import RemoteBudgetGuard
from costspan.instrumentation._tokens import TokenCounter
from costspan.pricing import Pricer
from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.budgets import BudgetBook, budget_router
from tests.support.fake_provider import FakeProvider


@pytest.fixture
def budget_server(tmp_path: Path) -> Iterator[tuple[str, BudgetBook]]:
    from fastapi import FastAPI

    book = BudgetBook(data_dir=tmp_path / "budgets")
    app = FastAPI()
    app.include_router(budget_router(book))
    with ServerThread(app) as server:
        yield server.url, book
    book.close()


def _instrument(pricer: Pricer, tokens: TokenCounter) -> CostspanInstrumentor:
    inst = CostspanInstrumentor()
    inst.instrument(tracer_provider=TracerProvider(), pricer=pricer, token_counter=tokens)
    return inst


def _chat(fake: FakeProvider) -> None:
    with openai.OpenAI(base_url=fake.url("/v1"), api_key="k", max_retries=0) as client:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=100)


def test_env_installs_the_remote_guard_which_blocks_before_sending(
    monkeypatch: pytest.MonkeyPatch,
    budget_server: tuple[str, BudgetBook],
    fake: FakeProvider,
    pricer: Pricer,
    tokens: TokenCounter,
) -> None:
    url, book = budget_server
    book.put_budget({"id": "acme-day", "scope": {"tenant": "acme"}, "period": "day", "limit": "0"})
    monkeypatch.setenv("COSTSPAN_ENDPOINT", url)
    monkeypatch.setenv("COSTSPAN_BUDGET_TIMEOUT", "10")  # generous: this machine is shared
    inst = _instrument(pricer, tokens)
    try:
        assert any(isinstance(h, RemoteBudgetGuard) for h in inst.pre_send_hooks)
        with attribute(tenant="acme"), pytest.raises(BudgetExceededError) as info:
            _chat(fake)
        assert info.value.budget_id == "acme-day"
        assert fake.requests == []  # blocked before a byte was sent
        with attribute(tenant="globex"):
            _chat(fake)  # no budget for globex: the call goes through
        assert len(fake.requests) == 1
    finally:
        inst.uninstrument()


@pytest.mark.parametrize(("fail_open", "blocked"), [("true", False), ("false", True)])
def test_unreachable_server_fails_open_or_closed(
    monkeypatch: pytest.MonkeyPatch,
    fake: FakeProvider,
    pricer: Pricer,
    tokens: TokenCounter,
    fail_open: str,
    blocked: bool,
) -> None:
    monkeypatch.setenv("COSTSPAN_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("COSTSPAN_BUDGET_TIMEOUT", "0.2")
    monkeypatch.setenv("COSTSPAN_BUDGET_FAIL_OPEN", fail_open)
    inst = _instrument(pricer, tokens)
    try:
        if blocked:
            with pytest.raises(BudgetExceededError, match="unreachable"):
                _chat(fake)
            assert fake.requests == []
        else:
            _chat(fake)
            assert len(fake.requests) == 1
    finally:
        inst.uninstrument()


def test_a_bad_endpoint_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch,
    fake: FakeProvider,
    pricer: Pricer,
    tokens: TokenCounter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("COSTSPAN_ENDPOINT", "not a url")
    inst = _instrument(pricer, tokens)
    try:
        assert not any(isinstance(h, RemoteBudgetGuard) for h in inst.pre_send_hooks)
        assert "budget guard not installed" in caplog.text
        _chat(fake)
        assert len(fake.requests) == 1
    finally:
        inst.uninstrument()


def test_a_block_reaches_anthropic_callers_unwrapped(fake: FakeProvider, pricer: Pricer, tokens: TokenCounter) -> None:
    # anthropic 2.x wraps any exception from its HTTP client in APIConnectionError unless it is an
    # AnthropicError: the block must still arrive as BudgetExceededError, with its details.
    import anthropic

    def block(_info: object) -> None:
        raise BudgetExceededError("budget b-9 is exhausted", budget_id="b-9", resets_at="2026-12-01T00:00:00+00:00")

    inst = CostspanInstrumentor()
    inst.instrument(tracer_provider=TracerProvider(), pricer=pricer, token_counter=tokens, pre_send_hooks=[block])
    try:
        client = anthropic.Anthropic(base_url=fake.url(), api_key="k", max_retries=0)
        with client, pytest.raises(BudgetExceededError) as info:
            client.messages.create(
                model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            )
        assert (info.value.budget_id, info.value.resets_at, str(info.value)) == (
            "b-9",
            "2026-12-01T00:00:00+00:00",
            "budget b-9 is exhausted",
        )
        assert fake.requests == []
    finally:
        inst.uninstrument()
