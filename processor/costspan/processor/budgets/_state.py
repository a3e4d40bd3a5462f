"""The budget state machine: every change is one event, applied the same way live and on replay.

Events are JSON-ready lists (amounts as ``Decimal``; the journal writes them as strings):

- ``["b", budget_json]`` put a budget; ``["d", budget_id]`` delete it (and its counters)
- ``["o", key, budget_id, values, start, end]`` open or roll a counter to a new period (spent and
  fired marks reset; outstanding reservations carry over)
- ``["r", rid, at, expires, match, [[key, amount], ...]]`` reserve
- ``["s", rid, [[key, amount], ...]]`` settle: release the reservation, charge the actual amounts
- ``["x", rid]`` a reservation expired unsettled: release it
- ``["c", [[key, amount], ...]]`` charge spend that came without a reservation
- ``["f", key, start, threshold]`` a threshold alert fired for the period starting at ``start``
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from costspan.processor.budgets._model import EACH, SCOPE_DIMENSIONS, Block, Budget, Mode, Period, Unit

__all__ = [
    "BudgetState",
    "Counter",
    "Reservation",
    "Target",
    "actual_amounts",
    "budget_from_json",
    "crossed_thresholds",
    "decode_event",
    "encode_amounts",
    "match_targets",
    "threshold_amounts",
]

ZERO = Decimal(0)


@dataclass(slots=True)
class Counter:
    """Spend of one budget (one scope instance of it, for ``*`` scopes) in its current period."""

    key: str
    budget: Budget
    values: tuple[str, ...]  # values of the budget's ``*`` dimensions, in scope order
    start: float
    end: float
    spent: Decimal = ZERO
    reserved: Decimal = ZERO
    fired: set[int] = field(default_factory=set)

    def block(self, requested: Decimal) -> Block:
        """Why this counter refuses a call asking for ``requested`` more."""
        budget = self.budget
        return Block(
            budget_id=budget.id,
            scope=self.scope(),
            unit=budget.unit,
            period=budget.period,
            limit=budget.limit,
            spent=self.spent,
            reserved=self.reserved,
            requested=requested,
            resets_at=None if math.isinf(self.end) else datetime.fromtimestamp(self.end, UTC),
        )

    def scope(self) -> dict[str, str]:
        scope = self.budget.scope_dict
        for dim, value in zip(self.budget.each_dimensions, self.values, strict=True):
            scope[dim] = value
        return scope


@dataclass(slots=True)
class Reservation:
    rid: str
    at: float
    expires: float
    match: tuple[str | None, ...]  # the call's dimensions, to settle a record that carries no reservation id
    items: list[tuple[str, Decimal]]


def budget_from_json(data: dict[str, Any]) -> Budget:
    return Budget(
        id=data["id"],
        name=data.get("name", ""),
        scope=tuple(sorted(data.get("scope", {}).items())),
        period=Period(data["period"]),
        limit=Decimal(data["limit"]),
        unit=Unit(data.get("unit", "usd")),
        mode=Mode(data.get("mode", "hard")),
        fallback_models=tuple(data.get("fallback_models", ())),
        max_tokens_cap=data.get("max_tokens_cap"),
        thresholds=tuple(data.get("thresholds", (50, 75, 90, 100))),
        timezone=data.get("timezone", "UTC"),
    )


def encode_amounts(items: Sequence[tuple[str, Decimal]]) -> list[list[str]]:
    return [[key, str(amount)] for key, amount in items]


def _amounts(raw: Any) -> list[tuple[str, Decimal]]:
    return [(str(key), Decimal(amount)) for key, amount in raw]


def _float(value: Any) -> float:
    return math.inf if value is None or value == "inf" else float(value)


def decode_event(raw: list[Any]) -> list[Any]:
    """Turn a journal line's JSON back into an event (strings to Decimal, 'inf' to inf)."""
    op = raw[0]
    if op == "b":
        return ["b", budget_from_json(raw[1])]
    if op == "o":
        return ["o", raw[1], raw[2], tuple(raw[3]), _float(raw[4]), _float(raw[5])]
    if op == "r":
        return ["r", raw[1], float(raw[2]), float(raw[3]), tuple(raw[4]), _amounts(raw[5])]
    if op == "s":
        return ["s", raw[1], _amounts(raw[2])]
    if op == "c":
        return ["c", _amounts(raw[1])]
    if op == "f":
        return ["f", raw[1], _float(raw[2]), int(raw[3])]
    if op in ("d", "x"):
        return [op, raw[1]]
    raise ValueError(f"unknown budget journal event {op!r}")


def encode_event(event: list[Any]) -> list[Any]:
    op = event[0]
    if op == "b":
        return ["b", event[1].to_json()]
    if op == "o":
        return ["o", event[1], event[2], list(event[3]), _enc_float(event[4]), _enc_float(event[5])]
    if op == "r":
        return ["r", event[1], event[2], event[3], list(event[4]), encode_amounts(event[5])]
    if op == "s":
        return ["s", event[1], encode_amounts(event[2])]
    if op == "c":
        return ["c", encode_amounts(event[1])]
    if op == "f":
        return ["f", event[1], _enc_float(event[2]), event[3]]
    return list(event)


def _enc_float(value: float) -> float | str:
    return "inf" if math.isinf(value) else value


