"""A budget created mid-period starts from what its scope already spent in that period.

The book asks a :class:`SpendSource` when a budget is new (or its scope, period or unit changed, which
starts its counters over): :class:`StoredSpend` reads the calls of the current period from a store's
ledger — the truth every rollup and index is derived from — grouped by the budget's counters. It
reads in two steps: the ledger as it is, while the store goes on committing, then — with the store's
next group commit held off — only the tail written since, puts the budget and charges the seed. So a
call is either in the seed or settled after it: never both, never neither; and a long ledger does
not stall ingest. A budget put again unchanged (every restart re-applies the environment's budgets)
is not seeded again: its counters are in the book's journal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from decimal import Decimal
from typing import Any, Protocol

from costspan.instrumentation import attributes as attr
from costspan.processor.budgets._definitions import BudgetDefinitions
from costspan.processor.budgets._model import Budget, BudgetSpec, Call, Period, parse_budget
from costspan.processor.budgets._periods import window
from costspan.processor.budgets._settle import Settlement, Spend
from costspan.processor.budgets._state import match_targets
from costspan.processor.store._corrections import correction_from_json, is_correction
from costspan.processor.store._ledger import Ledger, Position
from costspan.processor.store._records import outcome_of, record_from_json
from costspan.processor.store._store import Store

__all__ = ["SpendSource", "StoredSpend", "put_seeded"]

#: (counter key, values of the budget's ``*`` dimensions) → what the calls of that counter spent
SeedSpend = dict[tuple[str, tuple[str, ...]], Spend]


class SpendSource(Protocol):
    """Where a new budget's spend so far comes from."""

    def paused(self) -> AbstractContextManager[Any]:
        """Hold off new spend being settled into the book while the rest of a seed is read and charged."""
        ...

    def spend(self, budget: Budget, start: float, end: float, after: Any = None) -> tuple[SeedSpend, Any]:
        """What the calls in ``budget``'s scope that started in ``[start, end)`` spent, per counter, and a
        mark of how far that read: given back as ``after``, only what came after it is read."""
        ...


class StoredSpend:
    """The spend of the calls a :class:`~costspan.processor.store.Store` holds (its ledger, read from disk).

    A call counts as the book's settling counts it: its cost (an unpriced call: 0), its input and
    output tokens, one request.
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    def paused(self) -> AbstractContextManager[Any]:
        return self._store.commits_paused()

    def spend(
        self, budget: Budget, start: float, end: float, after: Position | None = None
    ) -> tuple[SeedSpend, Position | None]:
        first_ns, end_ns = int(start * 1e9), end * 1e9
        budgets = (budget,)
        out: SeedSpend = {}
        mark = after
        for line in Ledger(self._store.ledger.directory, fsync="never").read(after):
            mark = line.end
            if not first_ns <= line.start_ns < end_ns:
                continue
            cost_only = is_correction(line.payload)  # a repriced call: its cost changes, nothing else
            try:
                if cost_only:
                    correction = correction_from_json(line.payload)
                    r, was = correction.new, correction.old.cost_total or Decimal(0)
                else:
                    r, was = record_from_json(line.payload), Decimal(0)
            except (ValueError, KeyError, TypeError):  # unreadable or out of range: skipped as replay skips it
                continue
            if outcome_of(r) == attr.OUTCOME_BLOCKED:  # never sent: nothing spent (as settling skips it)
                continue
            dims = Call(
                tenant=r.tenant or None,
                service=r.service or None,
                workflow=r.workflow or None,
                user=r.user or None,
                project=r.project or None,
                provider=r.provider or None,
                model=r.model or None,
            ).dims()
            for _, key, values in match_targets(budgets, dims):
                had = out.get((key, values), Spend())
                if cost_only:
                    out[(key, values)] = Spend(had.cost + (r.cost_total or Decimal(0)) - was, had.tokens, had.requests)
                else:
                    out[(key, values)] = Spend(
                        had.cost + (r.cost_total or Decimal(0)),
                        had.tokens + r.tokens.input + r.tokens.output,
                        had.requests + 1,
                    )
        return out, mark


def _starts_over(before: Budget | None, after: Budget) -> bool:
    """Whether putting ``after`` over ``before`` leaves the budget without counters (the state drops them)."""
    return after.period is not Period.PER_REQUEST and (
        before is None or (before.scope, before.period, before.unit) != (after.scope, after.period, after.unit)
    )


def _added(a: SeedSpend, b: SeedSpend) -> SeedSpend:
    out = dict(a)
    for key, s in b.items():
        had = out.get(key, Spend())
        out[key] = Spend(had.cost + s.cost, had.tokens + s.tokens, had.requests + s.requests)
    return out


def put_seeded(
    definitions: BudgetDefinitions,
    settlement: Settlement,
    source: SpendSource,
    spec: Budget | BudgetSpec | Mapping[str, Any],
    actor: str,
    clock: Callable[[], float],
) -> Budget:
    """Put a budget; if it starts over, charge it what its scope spent so far in its current period."""
    budget = spec if isinstance(spec, Budget) else parse_budget(spec)
    period = window(budget.period, clock(), budget.timezone)
    early: tuple[SeedSpend, Any] | None = None
    if _starts_over(definitions.get(budget.id), budget):
        early = source.spend(budget, *period)  # the bulk, while the store keeps committing
    with source.paused():
        before = definitions.get(budget.id)
        put = definitions.put(budget, actor=actor)
        if _starts_over(before, put):
            now_period = window(put.period, clock(), put.timezone)
            if early is None or now_period != period:  # changed meanwhile, or the period rolled: read it all
                seed = source.spend(put, *now_period)[0]
            else:  # only the calls stored since the first read
                seed = _added(early[0], source.spend(put, *now_period, after=early[1])[0])
            settlement.seed(put, seed)
    return put
