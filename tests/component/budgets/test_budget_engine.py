"""The budget engine: estimate, reserve against every matching budget, settle, expire, degrade, block."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from costspan.pricing import Pricer
from costspan.processor.budgets import BudgetBook, Call, CostEstimator, Estimate
from tests.component.budgets.conftest import FakeClock

ACME_4O = Call(tenant="acme", service="api", provider="openai", model="gpt-4o", input_tokens=1000, max_tokens=1000)
COST_4O = Decimal("0.0125")  # 1000 in x $2.50/M + 1000 out x $10/M

Z = Decimal(0)


def spent(book: BudgetBook, budget_id: str) -> tuple[Decimal, Decimal]:
    (row,) = book.status(budget_id)
    return row.spent, row.reserved


@pytest.mark.parametrize(
    ("model", "input_tokens", "max_tokens", "expected"),
    [
        ("gpt-4o", 1000, 1000, Estimate(Decimal("0.0125"), 1000, 1000)),
        ("gpt-4o", 1000, None, Estimate(Decimal("0.16634"), 1000, 16384)),  # unset: the model's max output
        ("gpt-4o", 0, 1_000_000, Estimate(Decimal("0.16384"), 0, 16384)),  # capped at the model's max output
        ("gpt-4o-mini", 2000, 100, Estimate(Decimal("0.00036"), 2000, 100)),
        ("no-such-model", 10, 10, Estimate(None, 10, 10)),
        (None, None, None, Estimate(None, 0, 16384)),  # no model: the max-output table's default
    ],
)
def test_estimate_leans_high_but_caps_output(
    pricer: Pricer, model: str | None, input_tokens: int | None, max_tokens: int | None, expected: Estimate
) -> None:
    est = CostEstimator(pricer).estimate(model, "openai", input_tokens=input_tokens, max_tokens=max_tokens)
    assert est == expected


def test_check_reserves_against_every_matching_budget_all_or_nothing(book: BudgetBook) -> None:
    book.put_budget({"id": "global", "period": "day", "limit": "1"})
    book.put_budget({"id": "acme", "scope": {"tenant": "acme"}, "period": "day", "limit": "0.02"})
    book.put_budget({"id": "other", "scope": {"tenant": "globex"}, "period": "day", "limit": "0"})
    first = book.check(ACME_4O)
    assert first.allowed and first.reservation_id and first.estimate_usd == COST_4O
    assert spent(book, "global") == (Z, COST_4O) and spent(book, "acme") == (Z, COST_4O)
    second = book.check(ACME_4O)  # acme has 0.0075 left: refused, and global keeps only the first hold
    assert not second.allowed and second.reservation_id is None
    assert spent(book, "global") == (Z, COST_4O) and spent(book, "acme") == (Z, COST_4O)
    block = second.block
    assert block is not None
    assert (block.budget_id, dict(block.scope), block.limit, block.spent, block.reserved, block.requested) == (
        "acme",
        {"tenant": "acme"},
        Decimal("0.02"),
        Z,
        COST_4O,
        COST_4O,
    )
    assert block.resets_at == datetime(2026, 3, 11, tzinfo=UTC)
    assert block.message() == (
        "budget 'acme' (tenant=acme, day, hard) has no room for this call: limit 0.02 USD, spent 0 USD,"
        " reserved 0.0125 USD; this call's estimate 0.0125 USD (1000 input + 1000 output tokens,"
        " max_tokens=1000). To go ahead: lower max_tokens; or raise the limit of budget 'acme'; or wait for"
        " calls in flight to settle their reservations; or wait for the period to roll at 2026-03-11T00:00:00+00:00."
    )
    assert book.blocked_total == 1


def test_settle_replaces_the_hold_by_the_actual_cost(book: BudgetBook) -> None:
    book.put_budget({"id": "acme", "scope": {"tenant": "acme"}, "period": "day", "limit": "0.02"})
    d = book.check(ACME_4O)
    assert d.reservation_id is not None
    assert book.settle(d.reservation_id, Decimal("0.004"), tokens=900)
    assert spent(book, "acme") == (Decimal("0.004"), Z)
    assert not book.settle(d.reservation_id, Decimal("0.004"))  # only once
    assert book.check(ACME_4O).allowed  # the difference was released: 0.004 + 0.0125 fits


def test_unpriced_settlement_keeps_the_estimate(book: BudgetBook) -> None:
    book.put_budget({"id": "g", "period": "day", "limit": "1"})
    d = book.check(ACME_4O)
    assert d.reservation_id is not None and book.settle(d.reservation_id, None)
    assert spent(book, "g") == (COST_4O, Z)


def test_unsettled_reservations_expire(clock: FakeClock, pricer: Pricer) -> None:
    book = BudgetBook(clock=clock, estimator=CostEstimator(pricer, clock=clock), reservation_ttl=60)
    book.put_budget({"id": "g", "period": "day", "limit": "0.0125"})
    d = book.check(ACME_4O)
    assert not book.check(ACME_4O).allowed
    clock.advance(61)
    assert book.check(ACME_4O).allowed  # the first hold lapsed
    assert book.expired_total == 1
    assert d.reservation_id is not None and not book.settle(d.reservation_id, Decimal(1))


def test_settle_call_settles_the_oldest_hold_of_that_call_else_records(book: BudgetBook) -> None:
    book.put_budget({"id": "g", "period": "day", "limit": "1"})
    book.check(ACME_4O)
    book.check(ACME_4O)
    assert book.open_reservations() == 2
    assert book.settle_call(ACME_4O, Decimal("0.001"))
    assert book.open_reservations() == 1
    other = Call(tenant="globex", provider="openai", model="gpt-4o")
    assert not book.settle_call(other, Decimal("0.002"))  # no hold: recorded as spend
    assert spent(book, "g") == (Decimal("0.003"), COST_4O)


def test_soft_budgets_alert_but_never_block(book: BudgetBook) -> None:
    book.put_budget({"id": "s", "period": "day", "limit": "0.01", "mode": "soft"})
    for _ in range(3):
        d = book.check(ACME_4O)
        assert d.allowed and d.reservation_id is not None
        book.settle(d.reservation_id, COST_4O)
    (row,) = book.status("s")
    assert row.spent == 3 * COST_4O and row.state == "critical" and row.remaining == 0
    assert [a.threshold for a in book.alerts] == [50, 75, 90, 100]


def test_hard_budget_at_its_limit_reads_blocked(book: BudgetBook) -> None:
    book.put_budget({"id": "h", "period": "day", "limit": "0.0125"})
    d = book.check(ACME_4O)
    assert d.reservation_id is not None
    book.settle(d.reservation_id, COST_4O)
    (row,) = book.status("h")
    assert (row.state, row.utilization, row.remaining) == ("blocked", Decimal(1), Z)


def test_adaptive_tries_fallback_then_capped_max_tokens_then_blocks(book: BudgetBook) -> None:
    book.put_budget(
        {
            "id": "a",
            "scope": {"tenant": "acme"},
            "period": "day",
            "limit": "0.001",
            "mode": "adaptive",
            "fallback_models": ["gpt-4o-mini"],
            "max_tokens_cap": 256,
        }
    )
    small = Call(tenant="acme", provider="openai", model="gpt-4o", input_tokens=100, max_tokens=1000)
    d = book.check(small)  # gpt-4o: $0.01025 > 0.001; gpt-4o-mini: $0.000615 fits
    assert (d.allowed, d.model, d.max_tokens, d.reason) == (True, "gpt-4o-mini", None, "budget a: adaptive")
    assert d.estimate_usd == Decimal("0.000615")
    big = Call(tenant="acme", provider="openai", model="gpt-4o", input_tokens=100, max_tokens=4000)
    d2 = book.check(big)  # mini with 4000 out: 0.002415 > 0.000385 left; gpt-4o capped: 0.002810; mini capped fits
    assert (d2.allowed, d2.model, d2.max_tokens) == (True, "gpt-4o-mini", 256)
    assert book.check(big).model == "gpt-4o-mini"  # 0.0007836 spent + 0.0001686 still fits
    d4 = book.check(big)
    assert not d4.allowed and d4.block is not None and d4.block.budget_id == "a"
    assert book.rewritten_total == 3


def test_hard_budget_wins_over_an_adaptive_one(book: BudgetBook) -> None:
    book.put_budget({"id": "hard", "period": "day", "limit": "0"})
    book.put_budget({"id": "a", "period": "day", "limit": "0", "mode": "adaptive", "fallback_models": ["gpt-4o-mini"]})
    d = book.check(ACME_4O)
    assert d.block is not None and d.block.budget_id == "hard"


def test_per_request_budget_limits_each_call_alone(book: BudgetBook) -> None:
    book.put_budget({"id": "pr", "period": "per_request", "limit": "0.02"})
    for _ in range(5):
        assert book.check(ACME_4O).allowed
    huge = Call(provider="openai", model="gpt-4o", input_tokens=1000, max_tokens=10_000)
    d = book.check(huge)
    assert d.block is not None and d.block.resets_at is None and d.block.retry_after(0) is None


def test_token_and_request_budgets(book: BudgetBook) -> None:
    book.put_budget({"id": "tok", "scope": {"tenant": "acme"}, "period": "day", "limit": "5000", "unit": "tokens"})
    book.put_budget({"id": "req", "scope": {"tenant": "globex"}, "period": "day", "limit": "3", "unit": "requests"})
    first, second, third = (book.check(ACME_4O) for _ in range(3))  # 2000 tokens each
    assert first.allowed and second.allowed and third.block is not None and third.block.budget_id == "tok"
    assert first.reservation_id is not None and book.settle(first.reservation_id, COST_4O, tokens=1200)
    assert spent(book, "tok") == (Decimal(1200), Decimal(2000))
    globex = Call(tenant="globex", provider="openai", model="gpt-4o", max_tokens=10)
    assert [book.check(globex).allowed for _ in range(4)] == [True, True, True, False]


def test_each_tenant_gets_its_own_counter(book: BudgetBook) -> None:
    book.put_budget({"id": "per-tenant", "scope": {"tenant": "*"}, "period": "day", "limit": "0.0125"})
    assert book.check(ACME_4O).allowed
    assert not book.check(ACME_4O).allowed
    globex = Call(tenant="globex", provider="openai", model="gpt-4o", input_tokens=1000, max_tokens=1000)
    assert book.check(globex).allowed
    assert book.check(Call(provider="openai", model="gpt-4o")).allowed  # no tenant: the budget does not apply
    rows = {r.scope["tenant"]: r.reserved for r in book.status("per-tenant")}
    assert rows == {"acme": COST_4O, "globex": COST_4O}


def test_record_charges_spend_without_a_reservation(book: BudgetBook, clock: FakeClock) -> None:
    book.put_budget({"id": "svc", "scope": {"service": "billing"}, "period": "day", "limit": "10"})
    call = Call(tenant="acme", service="billing", provider="openai", model="gpt-4o")
    book.record(call, Decimal("1.5"), tokens=100)
    book.record(call, Decimal("7"), at=clock() - 86_400)  # yesterday's span: not this period's spend
    book.record(Call(service="search"), Decimal("3"))
    assert spent(book, "svc") == (Decimal("1.5"), Z)


def test_budget_changes_are_audited_and_keep_counters(book: BudgetBook) -> None:
    book.put_budget({"id": "b", "period": "day", "limit": "1"}, actor="alice")
    book.record(Call(), Decimal("0.4"))
    book.put_budget({"id": "b", "period": "day", "limit": "2"}, actor="bob")
    assert spent(book, "b") == (Decimal("0.4"), Z)  # a new limit keeps the period's spend
    book.put_budget({"id": "b", "period": "month", "limit": "2"}, actor="bob")
    assert spent(book, "b") == (Z, Z)  # a new period starts counting afresh
    assert book.delete_budget("b", actor="carol")
    assert not book.delete_budget("b")
    log = book.audit_log("b")
    assert [(e["actor"], e["action"]) for e in log] == [
        ("alice", "create"),
        ("bob", "update"),
        ("bob", "update"),
        ("carol", "delete"),
    ]
    assert log[1]["before"]["limit"] == "1" and log[1]["after"]["limit"] == "2"
    assert log[0]["before"] is None and log[3]["after"] is None
    assert log[0]["at"] == "2026-03-10T12:00:00+00:00"


def test_disabled_book_allows_everything(clock: FakeClock) -> None:
    book = BudgetBook(clock=clock, enabled=False)
    book.put_budget({"id": "b", "period": "day", "limit": "0"})
    assert book.check(ACME_4O) == (True, None, None, None, None, None, "")


def test_prometheus_collector(book: BudgetBook) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from costspan.processor.budgets import BudgetCollector

    registry = CollectorRegistry()
    registry.register(BudgetCollector(book))
    book.put_budget({"id": "t", "scope": {"tenant": "*"}, "period": "day", "limit": "2"})
    book.put_budget({"id": "r", "period": "day", "limit": "10", "unit": "requests"})
    book.record(Call(tenant="acme"), Decimal("1.5"))
    assert not book.check(Call(tenant="acme", provider="openai", model="gpt-4o", input_tokens=200_000)).allowed
    text = generate_latest(registry).decode()
    for line in (
        'costspan_budget_limit_usd{budget="t",period="day",tenant="acme"} 2.0',
        'costspan_budget_spent_usd{budget="t",period="day",tenant="acme"} 1.5',
        'costspan_budget_utilization_ratio{budget="t",period="day",tenant="acme"} 0.75',
        'costspan_budget_utilization_ratio{budget="r",period="day",tenant=""} 0.1',
        'costspan_budget_alerts_total{budget="t",threshold="50",type="threshold"} 1.0',
        'costspan_budget_alerts_total{budget="t",threshold="75",type="threshold"} 1.0',
        'costspan_budget_blocked_total{budget="t"} 1.0',
        "costspan_budget_reservations_expired_total 0.0",
    ):
        assert line in text, line
    assert 'budget="r",period="day",tenant=""} 10' not in text  # not a USD budget: no _usd series
