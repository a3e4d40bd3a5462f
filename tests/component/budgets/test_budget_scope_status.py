"""One rule decides a scope's status and limit: every budget that applies to all of the scope's calls,
the strictest wins, in the period asked for; the health words are the budget status's own."""

from __future__ import annotations

from decimal import Decimal

import pytest

from costspan.processor.budgets import BudgetBook, Call, Period, Unit

ACME = Call(tenant="acme", provider="openai", model="gpt-4o")


@pytest.mark.parametrize(
    ("spent", "mode", "state"),
    [
        ("7.49", "hard", "healthy"),
        ("7.5", "hard", "warning"),
        ("9", "hard", "warning"),  # exactly 90 %
        ("9.000001", "hard", "critical"),
        ("10", "hard", "blocked"),
        ("10", "soft", "critical"),
        ("12", "adaptive", "critical"),
    ],
)
def test_the_scope_status_is_the_budget_status_at_every_edge(
    book: BudgetBook, spent: str, mode: str, state: str
) -> None:
    budget: dict[str, object] = {"id": "d", "scope": {"tenant": "acme"}, "period": "day", "limit": "10", "mode": mode}
    if mode == "adaptive":
        budget["fallback_models"] = ["gpt-4o-mini"]
    book.put_budget(budget)
    book.record(ACME, Decimal(spent))
    (row,) = book.status()
    scoped = book.scope_status({"tenant": "acme"})
    assert scoped is not None
    assert (row.state, scoped.state, scoped.budget.id) == (state, state, "d")


def test_the_strictest_budget_that_applies_wins(book: BudgetBook) -> None:
    book.put_budget({"id": "global-day", "period": "day", "limit": "100"})
    book.put_budget({"id": "tenant-day", "scope": {"tenant": "*"}, "period": "day", "limit": "10"})
    book.put_budget({"id": "acme-month", "scope": {"tenant": "acme"}, "period": "month", "limit": "1000"})
    book.put_budget({"id": "acme-tokens", "scope": {"tenant": "acme"}, "period": "day", "limit": "5", "unit": "tokens"})
    book.put_budget({"id": "acme-p1", "scope": {"tenant": "acme", "project": "p1"}, "period": "day", "limit": "1"})
    book.record(ACME, Decimal("9"), tokens=1)  # tenant-day 90 %, global-day 9 %, acme-tokens 20 %

    def shown(scope: dict[str, str], **kw: Period | Unit) -> tuple[str, str, Decimal, dict[str, str]] | None:
        row = book.scope_status(scope, **kw)  # type: ignore[arg-type]
        return None if row is None else (row.budget.id, row.state, row.budget.limit, row.scope)

    acme = {"tenant": "acme"}
    assert shown(acme) == ("tenant-day", "warning", Decimal(10), acme)
    assert shown(acme, period=Period.MONTH) == ("acme-month", "healthy", Decimal(1000), acme)
    assert shown(acme, period=Period.DAY, unit=Unit.TOKENS) == ("acme-tokens", "healthy", Decimal(5), acme)
    assert shown({}) == ("global-day", "healthy", Decimal(100), {})  # only global budgets cover every call
    # a tenant that has spent nothing: the '*' budget is its own (spent 0), the global one is used more
    assert shown({"tenant": "globex"}, period=Period.DAY, unit=Unit.USD) == ("global-day", "healthy", Decimal(100), {})
    book.record(
        Call(tenant="globex", provider="openai", model="gpt-4o"), Decimal(1)
    )  # 10 % of both: the least room wins
    assert shown({"tenant": "globex"}) == ("tenant-day", "healthy", Decimal(10), {"tenant": "globex"})
    assert shown(acme, period=Period.WEEK) is None

    book.record(Call(tenant="acme", project="p1", provider="openai", model="gpt-4o"), Decimal("1.5"))
    # the project budget is blocked, but covers only part of the tenant's calls: the tenant is not
    assert shown(acme) == ("tenant-day", "blocked", Decimal(10), acme)  # 10.5 of 10 on a hard budget
    assert shown({"tenant": "acme", "project": "p1"}) == (
        "acme-p1",
        "blocked",
        Decimal(1),
        {"tenant": "acme", "project": "p1"},
    )


def test_a_hard_budget_at_its_limit_is_stricter_than_a_soft_one_far_over(book: BudgetBook) -> None:
    book.put_budget({"id": "soft", "scope": {"tenant": "acme"}, "period": "day", "limit": "1", "mode": "soft"})
    book.put_budget({"id": "hard", "scope": {"tenant": "acme"}, "period": "day", "limit": "2"})
    book.record(ACME, Decimal("2"))  # soft 200 % (critical), hard 100 % (blocked)
    row = book.scope_status({"tenant": "acme"})
    assert row is not None and (row.budget.id, row.state) == ("hard", "blocked")
