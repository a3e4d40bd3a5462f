"""How a budget stands: spent, reserved, remaining, utilization and a health word — and how a scope
stands (:func:`scope_status`: the strictest of the budgets that apply to it), which every route that
shows a status uses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from costspan.processor.budgets._model import SCOPE_DIMENSIONS, Budget, Mode, Period, Unit, money
from costspan.processor.budgets._periods import as_datetime, window
from costspan.processor.budgets._state import ZERO, BudgetState, Counter, match_targets

__all__ = ["BudgetStatus", "health", "scope_status", "status_of", "statuses", "strictness"]

WARNING_AT = Decimal("0.75")
CRITICAL_AT = Decimal("0.90")


def health(budget: Budget, utilization: Decimal) -> str:
    """``healthy`` < 75 % ≤ ``warning`` ≤ 90 % < ``critical``; at ≥ 100 % ``blocked`` for a hard budget,
    ``critical`` for a soft or adaptive one. ``utilization`` is exact (``spent / limit``), never rounded."""
    if utilization >= 1:
        return "blocked" if budget.mode is Mode.HARD else "critical"
    if utilization > CRITICAL_AT:
        return "critical"
    if utilization >= WARNING_AT:
        return "warning"
    return "healthy"


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    budget: Budget
    scope: dict[str, str]
    spent: Decimal
    reserved: Decimal
    remaining: Decimal
    utilization: Decimal  # spent / limit (a ratio; 1 = 100 %)
    state: str
    period_start: datetime | None
    resets_at: datetime | None
    fired: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "budget_id": self.budget.id,
            "name": self.budget.name,
            "scope": self.scope,
            "period": self.budget.period.value,
            "unit": self.budget.unit.value,
            "mode": self.budget.mode.value,
            "limit": str(self.budget.limit),
            "spent": money(self.spent),
            "reserved": money(self.reserved),
            "remaining": money(self.remaining),
            "utilization": float(self.utilization),
            "status": self.state,
            "period_start": self.period_start.isoformat() if self.period_start else None,
            "resets_at": self.resets_at.isoformat() if self.resets_at else None,
            "thresholds_fired": list(self.fired),
        }


def status_of(budget: Budget, counter: Counter | None, window: tuple[float, float], now: float) -> BudgetStatus:
    """Status of a counter (``None``: nothing spent yet) as of ``now``; a lapsed period reads as reset."""
    spent, reserved = ZERO, ZERO
    fired: tuple[int, ...] = ()
    start, end = window
    scope = budget.scope_dict
    if counter is not None:
        scope = counter.scope()
        reserved = counter.reserved
        if counter.end > now:
            spent, fired, start, end = counter.spent, tuple(sorted(counter.fired)), counter.start, counter.end
    limit = budget.limit
    if budget.period is Period.PER_REQUEST:
        utilization = ZERO
        remaining = limit
    else:
        utilization = spent / limit if limit > 0 else (Decimal(1) if spent > 0 else ZERO)
        remaining = max(ZERO, limit - spent - reserved)
    return BudgetStatus(
        budget=budget,
        scope=scope,
        spent=spent,
        reserved=reserved,
        remaining=remaining,
        utilization=utilization,
        state=health(budget, utilization),
        period_start=as_datetime(start) if start > 0 else None,
        resets_at=as_datetime(end),
        fired=fired,
    )


def statuses(state: BudgetState, budget_id: str | None, now: float) -> list[BudgetStatus]:
    out: list[BudgetStatus] = []
    for budget in state.budgets.values():
        if budget_id is not None and budget.id != budget_id:
            continue
        counters = [c for c in state.counters.values() if c.budget.id == budget.id]
        win = window(budget.period, now, budget.timezone)
        if not counters and not budget.each_dimensions:
            out.append(status_of(budget, None, win, now))
        out += [status_of(budget, c, win, now) for c in counters]
    return out


#: The health words from the least to the most strict.
_RANK = {"healthy": 0, "warning": 1, "critical": 2, "blocked": 3}


def strictness(status: BudgetStatus) -> tuple[int, Decimal, Decimal]:
    """Sort key, strictest last: the health word, then utilization, then the least remaining."""
    return _RANK[status.state], status.utilization, -status.remaining


def scope_status(
    state: BudgetState,
    scope: Mapping[str, str],
    now: float,
    *,
    period: Period | None = None,
    unit: Unit | None = None,
    adjust: Callable[[list[BudgetStatus]], list[BudgetStatus]] | None = None,
) -> BudgetStatus | None:
    """The status of a scope: the strictest (:func:`strictness`) of the budgets that apply to every call
    of the scope — the global ones, and those whose each dimension the scope names with the same value
    (or ``*``) — of ``period`` and ``unit`` if given (per-request budgets have no spend: never). None if
    no budget applies. The row's ``scope`` names the scope's values for ``*`` dimensions. ``adjust``
    rewrites each row before the comparison (the book marks the budgets that are refusing calls)."""
    dims = tuple(scope.get(dim) or None for dim in SCOPE_DIMENSIONS)
    best: BudgetStatus | None = None
    for budget, key, values in match_targets(state.budgets.values(), dims):
        if (
            budget.period is Period.PER_REQUEST
            or (period is not None and budget.period is not period)
            or (unit is not None and budget.unit is not unit)
        ):
            continue
        counter = state.counters.get(key)
        row = status_of(budget, counter, window(budget.period, now, budget.timezone), now)
        if counter is None and values:
            row = replace(row, scope={**row.scope, **dict(zip(budget.each_dimensions, values, strict=True))})
        if adjust is not None:
            row = adjust([row])[0]
        if best is None or strictness(row) > strictness(best):
            best = row
    return best
