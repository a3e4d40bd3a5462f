"""Budgets that are refusing calls: their status reads ``blocked`` whatever their utilization.

An adaptive budget that blocks, or a hard one too small for a call's estimate, is not ``healthy``
even at 20 % used. The book marks the counter that refused a call and clears the mark when that
counter admits one; a mark from an earlier period does not count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from costspan.processor.budgets._state import Counter
from costspan.processor.budgets._status import BudgetStatus

__all__ = ["as_refusing"]


def as_refusing(
    rows: list[BudgetStatus], marks: Mapping[str, float], counters: Mapping[str, Counter], now: float
) -> list[BudgetStatus]:
    """``rows`` with ``blocked`` for each budget whose latest check in its current period refused a call.

    ``marks``: counter key → the start of the period in which it refused.
    """
    if not marks:
        return rows
    out: list[BudgetStatus] = []
    for row in rows:
        budget = row.budget
        values = [row.scope.get(dim, "") for dim in budget.each_dimensions]
        key = budget.id if not values else budget.id + "|" + "|".join(values)
        start, counter = marks.get(key), counters.get(key)
        refusing = start is not None and counter is not None and counter.start == start and counter.end > now
        out.append(replace(row, state="blocked") if refusing and row.state != "blocked" else row)
    return out
