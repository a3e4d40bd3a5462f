"""Refusals that say why: the app's BudgetExceededError (real openai SDK, in-app guard, fake provider),
a blocking budget's status, and the remote guard telling a rejected key from an unreachable server."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from costspan.instrumentation import BudgetExceededError, CostspanInstrumentor, attribute
from costspan.instrumentation._tokens import TokenCounter
from costspan.pricing import Pricer
from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.api import KeyStore
from costspan.processor.budgets import BudgetBook, Call, CostEstimator, RemoteBudgetGuard, budget_guard
from costspan.processor.serve._server import build_server_app
from costspan.processor.serve._settings import Settings
from costspan.processor.store._store import Store
from tests.support.fake_provider import FakeProvider

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]
LIMIT, SPENT = Decimal("0.007"), Decimal("0.0014")  # a small budget at 20 %


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> TokenCounter:
    counter = TokenCounter("o200k_base", directory=tmp_path_factory.mktemp("tiktoken"))
    counter.start_loading()
    assert counter.loaded.wait(60)
    return counter


@pytest.fixture
def guarded(pricer: Pricer, tokens: TokenCounter) -> Iterator[tuple[BudgetBook, FakeProvider]]:
    book = BudgetBook(estimator=CostEstimator(pricer))
    inst = CostspanInstrumentor()
    inst.instrument(
        tracer_provider=TracerProvider(), pricer=pricer, token_counter=tokens, pre_send_hooks=[budget_guard(book)]
    )
    try:
        with FakeProvider() as fake:
            yield book, fake
    finally:
        inst.uninstrument()


def _chat(fake: FakeProvider, **kwargs: Any) -> None:
    with openai.OpenAI(base_url=fake.url("/v1"), api_key="k", max_retries=0) as client:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, **kwargs)


def test_the_apps_error_names_the_budget_its_figures_the_estimate_and_what_to_do(
    guarded: tuple[BudgetBook, FakeProvider],
) -> None:
    book, fake = guarded
    book.put_budget({"id": "small", "scope": {"tenant": "acme"}, "period": "day", "limit": str(LIMIT)})
    book.record(Call(tenant="acme"), SPENT)
    with attribute(tenant="acme"), pytest.raises(BudgetExceededError) as info:
        _chat(fake)  # no max_tokens: the check assumes gpt-4o's max output, 16,384 tokens
    err = info.value
    assert fake.requests == []
    assert (err.budget_id, err.scope, err.limit_usd, err.spent_usd, err.reserved_usd) == (
        "small",
        {"tenant": "acme"},
        LIMIT,
        SPENT,
        Decimal(0),
    )
    assert err.reason == "estimate_exceeds_room"  # not "exhausted": the budget is at 20 %
    assert err.estimate_basis == "max_tokens unset → assumed 16384 output tokens (model max)"
    assert err.estimate_usd is not None and err.estimate_usd > LIMIT - SPENT
    assert err.advice[0] == "set max_tokens to what the call needs (the estimate assumed the model's max output)"
    assert err.advice[-1] == f"wait for the period to roll at {err.resets_at}"
    message = str(err)
    assert message.startswith(
        "budget 'small' (tenant=acme, day, hard) has no room for this call: limit 0.007 USD, spent 0.0014 USD,"
        " reserved 0 USD; this call's estimate "
    )
    assert "max_tokens unset → assumed 16384 output tokens (model max)" in message
    assert "To go ahead: set max_tokens" in message and "raise the limit of budget 'small'" in message
    # the same call with a small max_tokens fits
    with attribute(tenant="acme"):
        _chat(fake, max_tokens=50)
    assert len(fake.requests) == 1


def test_an_adaptive_budget_that_blocks_does_not_read_healthy(book: BudgetBook) -> None:
    book.put_budget(
        {
            "id": "adaptive",
            "scope": {"tenant": "acme"},
            "period": "day",
            "limit": str(LIMIT),
            "mode": "adaptive",
            "fallback_models": ["gpt-4o-mini"],
        }
    )
    book.record(Call(tenant="acme"), SPENT)
    (before,) = book.status("adaptive")
    assert before.state == "healthy"
    unset = Call(tenant="acme", provider="openai", model="gpt-4o", input_tokens=100)
    decision = book.check(unset)  # even gpt-4o-mini's max output (16,384 x $0.60/M) does not fit
    assert decision.block is not None and decision.block.mode.value == "adaptive"
    (blocking,) = book.status("adaptive")
    assert blocking.state == "blocked" and blocking.utilization == SPENT / LIMIT
    admitted = book.check(Call(tenant="acme", provider="openai", model="gpt-4o", input_tokens=100, max_tokens=50))
    assert admitted.allowed and admitted.reservation_id is not None
    (after,) = book.status("adaptive")
    assert after.state == "healthy"  # a call it admits clears it


@pytest.fixture
def serve(tmp_path: Path, pricer: Pricer) -> Iterator[tuple[str, dict[str, str], BudgetBook]]:
    data = tmp_path / "data"
    settings = Settings(data_dir=data, port=0)
    keystore = KeyStore(data)
    keys = {"tenant": keystore.create("tenant", "acme")[1], "ingest": keystore.create("ingest")[1]}
    book = BudgetBook(estimator=CostEstimator(pricer))
    app = build_server_app(
        settings, Store(settings.store_config()), keys=keystore, pricer=pricer, registry=CollectorRegistry(), book=book
    )
    with ServerThread(app) as running:
        yield running.url, keys, book


CHECK = Call(tenant="acme", provider="openai", model="gpt-4o", input_tokens=10, max_tokens=10)


@pytest.mark.parametrize(
    ("key", "reason", "words"),
    [
        ("csk_nosuchkey_000", "key_rejected", "budget server: key rejected (401): invalid or revoked API key"),
        ("tenant", "forbidden", "budget server: forbidden (403): this key may not send usage"),
    ],
)
def test_the_remote_guard_tells_a_refused_key_from_an_unreachable_server(
    serve: tuple[str, dict[str, str], BudgetBook], key: str, reason: str, words: str
) -> None:
    url, keys, _ = serve
    closed = RemoteBudgetGuard(url, keys.get(key, key), timeout=10, fail_open=False)
    with pytest.raises(BudgetExceededError) as info:
        closed.check(CHECK)
    assert info.value.reason == reason and str(info.value).startswith(words)
    assert "unreachable" not in str(info.value)
    assert (closed.key_refused, closed.unreachable) == (1, 0)
    opened = RemoteBudgetGuard(url, keys.get(key, key), timeout=10, fail_open=True)
    answer = opened.check(CHECK)
    assert answer["allowed"] is True and answer["reservation_id"] is None
    assert (opened.key_refused, opened.unreachable) == (1, 0)
    closed.close()
    opened.close()


def test_an_unreachable_server_is_said_to_be_unreachable() -> None:
    guard = RemoteBudgetGuard("http://127.0.0.1:9", "k", timeout=0.5, fail_open=False)
    with pytest.raises(BudgetExceededError) as info:
        guard.check(CHECK)
    assert info.value.reason == "unreachable" and "budget server unreachable" in str(info.value)
    assert (guard.key_refused, guard.unreachable) == (0, 1)


def test_the_remote_guards_error_carries_the_refusals_facts(serve: tuple[str, dict[str, str], BudgetBook]) -> None:
    url, keys, book = serve
    book.put_budget({"id": "small", "scope": {"tenant": "acme"}, "period": "day", "limit": str(LIMIT)})
    book.record(Call(tenant="acme"), SPENT)
    guard = RemoteBudgetGuard(url, keys["ingest"], timeout=10)
    with pytest.raises(BudgetExceededError) as info:
        guard.check(Call(tenant="acme", provider="openai", model="gpt-4o", input_tokens=10))
    err = info.value
    guard.close()
    assert (err.budget_id, err.reason) == ("small", "estimate_exceeds_room")
    assert err.estimate_basis == "max_tokens unset → assumed 16384 output tokens (model max)"
    assert err.estimate_usd == Decimal("0.163865")  # 10 x $2.50/M + 16,384 x $10/M
    # an unbound ingest key sees the reason and its own estimate, not the tenant's spend
    assert (err.limit_usd, err.spent_usd, err.reserved_usd) == (None, None, None)
    assert "0.0014" not in str(err) and err.advice[0].startswith("set max_tokens")
