"""The budget routes' bodies follow the edge's rules, and a settlement says when its call started.

A check naming a tenant no span could have (a control character, the internal all-tenants key) or a
settlement of 1e300 dollars is refused with 422 and holds or charges nothing; a settlement with the
call's ``start_time`` is charged to the period that contains it, not to today's.
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from costspan.processor.budgets import BudgetBook
from tests.component.budgets.test_budget_reservations import CHECK, Serve, reserved, serve

__all__ = ["serve"]  # the fixture, used by name below


def _day_budget(book: BudgetBook) -> None:
    book.put_budget({"id": "acme", "scope": {"tenant": "acme"}, "period": "day", "limit": "5"})


@pytest.mark.parametrize(
    "body",
    [
        {**CHECK, "tenant": "\x00all"},
        {**CHECK, "tenant": "acme\r\nX-Injected: 1"},
        {**CHECK, "tenant": "../acme"},
        {**CHECK, "tenant": "a" * 300},
        {**CHECK, "user": "u\x07"},
        {**CHECK, "tenant": "*"},
        {**CHECK, "tenant": "(other)"},
        {**CHECK, "input_tokens": 10**9 + 1},  # beyond one call: pricing would refuse it (a 500 before)
        {**CHECK, "input_tokens": 10**13},
        {**CHECK, "max_tokens": -1},
    ],
)
def test_a_check_that_names_what_no_span_could_is_refused_and_holds_nothing(
    serve: Serve, body: dict[str, object]
) -> None:
    _day_budget(serve.book)
    r = serve.post("admin", "/v1/budgets/check", body)
    assert r.status_code == 422, r.text
    error = r.json()
    assert error["success"] is False and error["error"] == error["detail"] and "\n" not in error["detail"]
    assert serve.book.open_reservations() == 0
    assert reserved(serve.book, "acme") == (Decimal(0), Decimal(0))


@pytest.mark.parametrize("cost", ["1e300", "-0.01", "NaN", "Infinity", "1000000001"])
def test_a_settlement_out_of_bounds_is_refused_and_the_hold_stays(serve: Serve, cost: str) -> None:
    _day_budget(serve.book)
    rid = serve.post("acme-ingest", "/v1/budgets/check", CHECK).json()["reservation_id"]
    held = reserved(serve.book, "acme")
    r = serve.post("acme-ingest", "/v1/budgets/settle", {"reservation_id": rid, "cost_usd": cost})
    assert r.status_code in (400, 422), r.text
    assert reserved(serve.book, "acme") == held  # neither charged nor released
    ok = serve.post("acme-ingest", "/v1/budgets/settle", {"reservation_id": rid, "cost_usd": "0.5"})
    assert ok.status_code == 200 and reserved(serve.book, "acme") == (Decimal("0.5"), Decimal(0))


def test_a_settlement_is_charged_to_the_period_its_call_started_in(serve: Serve) -> None:
    _day_budget(serve.book)
    yesterday = time.time() - 86400 * 1.5
    old = serve.post("acme-ingest", "/v1/budgets/check", CHECK).json()["reservation_id"]
    r = serve.post(
        "acme-ingest", "/v1/budgets/settle", {"reservation_id": old, "cost_usd": "2", "start_time": yesterday}
    )
    assert r.status_code == 200, r.text
    assert reserved(serve.book, "acme") == (Decimal(0), Decimal(0))  # the hold is gone, today is not charged
    now = serve.post("acme-ingest", "/v1/budgets/check", CHECK).json()["reservation_id"]
    r = serve.post(
        "acme-ingest", "/v1/budgets/settle", {"reservation_id": now, "cost_usd": "1", "start_time": time.time() + 60}
    )
    assert r.status_code == 200 and reserved(serve.book, "acme") == (Decimal(1), Decimal(0))  # ahead: now
    r = serve.post("acme-ingest", "/v1/budgets/settle", {"reservation_id": now, "cost_usd": "1", "start_time": 1.0})
    assert r.status_code == 422  # before 2000: refused (the reservation was settled already anyway)
