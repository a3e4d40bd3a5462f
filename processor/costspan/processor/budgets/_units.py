"""Reservations as exact integers: USD in pico-dollars (10⁻¹² USD), tokens and requests as counted.

The pre-call check compares and adds integers instead of ``Decimal`` (a third of its time was
``Decimal`` arithmetic). A catalog price with up to six decimals per million tokens is a whole number
of pico-dollars per token, so estimates are exact; an amount finer than that is rounded up, by less
than 10⁻¹² USD, which only makes a reservation lean high. Spend (what calls cost) stays ``Decimal``.
"""

from __future__ import annotations

import math
from decimal import Context, Decimal

from costspan.processor.budgets._model import Unit

__all__ = ["PICO_USD", "from_units", "room_units", "to_units", "units_below"]

#: Pico-dollars per dollar.
PICO_USD = 10**12
_EXACT = Context(prec=200)  # scaling by a power of ten never rounds at this precision


def _shift(unit: Unit) -> int:
    return 12 if unit is Unit.USD else 0


def to_units(amount: Decimal, unit: Unit) -> int:
    """``amount`` (USD, tokens or requests) in whole units, rounded up."""
    return math.ceil(amount.scaleb(_shift(unit), _EXACT))


def units_below(amount: Decimal, unit: Unit) -> int:
    """The most whole units not above ``amount`` (floor): ``n ≤ amount`` exactly when ``n ≤ units_below``."""
    return math.floor(amount.scaleb(_shift(unit), _EXACT))


def from_units(units: int, unit: Unit) -> Decimal:
    """Whole units back to the unit's ``Decimal`` amount (exact)."""
    return Decimal(units).scaleb(-12, _EXACT) if unit is Unit.USD else Decimal(units)


def room_units(limit: Decimal, spent: Decimal, unit: Unit) -> int:
    """``limit - spent`` in whole units, floored: ``held + n`` units fit exactly when ``<= room_units``."""
    return math.floor(_EXACT.subtract(limit, spent).scaleb(_shift(unit), _EXACT))
