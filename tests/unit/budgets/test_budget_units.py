"""Reservations as whole units: exact for catalog prices, rounded up otherwise, compared exactly."""

from __future__ import annotations

from decimal import Decimal

import pytest

from costspan.processor.budgets import Unit
from costspan.processor.budgets._units import from_units, room_units, to_units, units_below


@pytest.mark.parametrize(
    ("amount", "unit", "units"),
    [
        (Decimal("0.0125"), Unit.USD, 12_500_000_000),
        (Decimal("0.00000015"), Unit.USD, 150_000),  # $0.15 per million tokens, per token
        (Decimal("0.0000000375"), Unit.USD, 37_500),  # $0.0375 per million
        (Decimal("1E-13"), Unit.USD, 1),  # finer than a pico-dollar: rounded up
        (Decimal("123456789012.000000000001"), Unit.USD, 123_456_789_012_000_000_000_001),  # past 28 digits
        (Decimal(2000), Unit.TOKENS, 2000),
        (Decimal("2000.5"), Unit.TOKENS, 2001),
        (Decimal(1), Unit.REQUESTS, 1),
    ],
)
def test_amounts_become_whole_units_rounded_up(amount: Decimal, unit: Unit, units: int) -> None:
    assert to_units(amount, unit) == units
    if to_units(amount, unit) == units_below(amount, unit):  # exact: the way back gives the amount
        assert from_units(units, unit) == amount


@pytest.mark.parametrize(
    ("limit", "spent", "fits", "does_not"),
    [
        (Decimal("0.02"), Decimal(0), 20_000_000_000, 20_000_000_001),
        (Decimal("0.02"), Decimal("0.0000000000005"), 19_999_999_999, 20_000_000_000),  # spend finer than a unit
        (Decimal("1"), Decimal("2"), -1_000_000_000_000, 0),  # overspent: nothing fits
    ],
)
def test_room_compares_exactly(limit: Decimal, spent: Decimal, fits: int, does_not: int) -> None:
    room = room_units(limit, spent, Unit.USD)
    for n, ok in ((fits, True), (does_not, False)):
        assert (n <= room) is ok
        assert (spent + from_units(n, Unit.USD) <= limit) is ok  # the Decimal comparison it stands for
