"""What a refusal says: the estimate and how it was made, the budget's figures when they may be shown,
and what to do — worded by the cause (spend used the limit, or this call's estimate does not fit)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from costspan.processor.budgets._model import Block, EstimateBasis, Mode, Period, Unit

RESETS = datetime(2026, 3, 11, tzinfo=UTC)


@pytest.mark.parametrize(
    ("basis", "text"),
    [
        (EstimateBasis(10, 400, 400, "max_tokens"), "max_tokens=400"),
        (EstimateBasis(10, 16384, 100000, "max_tokens"), "max_tokens=100000, capped at the model's max output 16384"),
        (EstimateBasis(10, 16384, None, "model_max"), "max_tokens unset → assumed 16384 output tokens (model max)"),
        (
            EstimateBasis(0, 8192, None, "family_max"),
            "max_tokens unset → assumed 8192 output tokens (model family max)",
        ),
        (
            EstimateBasis(0, 4096, None, "configured"),
            "max_tokens unset → assumed 4096 output tokens (configured default)",
        ),
    ],
)
def test_the_estimate_says_how_it_was_made(basis: EstimateBasis, text: str) -> None:
    assert basis.describe() == text


def block(spent: str, basis: EstimateBasis | None, *, unit: Unit = Unit.USD, resets: datetime | None = RESETS) -> Block:
    return Block(
        budget_id="b",
        scope={"tenant": "acme"},
        unit=unit,
        period=Period.DAY if resets else Period.TOTAL,
        limit=Decimal("0.01"),
        spent=Decimal(spent),
        reserved=Decimal(0),
        requested=Decimal("0.005"),
        resets_at=resets,
        estimate_usd=Decimal("0.005"),
        basis=basis,
        mode=Mode.HARD,
    )


def test_a_budget_with_room_but_not_for_this_call_says_so_and_what_to_do() -> None:
    b = block("0.008", EstimateBasis(100, 8000, None, "model_max"))
    assert not b.exhausted
    assert b.message() == (
        "budget 'b' (tenant=acme, day, hard) has no room for this call: limit 0.01 USD, spent 0.008 USD,"
        " reserved 0 USD; this call's estimate 0.005 USD (100 input + 8000 output tokens, max_tokens unset"
        " → assumed 8000 output tokens (model max)). To go ahead: set max_tokens to what the call needs (the"
        " estimate assumed the model's max output); or raise the limit of budget 'b'; or wait for the period"
        " to roll at 2026-03-11T00:00:00+00:00."
    )


def test_an_exhausted_budget_without_its_figures() -> None:
    b = block("0.01", EstimateBasis(100, 50, 50, "max_tokens"), resets=None)
    assert b.exhausted
    assert b.advice() == ["raise the limit of budget 'b'"]  # a total budget never rolls; max_tokens cannot help
    text = b.message(show_spend=False)
    assert text == (
        "budget 'b' (tenant=acme, total, hard) is exhausted; this call's estimate 0.005 USD (100 input + 50 output"
        " tokens, max_tokens=50). To go ahead: raise the limit of budget 'b'."
    )
    assert "0.01" not in text


def test_a_token_budget_shows_the_estimate_in_tokens_and_usd() -> None:
    b = block("0", EstimateBasis(100, 50, 50, "max_tokens"), unit=Unit.TOKENS)
    assert (
        b.estimate_text()
        == "this call's estimate 0.005 tokens (0.005 USD; 100 input + 50 output tokens, max_tokens=50)"
    )
