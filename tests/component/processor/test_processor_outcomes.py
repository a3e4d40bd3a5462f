"""One outcome per call (ok, degraded, blocked, error): read or derived by the normalizer, summed apart
(a blocked call is no request, never priced), kept through snapshots old and new, never settled."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costspan.instrumentation import attributes as attr
from costspan.pricing import Pricer, default_pricer
from costspan.processor.budgets import BudgetBook, CostEstimator
from costspan.processor.budgets._model import Call
from costspan.processor.budgets._stored_calls import settle_records
from costspan.processor.ingest._normalize import Normalizer, SpanView
from costspan.processor.store._callsums import sum_calls
from costspan.processor.store._records import CallRecord, outcome_of
from costspan.processor.store._sums import Sums
from tests.support.records import call_record

KNOWN: dict[str, Any] = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.usage.input_tokens": 1000,
    "gen_ai.usage.output_tokens": 100,
}
NO_USAGE: dict[str, Any] = {k: v for k, v in KNOWN.items() if not k.startswith("gen_ai.usage")}


def _normalize(attrs: dict[str, Any], *, status_error: bool = False) -> CallRecord:
    view = SpanView(
        "ab" * 16, "cd" * 8, "", 1_764_000_000_000_000_000, 1_764_000_002_000_000_000, attrs, {}, "scope", status_error
    )
    record = Normalizer(default_pricer()).normalize(view)
    assert record is not None
    return record


@pytest.mark.parametrize(
    ("attrs", "status_error", "outcome", "error_type", "cost_status"),
    [
        pytest.param(KNOWN, False, "ok", "", "priced", id="priced"),
        pytest.param({**KNOWN, attr.CALL_OUTCOME: "ok"}, False, "ok", "", "priced", id="said-ok"),
        pytest.param({**KNOWN, attr.TOKENS_ESTIMATED: True}, False, "degraded", "", "estimated", id="estimated-tokens"),
        pytest.param(
            {**KNOWN, "gen_ai.request.model": "not-a-model-anyone-prices"},
            False,
            "degraded",
            "",
            "unpriced",
            id="unknown-model",
        ),
        pytest.param(  # a budget moved the call to a fallback model: the instrumentation says so
            {**KNOWN, attr.CALL_OUTCOME: "degraded"}, False, "degraded", "", "priced", id="said-degraded"
        ),
        pytest.param(  # the instrumentation priced it, the processor's catalog cannot: degraded
            {**KNOWN, "gen_ai.request.model": "not-a-model-anyone-prices", attr.CALL_OUTCOME: "ok"},
            False,
            "degraded",
            "",
            "unpriced",
            id="said-ok-processor-cannot-price",
        ),
        pytest.param({**NO_USAGE, attr.ERROR_TYPE: "500"}, True, "error", "500", "priced", id="http-error"),
        pytest.param(NO_USAGE, True, "error", "error", "priced", id="status-only-error"),
        pytest.param(
            {**NO_USAGE, attr.CALL_OUTCOME: "blocked", attr.ERROR_TYPE: "client_error"},
            True,
            "blocked",
            attr.ERROR_TYPE_BUDGET_EXCEEDED,
            "unpriced",
            id="anthropic-sdk-span-enriched",
        ),
        pytest.param(  # another instrumentation's span around a block, no costspan outcome on it
            {**NO_USAGE, attr.ERROR_TYPE: "costspan.instrumentation._hooks.BudgetExceededError"},
            True,
            "blocked",
            attr.ERROR_TYPE_BUDGET_EXCEEDED,
            "unpriced",
            id="peer-span-module-path",
        ),
        pytest.param(  # an older costspan instrumentation: the budget action only
            {**NO_USAGE, attr.RECORD_SOURCE: "x", attr.BUDGET_ACTION: "blocked", attr.ERROR_TYPE: "BudgetExceeded"},
            True,
            "blocked",
            attr.ERROR_TYPE_BUDGET_EXCEEDED,
            "unpriced",
            id="older-costspan-span",
        ),
        pytest.param({**KNOWN, attr.CALL_OUTCOME: "bogus"}, False, "ok", "", "priced", id="invalid-outcome-ignored"),
    ],
)
def test_the_normalizer_reads_or_derives_one_outcome(
    attrs: dict[str, Any], status_error: bool, outcome: str, error_type: str, cost_status: str
) -> None:
    r = _normalize(attrs, status_error=status_error)
    assert (r.outcome, r.error_type, r.cost_status) == (outcome, error_type, cost_status)
    assert outcome_of(r) == outcome
    if outcome == "blocked":
        assert r.cost_total is None and "blocked" in r.unpriced_reason


def _mix() -> list[CallRecord]:
    return [
        call_record(0, cost="0.5", outcome="ok"),
        call_record(1, cost="0.25", outcome="degraded", tokens_estimated=True),
        call_record(2, cost=None, tokens=(300, 30), outcome="degraded"),
        call_record(3, cost="0", tokens=(0, 0), outcome="error", error_type="500"),
        call_record(4, cost=None, tokens=(0, 0), outcome="blocked", error_type=attr.ERROR_TYPE_BUDGET_EXCEEDED),
        call_record(5, cost=None, tokens=(0, 0), outcome="blocked", error_type=attr.ERROR_TYPE_BUDGET_EXCEEDED),
    ]


def _figures(s: Sums) -> tuple[Any, ...]:
    return (s.requests, s.ok, s.degraded, s.errors, s.blocked, s.unpriced, s.unpriced_tokens, s.cost, s.tokens)


EXPECTED = (4, 1, 2, 1, 2, 1, 330, Decimal("0.75"), 100 + 10 + 100 + 10 + 330)


def test_every_fold_sums_outcomes_alike_and_a_blocked_call_is_no_request() -> None:
    rollup = Sums.with_parts()
    for r in _mix():
        rollup.add(r, r.duration_s)
    (group,) = sum_calls(_mix()).values()
    assert _figures(rollup) == _figures(group.sums) == EXPECTED
    assert group.cost == Decimal("0.75") and len(group.rows) == 6
    only_blocked = sum_calls(_mix()[4:])
    (blocked,) = only_blocked.values()
    assert (blocked.sums.requests, blocked.sums.blocked, blocked.cost) == (0, 2, None)
    assert blocked.sums.priced_cost == Decimal(0)  # nothing sent, nothing spent: a true 0
    unpriced_only = Sums()
    unpriced_only.merge(sum_calls(_mix()[2:3]).popitem()[1].sums)
    assert unpriced_only.priced_cost is None  # sent, and none priced: no made-up 0


@pytest.mark.parametrize("parts", [False, True], ids=["core", "with-parts"])
def test_sums_snapshots_keep_outcomes_and_older_shapes_still_read(parts: bool) -> None:
    s = Sums.with_parts() if parts else Sums()
    for r in _mix():
        if parts:
            s.add(r, r.duration_s)
    if not parts:
        (group,) = sum_calls(_mix()).values()
        s = group.sums
    data = s.to_json()
    assert len(data) == (27 if parts else 13)
    assert Sums.from_json(data) == s
    old = Sums.from_json(data[:-3])  # written before outcomes: degraded derived, blocked unknown (0)
    assert (old.requests, old.errors, old.blocked, old.unpriced_tokens) == (4, 1, 0, 0)
    assert old.degraded == (2 if parts else 1)  # unpriced (+ estimated, which only the parts count)


def test_a_blocked_record_never_settles_a_reservation(tmp_path: Path) -> None:
    pricer: Pricer = default_pricer()
    book = BudgetBook(estimator=CostEstimator(pricer), data_dir=tmp_path, fsync="never")
    try:
        book.put_budget({"id": "acme", "scope": {"tenant": "acme"}, "period": "day", "limit": "100"})
        call = Call(tenant="acme", service="svc", provider="openai", model="gpt-4o", input_tokens=100, max_tokens=10)
        decision = book.check(call)
        assert decision.block is None and decision.reservation_id is not None
        blocked = call_record(9, cost=None, tokens=(0, 0), error_type=attr.ERROR_TYPE_BUDGET_EXCEEDED)
        assert outcome_of(blocked) == "blocked"
        settle_records(book, [blocked])
        assert book.open_reservations() == 1  # the in-flight call's reservation is still held
        (row,) = book.status("acme")
        assert row.spent == 0
    finally:
        book.close()
