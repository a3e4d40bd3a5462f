"""How a budget stands: spent, reserved, remaining, utilization and a health word."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from costspan.processor.budgets._model import Budget, Mode, Period, money
from costspan.processor.budgets._periods import as_datetime, window
from costspan.processor.budgets._state import ZERO, BudgetState, Counter

__all__ = ["BudgetStatus", "health", "status_of", "statuses"]

WARNING_AT = Decimal("0.75")
CRITICAL_AT = Decimal("0.90")


def health(budget: Budget, utilization: Decimal) -> str:
    """``healthy`` < 75 %, ``warning`` 75-90 %, ``critical`` > 90 %, ``blocked`` at 100 % of a hard budget."""
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
