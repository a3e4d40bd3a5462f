"""In-process mode in one call: ``track_in_process`` with the real openai SDK against the fake provider."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from costspan.instrumentation import BudgetExceededError, CostspanInstrumentor, attribute
from costspan.instrumentation._tokens import TokenCounter
from costspan.pricing import Pricer, Usage
from costspan.processor import BudgetBook, InvalidBudgetError, Store, StoreConfig, track_in_process
from tests.support.fake_provider import FakeProvider, FakeUsage

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]
MODEL = "gpt-4o-mini"
BUDGETS: list[dict[str, Any]] = [
    {"id": "acme-stop", "scope": {"tenant": "acme"}, "period": "day", "limit": "0"},  # hard: nothing fits
    {"id": "beta-daily", "scope": {"tenant": "beta"}, "period": "day", "limit": "10"},
]


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> TokenCounter:
    counter = TokenCounter("o200k_base", directory=tmp_path_factory.mktemp("tiktoken"))
    counter.start_loading()
    assert counter.loaded.wait(60)
    return counter


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    tp = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    yield tp
    tp.shutdown()


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(FakeUsage(input=1000, output=50)) as server:
        yield server


@pytest.fixture(autouse=True)
def _not_instrumented() -> Iterator[None]:
    instrumentor = CostspanInstrumentor()  # one per process
    if instrumentor.is_instrumented_by_opentelemetry:  # a clean start
        instrumentor.uninstrument()
    yield
    if instrumentor.is_instrumented_by_opentelemetry:  # a failed test must not leak it
        instrumentor.uninstrument()


def _chat(fake: FakeProvider, tenant: str) -> None:
    with attribute(tenant=tenant), openai.OpenAI(base_url=fake.url("/v1"), api_key="k", max_retries=0) as client:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=50)


def test_calls_are_priced_into_the_store_and_a_hard_budget_blocks(
    tmp_path: Path, provider: TracerProvider, fake: FakeProvider, pricer: Pricer, tokens: TokenCounter
) -> None:
    options = {"token_counter": tokens}
    with track_in_process(
        provider, data_dir=tmp_path, budgets=BUDGETS, fsync="never", pricer=pricer, instrument_options=options
    ) as costspan:
        assert costspan.service == "checkout" and costspan.book is not None
        _chat(fake, "beta")
        with pytest.raises(BudgetExceededError) as blocked:
            _chat(fake, "acme")
        assert costspan.force_flush(5000)
        record, refused = sorted(costspan.store.read_records(), key=lambda r: r.tenant, reverse=True)
        (row,) = costspan.book.status("beta-daily")
    assert blocked.value.budget_id == "acme-stop" and blocked.value.scope == {"tenant": "acme"}
    assert len(fake.requests) == 1  # the blocked call never left the app
    expected = pricer.price_call(MODEL, Usage(input_tokens=1000, output_tokens=50), provider="openai")
    assert expected.total is not None and expected.total > 0
    assert (record.tenant, record.service, record.provider, record.cost_status) == (
        "beta",
        "checkout",
        "openai",
        "priced",
    )
    assert (record.tokens.input, record.tokens.output, record.cost_total) == (1000, 50, expected.total)
    assert (row.spent, row.reserved) == (expected.total, Decimal(0))  # the reservation settled from the span
    # the blocked call is on record too, as blocked: not a priced call (no cost), not a request
    assert (refused.tenant, refused.outcome, refused.error_type) == ("acme", "blocked", "costspan.BudgetExceeded")
    assert (refused.cost_status, refused.cost_total) == ("unpriced", None)
    assert (costspan.store.grand_total().requests, costspan.store.grand_total().blocked) == (1, 1)


def test_shutdown_flushes_uninstruments_and_is_safe_twice(
    tmp_path: Path, provider: TracerProvider, fake: FakeProvider, pricer: Pricer, tokens: TokenCounter
) -> None:
    options = {"token_counter": tokens}
    costspan = track_in_process(
        provider, data_dir=tmp_path, budgets=BUDGETS, fsync="always", pricer=pricer, instrument_options=options
    )
    assert CostspanInstrumentor().is_instrumented_by_opentelemetry
    _chat(fake, "beta")
    costspan.shutdown()
    costspan.shutdown()
    assert not CostspanInstrumentor().is_instrumented_by_opentelemetry
    _chat(fake, "acme")  # no guard any more, and nothing recorded
    assert len(fake.requests) == 2
    store = Store(StoreConfig(data_dir=tmp_path))
    store.start()
    try:
        (record,) = store.read_records()  # durable: flushed before the store closed
    finally:
        store.close()
    book = BudgetBook(data_dir=tmp_path / "budgets")
    try:
        (row,) = book.status("beta-daily")
        assert row.spent == record.cost_total and {b.id for b in book.budgets()} == {"acme-stop", "beta-daily"}
    finally:
        book.close()
    # started again with one budget: the book holds exactly that one, which kept its spend
    with track_in_process(provider, data_dir=tmp_path, budgets=BUDGETS[1:], pricer=pricer, instrument=False) as again:
        assert again.book is not None and [b.id for b in again.book.budgets()] == ["beta-daily"]
        assert again.book.status("beta-daily")[0].spent == record.cost_total
        assert again.guard is not None and not CostspanInstrumentor().is_instrumented_by_opentelemetry


def test_an_instrumented_app_only_gets_the_guard(
    tmp_path: Path, provider: TracerProvider, fake: FakeProvider, pricer: Pricer, tokens: TokenCounter
) -> None:
    instrumentor = CostspanInstrumentor()
    instrumentor.instrument(tracer_provider=provider, pricer=pricer, token_counter=tokens)
    try:
        with track_in_process(provider, data_dir=tmp_path, budgets=BUDGETS, fsync="never", pricer=pricer) as costspan:
            assert costspan.guard in instrumentor.pre_send_hooks
            with pytest.raises(BudgetExceededError):
                _chat(fake, "acme")
            _chat(fake, "beta")
            assert costspan.force_flush(5000)
            assert sorted(r.error_type for r in costspan.store.read_records()) == ["", "costspan.BudgetExceeded"]
        assert instrumentor.is_instrumented_by_opentelemetry and costspan.guard not in instrumentor.pre_send_hooks
        _chat(fake, "acme")  # the app's instrumentation stays; the guard is gone
        assert len(fake.requests) == 2
    finally:
        instrumentor.uninstrument()


def test_a_bad_set_up_raises_and_installs_nothing(tmp_path: Path, provider: TracerProvider, pricer: Pricer) -> None:
    with pytest.raises(ValueError, match="needs an 'id'"):
        track_in_process(provider, data_dir=tmp_path, budgets=[{"period": "day", "limit": "1"}], pricer=pricer)
    with pytest.raises(InvalidBudgetError):
        track_in_process(provider, data_dir=tmp_path, budgets=[{"id": "x", "period": "fortnight", "limit": "1"}])
    with pytest.raises(ValueError, match="unique"):
        track_in_process(provider, data_dir=tmp_path, budgets=[BUDGETS[0], BUDGETS[0]], pricer=pricer)
    with pytest.raises(ValueError, match="fsync"):
        track_in_process(provider, data_dir=tmp_path, fsync="sometimes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="SDK TracerProvider"):
        track_in_process(trace.NoOpTracerProvider(), data_dir=tmp_path)  # type: ignore[arg-type]
    assert not CostspanInstrumentor().is_instrumented_by_opentelemetry
    assert list(tmp_path.iterdir()) == []


def test_shutdown_survives_a_failing_step(
    tmp_path: Path, provider: TracerProvider, pricer: Pricer, caplog: pytest.LogCaptureFixture
) -> None:
    costspan = track_in_process(provider, data_dir=tmp_path, budgets=BUDGETS, pricer=pricer, instrument=False)

    def boom() -> None:
        raise OSError("disk gone")

    costspan.processor.shutdown = boom  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR):
        costspan.shutdown()
    assert "closing the store failed" in caplog.text
    assert costspan.book is not None and costspan.book.status("beta-daily")  # the book still closed cleanly
    del costspan.processor.shutdown  # the provider's own shutdown closes the store


def test_without_a_provider_it_sets_the_global_one(tmp_path: Path) -> None:
    """A fresh interpreter (the global provider can be set once per process): no provider configured yet."""
    code = f"""
from opentelemetry import trace
from costspan.processor import track_in_process

with track_in_process(data_dir={str(tmp_path)!r}, service="billing", instrument=False) as costspan:
    tracer = trace.get_tracer("app")
    attributes = {{"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
                  "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5}}
    with tracer.start_as_current_span("chat gpt-4o-mini", attributes=attributes):
        pass
    assert costspan.tracer_provider is trace.get_tracer_provider()
    assert costspan.force_flush(5000)
    (record,) = costspan.store.read_records()
    print(record.service, record.cost_status)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["billing", "priced"]