class BudgetState:
    """Budgets, counters and reservations. Not thread-safe: the owner holds a lock around it."""

    def __init__(self) -> None:
        self.budgets: dict[str, Budget] = {}
        self.counters: dict[str, Counter] = {}
        self.reservations: dict[str, Reservation] = {}
        self.by_match: dict[tuple[str | None, ...], deque[str]] = {}
        self.expiry: deque[tuple[float, str]] = deque()
        self.seq = 0

    def apply(self, event: list[Any]) -> None:
        op = event[0]
        if op == "r":
            self.reserve(event[1], event[2], event[3], event[4], event[5])
        elif op == "s":
            self._settle(event[1], event[2])
        elif op == "c":
            for key, amount in event[1]:
                counter = self.counters.get(key)
                if counter is not None:
                    counter.spent += amount
        elif op == "x":
            self._release(event[1])
        elif op == "o":
            self._open(event[1], event[2], event[3], event[4], event[5])
        elif op == "f":
            counter = self.counters.get(event[1])
            if counter is not None and counter.start == event[2]:
                counter.fired.add(event[3])
        elif op == "b":
            budget: Budget = event[1]
            old = self.budgets.get(budget.id)
            self.budgets[budget.id] = budget
            for counter in self.counters.values():
                if counter.budget.id == budget.id:
                    counter.budget = budget
            if old is not None and (
                old.scope != budget.scope or old.period != budget.period or old.unit != budget.unit
            ):
                self._drop_counters(budget.id)
        elif op == "d":
            self.budgets.pop(event[1], None)
            self._drop_counters(event[1])
        else:
            raise ValueError(f"unknown budget event {op!r}")
        self.seq += 1

    def _drop_counters(self, budget_id: str) -> None:
        gone = {k for k, c in self.counters.items() if c.budget.id == budget_id}
        for key in gone:
            del self.counters[key]
        for res in self.reservations.values():
            res.items = [(k, a) for k, a in res.items if k not in gone]

    def _open(self, key: str, budget_id: str, values: tuple[str, ...], start: float, end: float) -> None:
        counter = self.counters.get(key)
        if counter is None:
            budget = self.budgets.get(budget_id)
            if budget is None:
                return
            self.counters[key] = Counter(key, budget, tuple(values), start, end)
            return
        counter.start, counter.end = start, end
        counter.spent = ZERO
        counter.fired = set()

    def reserve(
        self, rid: str, at: float, expires: float, match: tuple[str | None, ...], items: list[tuple[str, Decimal]]
    ) -> None:
        for key, amount in items:
            counter = self.counters.get(key)
            if counter is not None:
                counter.reserved += amount
        self.reservations[rid] = Reservation(rid, at, expires, match, items)
        queue = self.by_match.get(match)
        if queue is None:
            queue = self.by_match[match] = deque()
        queue.append(rid)
        self.expiry.append((expires, rid))

    def _release(self, rid: str) -> Reservation | None:
        res = self.reservations.pop(rid, None)
        if res is None:
            return None
        for key, amount in res.items:
            counter = self.counters.get(key)
            if counter is not None:
                counter.reserved -= amount
        queue = self.by_match.get(res.match)
        if queue:
            if queue[0] == rid:
                queue.popleft()
            else:
                with contextlib.suppress(ValueError):
                    queue.remove(rid)
            if not queue and len(self.by_match) > 10_000:
                self.by_match = {k: q for k, q in self.by_match.items() if q}
        return res

    def _settle(self, rid: str, actual: list[tuple[str, Decimal]]) -> None:
        self._release(rid)
        for key, amount in actual:
            counter = self.counters.get(key)
            if counter is not None:
                counter.spent += amount


Target = tuple[Budget, str, tuple[str, ...]]  # budget, counter key, values of its ``*`` dimensions
_INDEX = {dim: i for i, dim in enumerate(SCOPE_DIMENSIONS)}


def match_targets(budgets: Iterable[Budget], dims: tuple[str | None, ...]) -> list[Target]:
    """The budgets whose scope a call with these dimensions (in ``SCOPE_DIMENSIONS`` order) falls in."""
    found: list[Target] = []
    for budget in budgets:
        values: list[str] = []
        for dim, want in budget.scope:
            have = dims[_INDEX[dim]]
            if not have or (want not in (EACH, have)):
                break
            if want == EACH:
                values.append(have)
        else:
            key = budget.id if not values else budget.id + "|" + "|".join(values)
            found.append((budget, key, tuple(values)))
    return found


def actual_amounts(
    counters: Mapping[str, Counter],
    items: list[tuple[str, Decimal]],
    cost_usd: Decimal | None,
    tokens: int | None,
    requests: int,
) -> list[tuple[str, Decimal]]:
    """What a finished call charges each counter, in its unit; unknown cost or tokens keep the hold."""
    out: list[tuple[str, Decimal]] = []
    for key, reserved in items:
        counter = counters.get(key)
        if counter is None:
            continue
        unit = counter.budget.unit
        if unit is Unit.USD:
            out.append((key, reserved if cost_usd is None else cost_usd))
        elif unit is Unit.TOKENS:
            out.append((key, reserved if tokens is None else Decimal(tokens)))
        else:
            out.append((key, Decimal(requests)))
    return out


@functools.lru_cache(maxsize=4096)
def threshold_amounts(budget: Budget) -> tuple[tuple[int, Decimal], ...]:
    """(threshold %, the spend that reaches it), ascending."""
    return tuple((t, budget.limit * t / 100) for t in sorted(budget.thresholds))


def crossed_thresholds(counters: Mapping[str, Counter], keys: Iterable[str]) -> list[tuple[Counter, int]]:
    """Thresholds the spend of these counters has reached and that have not fired yet this period."""
    out: list[tuple[Counter, int]] = []
    for key in keys:
        counter = counters.get(key)
        if counter is None or counter.budget.period is Period.PER_REQUEST or counter.spent <= 0:
            continue
        for threshold, at_amount in threshold_amounts(counter.budget):
            if counter.spent < at_amount:
                break  # thresholds ascend
            if threshold not in counter.fired:
                out.append((counter, threshold))
    return out
