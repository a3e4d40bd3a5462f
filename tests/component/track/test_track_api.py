"""costspan.track with the real openai and anthropic SDKs against the local fake provider.

init() sets up the in-process processor and the instrumentation; track() blocks and decorators read
back what the processor recorded; MDMAI-shaped budgets block and degrade requests the fake receives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

import costspan.track as cost
from costspan.instrumentation import CostspanInstrumentor
from costspan.instrumentation._tokens import TokenCounter
from costspan.pricing import Pricer, Usage, default_pricer
from costspan.processor.budgets import InvalidBudgetError
from tests.support.fake_provider import FakeProvider, FakeUsage

MODEL = "gpt-4o-mini"
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]
TOOLS: list[Any] = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
USAGE = FakeUsage(input=1000, output=50)


@pytest.fixture(scope="module")
def pricer() -> Pricer:
    return default_pricer()


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> TokenCounter:
    counter = TokenCounter("o200k_base", directory=tmp_path_factory.mktemp("tiktoken"))
    counter.start_loading()
    assert counter.loaded.wait(60)
    return counter


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeProvider]:
    with FakeProvider(USAGE) as server:
        yield server


@pytest.fixture
def fake(fake_server: FakeProvider) -> FakeProvider:
    fake_server.reset()
    fake_server.usage = USAGE
    return fake_server


@pytest.fixture
def setup(tmp_path: Path, pricer: Pricer, tokens: TokenCounter) -> Iterator[Any]:
    instrumentor = CostspanInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    provider = TracerProvider(resource=Resource.create({"service.name": "chat"}))

    def start(*budgets: Any, on_alert: Any = None) -> cost.Tracking:
        tracking = cost.init(
            on_alert=on_alert,
            tracer_provider=provider,
            data_dir=tmp_path,
            budgets=budgets,
            fsync="never",
            pricer=pricer,
            instrument_options={"token_counter": tokens},
        )
        assert tracking is not None
        return tracking

    yield start
    cost.shutdown()
    provider.shutdown()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


def chat(fake: FakeProvider, **kw: Any) -> None:
    with openai.OpenAI(base_url=fake.url("/v1"), api_key="k", max_retries=0) as client:
        client.chat.completions.create(model=kw.pop("model", MODEL), messages=MESSAGES, **kw)


def one_call(pricer: Pricer, model: str = MODEL) -> Decimal:
    priced = pricer.price_call(model, Usage(input_tokens=1000, output_tokens=50), provider="openai")
    assert priced.total is not None
    return priced.total


def test_nested_blocks_see_their_own_calls_and_the_session_adds_up(
    setup: Any, fake: FakeProvider, pricer: Pricer
) -> None:
    tracking: cost.Tracking = setup()
    assert cost.init() is tracking  # idempotent
    with cost.track(tenant="acme", session="s-1", attributes={"feature": "chat"}) as outer:
        chat(fake, max_tokens=50)
        with cost.track(user="u-2", workflow="wf-9") as inner:
            chat(fake, max_tokens=50)
    assert len(outer.calls) == 2 and len(inner.calls) == 1
    assert inner.cost_usd == one_call(pricer) and outer.cost_usd == 2 * one_call(pricer)
    assert (outer.input_tokens, outer.output_tokens, outer.total_tokens, outer.unpriced) == (2000, 100, 2100, 0)
    assert {c.session for c in outer.calls} == {"s-1"} and inner.calls[0].model == MODEL
    records = {r.span_id: r for r in tracking.inprocess.store.read_records()}
    inner_record = records[inner.calls[0].span_id]
    assert (inner_record.tenant, inner_record.user, inner_record.workflow) == ("acme", "u-2", "wf-9")
    totals = cost.session("s-1")
    assert (totals.calls, totals.cost_usd, totals.tenants, totals.models) == (2, outer.cost_usd, ("acme",), {MODEL: 2})
    assert cost.session("s-1", tenant="other").calls == 0 and cost.session("nope").calls == 0
    with pytest.raises(ValueError, match="session_id"):
        cost.session("")


def test_session_lookup_reads_the_index_and_survives_a_restart(
    setup: Any, fake: FakeProvider, pricer: Pricer, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracking: cost.Tracking = setup()
    with cost.track(tenant="acme", session="conv-7"):
        chat(fake, max_tokens=50)
        chat(fake, max_tokens=50)

    def no_ledger_reads() -> list[Any]:
        raise AssertionError("session() read the ledger")

    monkeypatch.setattr(tracking.inprocess.store, "read_records", no_ledger_reads)
    totals = cost.session("conv-7")
    assert (totals.calls, totals.cost_usd, totals.tenants) == (2, 2 * one_call(pricer), ("acme",))
    monkeypatch.undo()
    cost.shutdown()
    setup()  # the same data directory: the new index counts the stored calls once
    again = cost.session("conv-7")
    assert (again.calls, again.cost_usd) == (2, 2 * one_call(pricer))
    with cost.track(tenant="acme", session="conv-7"):
        chat(fake, max_tokens=50)
    assert cost.session("conv-7").calls == 3


def test_decorator_on_sync_and_async_functions(setup: Any, fake: FakeProvider, pricer: Pricer) -> None:
    setup()
    seen: list[cost.Tracker] = []

    @cost.track(tenant="acme", workflow="sync", on_exit=seen.append)
    def sync_job() -> str:
        chat(fake, max_tokens=50)
        return "done"

    @cost.track(tenant="acme", workflow="async")
    async def async_job() -> str:
        async with openai.AsyncOpenAI(base_url=fake.url("/v1"), api_key="k", max_retries=0) as client:
            await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=50)
            await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=50)
        return "async done"

    assert sync_job() == "done" and sync_job() == "done"
    assert [len(t.calls) for t in seen] == [1, 1] and seen[0] is not seen[1]
    assert sync_job.last is seen[-1]  # type: ignore[attr-defined]
    assert asyncio.run(async_job()) == "async done"
    last = async_job.last  # type: ignore[attr-defined]
    assert len(last.calls) == 2 and last.cost_usd == 2 * one_call(pricer)


def test_anthropic_call_is_tracked(setup: Any, fake: FakeProvider) -> None:
    setup()
    with (
        cost.track(tenant="acme") as t,
        anthropic.Anthropic(base_url=fake.url(), api_key="k", max_retries=0, open_telemetry=False) as client,
    ):
        client.messages.create(model="claude-3-5-haiku-20241022", max_tokens=50, messages=MESSAGES)
    (call,) = t.calls
    assert call.provider == "anthropic" and call.cost_usd is not None and call.cost_usd > 0


def test_per_request_limit_blocks_before_sending(setup: Any, fake: FakeProvider) -> None:
    setup(cost.Budget(name="tiny", per_request_limit="0.000001", enforcement_level="hard", tenant_id="acme"))
    with pytest.raises(cost.BudgetExceededError) as blocked, cost.track(tenant="acme") as t:
        chat(fake, max_tokens=50)
    assert blocked.value.budget_id == "tiny.per_request" and fake.requests == []
    assert [(c.outcome, c.cost_usd or 0) for c in t.calls] == [("blocked", 0)]
    with cost.track(tenant="beta") as other:  # out of the budget's scope
        chat(fake, max_tokens=50)
    assert len(other.calls) == 1


def test_daily_limit_blocks_once_spent(setup: Any, fake: FakeProvider, pricer: Pricer) -> None:
    daily = one_call(pricer) + one_call(pricer) / 10  # room for one call's spend, not two
    setup(cost.Budget(name="daily", daily_limit=daily, enforcement_level="hard"))
    chat(fake, max_tokens=50)
    with pytest.raises(cost.BudgetExceededError) as blocked:
        chat(fake, max_tokens=50)
    assert blocked.value.budget_id == "daily.day" and len(fake.requests) == 1


def test_yearly_limit_blocks_once_the_years_spend_leaves_no_room(
    setup: Any, fake: FakeProvider, pricer: Pricer
) -> None:
    yearly = one_call(pricer) + one_call(pricer) / 10  # room for one call's spend, not two
    budget = cost.Budget(name="annual", yearly_limit=yearly, enforcement_level="hard", tenant_id="acme")
    assert [(b.id, b.period.value) for b in budget.book_budgets()] == [("annual.year", "year")]
    tracking = setup(budget)
    with cost.track(tenant="acme"):
        chat(fake, max_tokens=50)
        with pytest.raises(cost.BudgetExceededError) as blocked:
            chat(fake, max_tokens=50)
    assert blocked.value.budget_id == "annual.year" and len(fake.requests) == 1
    assert blocked.value.resets_at is not None and blocked.value.resets_at.endswith("-01-01T00:00:00+00:00")
    (row,) = tracking.inprocess.book.status("annual.year")
    assert row.spent == one_call(pricer)


def test_per_session_limit_refuses_calls_once_the_sessions_spend_reaches_it(
    setup: Any, fake: FakeProvider, pricer: Pricer
) -> None:
    limit = one_call(pricer) + one_call(pricer) / 10  # the first call fits, the second starts over it
    budget = cost.Budget(name="chat", per_session_limit=limit, enforcement_level="hard", tenant_id="acme")
    assert budget.book_budgets() == []  # a session is not a dimension of the book: enforced in-process
    tracking = setup(budget)
    with cost.track(tenant="acme", session="conv-1"):
        chat(fake, max_tokens=50)
        chat(fake, max_tokens=50)  # the session had spent one call: under the limit
        tracking.force_flush()
        with pytest.raises(cost.BudgetExceededError) as blocked:
            chat(fake, max_tokens=50)
    refusal = blocked.value
    assert (refusal.budget_id, refusal.reason, refusal.limit_usd) == ("chat.session", "exhausted", limit)
    assert refusal.scope == {"tenant": "acme", "session": "conv-1"} and refusal.spent_usd == 2 * one_call(pricer)
    assert len(fake.requests) == 2
    with cost.track(tenant="acme", session="conv-2"):  # another session starts afresh
        chat(fake, max_tokens=50)
    with cost.track(tenant="acme"):  # a call outside any session is not counted against it
        chat(fake, max_tokens=50)
    assert len(fake.requests) == 4


def test_a_soft_per_session_limit_never_refuses(setup: Any, fake: FakeProvider, pricer: Pricer) -> None:
    tracking = setup(cost.Budget(name="chat", per_session_limit=one_call(pricer) / 2))
    with cost.track(session="conv-1"):
        for _ in range(3):
            chat(fake, max_tokens=50)
            tracking.force_flush()
    assert len(fake.requests) == 3 and cost.session("conv-1").cost_usd == 3 * one_call(pricer)


def test_an_adaptive_per_session_limit_degrades_from_degrade_at(setup: Any, fake: FakeProvider, pricer: Pricer) -> None:
    budget = cost.Budget(
        name="chat",
        per_session_limit=one_call(pricer) * 4,
        enforcement_level="adaptive",
        degradation_strategies=["reduce_max_tokens"],
        max_tokens_cap=16,
        degrade_at=0.5,
    )
    tracking = setup(budget)
    with cost.track(session="conv-1"):
        for _ in range(3):
            chat(fake, max_tokens=50)
            tracking.force_flush()
    assert [r.json["max_tokens"] for r in fake.requests] == [50, 50, 16]  # 2 of 4 calls spent: degraded


def test_a_disabled_budget_is_left_out_and_only_usd_is_accepted(setup: Any, fake: FakeProvider) -> None:
    off = cost.Budget(name="off", per_request_limit="0.000001", enforcement_level="hard", enabled=False)
    assert cost.Budget(name="usd", daily_limit=1, currency="usd").currency == "USD"
    with pytest.raises(InvalidBudgetError, match="currency"):
        cost.Budget(name="eur", daily_limit=1, currency="EUR")
    with pytest.raises(InvalidBudgetError, match="enabled"):
        cost.Budget(name="maybe", daily_limit=1, enabled="no")  # type: ignore[arg-type]
    tracking = setup(off)
    chat(fake, max_tokens=50)  # the disabled budget would refuse it
    assert len(fake.requests) == 1 and tracking.budgets == ()


def test_soft_budget_only_alerts(setup: Any, fake: FakeProvider, pricer: Pricer) -> None:
    alerts: list[Any] = []
    setup(
        cost.Budget(name="soft", daily_limit=one_call(pricer) * 3, alert_thresholds=(0.5, 0.8)), on_alert=alerts.append
    )
    for _ in range(4):  # past the limit: a soft budget never blocks
        chat(fake, max_tokens=50)
    assert len(fake.requests) == 4
    assert [(a.budget_id, a.threshold) for a in alerts if a.kind == "threshold"] == [("soft.day", 50), ("soft.day", 80)]


STRATEGIES: dict[str, tuple[dict[str, Any], set[str]]] = {
    "use_smaller_model": ({"model": "gpt-4.1-nano"}, set()),
    "reduce_max_tokens": ({"max_tokens": 16}, set()),
    "disable_tools": ({}, {"tools", "tool_choice"}),
    "lower_temperature": ({"temperature": 0.2}, set()),
}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_each_degradation_strategy_reaches_the_request(
    setup: Any, fake: FakeProvider, pricer: Pricer, strategy: str
) -> None:
    budget = cost.Budget(
        name="adaptive",
        daily_limit=one_call(pricer) * 2,
        enforcement_level="adaptive",
        degradation_strategies=[strategy],
        fallback_models=("gpt-4.1-nano",),
        max_tokens_cap=16,
        degrade_at=0.4,
    )
    setup(budget)
    ask = {"max_tokens": 50, "temperature": 1.0, "tools": TOOLS, "tool_choice": "auto"}
    chat(fake, **ask)  # nothing spent yet: sent as asked
    first = fake.requests[-1].json
    assert (first["model"], first["max_tokens"], first["temperature"], first["tools"]) == (MODEL, 50, 1.0, TOOLS)
    chat(fake, **ask)  # half spent, past degrade_at: degraded
    sent = fake.requests[-1].json
    changed, removed = STRATEGIES[strategy]
    expected = {"model": MODEL, "messages": MESSAGES, **ask, **changed}
    assert sent == {k: v for k, v in expected.items() if k not in removed}


def test_all_four_strategies_together_and_on_the_span(setup: Any, fake: FakeProvider, pricer: Pricer) -> None:
    tracking = setup(
        cost.Budget(
            name="all",
            daily_limit=one_call(pricer) * 2,
            enforcement_level="adaptive",
            degradation_strategies=["cheaper_model", "reduce_max_tokens", "disable_tools", "reduce_temperature"],
            fallback_models=("gpt-4.1-nano",),
            max_tokens_cap=16,
            degrade_at=0.4,
        )
    )
    ask = {"max_tokens": 50, "temperature": 1.0, "tools": TOOLS, "tool_choice": "auto"}
    chat(fake, **ask)
    with cost.track(tenant="acme") as t:
        chat(fake, **ask)
    assert fake.requests[-1].json == {
        "model": "gpt-4.1-nano",
        "messages": MESSAGES,
        "max_tokens": 16,
        "temperature": 0.2,
    }
    (call,) = t.calls
    assert call.model == "gpt-4.1-nano" and call.outcome == "degraded"
    assert tracking.inprocess.book is not None
    (row,) = tracking.inprocess.book.status("all.day")
    assert row.spent == one_call(pricer) + one_call(pricer, "gpt-4.1-nano")


def test_bad_budgets_fail_at_construction_and_init_never_raises(tmp_path: Path) -> None:
    with pytest.raises(InvalidBudgetError, match="needs one of daily_limit, monthly_limit, yearly_limit"):
        cost.Budget(name="x")
    with pytest.raises(ValueError, match="enforcement_level"):
        cost.Budget(name="x", daily_limit=1, enforcement_level="monitor")
    with pytest.raises(ValueError, match="unknown degradation strategy"):
        cost.Budget(name="x", daily_limit=1, degradation_strategies=["pray"])
    with pytest.raises(ValueError, match="fallback_models"):
        cost.Budget(name="x", daily_limit=1, degradation_strategies=["use_smaller_model"])
    with pytest.raises(ValueError, match="fractions"):
        cost.Budget(name="x", daily_limit=1, alert_thresholds=(80,))
    with pytest.raises(ValueError, match="USD amount"):
        cost.Budget(name="x", daily_limit="lots")
    assert cost.init(data_dir=tmp_path, budgets=[{"period": "day", "limit": "1"}]) is None  # no id: logged
    assert cost.current() is None


def test_without_init_the_attribution_still_travels(fake: FakeProvider, tokens: TokenCounter) -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    assert cost.current() is None
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = CostspanInstrumentor()
    instrumentor.instrument(tracer_provider=provider, token_counter=tokens)
    try:
        with cost.track(tenant="acme", session="s-2") as t:
            chat(fake, max_tokens=50)
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
    (span,) = exporter.get_finished_spans()
    a = span.attributes or {}
    assert (a["costspan.tenant.id"], a["costspan.session.id"]) == ("acme", "s-2")
    assert t.calls == [] and t.cost_usd == 0
    with pytest.raises(RuntimeError, match="init"):
        cost.session("s-2")
    with pytest.raises(ValueError, match="tenant"):
        cost.track(tenant="")
    with pytest.raises(ValueError, match="attributes"):
        cost.track(attributes={"k": [1]})  # type: ignore[dict-item]


def test_a_decorated_function_that_raises_still_reports_its_calls(setup: Any, fake: FakeProvider) -> None:
    setup()

    @cost.track(workflow="fails")
    def job() -> None:
        chat(fake, max_tokens=50)
        raise KeyError("the app's own error")

    with pytest.raises(KeyError, match="the app's own error"):
        job()
    assert len(job.last.calls) == 1  # type: ignore[attr-defined]


def test_adaptive_per_request_limit_sends_the_cheaper_model(setup: Any, fake: FakeProvider) -> None:
    # gpt-4o with max_tokens=1000 is estimated at ~1 cent; gpt-4.1-nano at a few hundredths of one
    setup(
        cost.Budget(
            name="per-call",
            per_request_limit="0.001",
            enforcement_level="adaptive",
            degradation_strategies=["use_smaller_model"],
            fallback_models=("gpt-4.1-nano",),
        )
    )
    with cost.track(tenant="acme") as t:
        chat(fake, model="gpt-4o", max_tokens=1000)
    assert fake.requests[-1].json["model"] == "gpt-4.1-nano"
    assert [(c.model, c.outcome) for c in t.calls] == [("gpt-4.1-nano", "degraded")]
