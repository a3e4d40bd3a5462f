"""The budget state machine: every change is one event, applied the same way live and on replay.

Events are JSON-ready lists (amounts as ``Decimal``; the journal writes them as strings). Live, a
reservation holds whole units (:mod:`._units`: pico-dollars, tokens, requests) on its counters; a
replayed ``"r"`` turns its amounts into those units the same way.

- ``["b", budget_json]`` put a budget; ``["d", budget_id]`` delete it (and its counters)
- ``["o", key, budget_id, values, start, end]`` open or roll a counter to a new period (spent and
  fired marks reset; outstanding reservations carry over)
- ``["r", rid, at, expires, match, [[key, amount], ...]]`` reserve
- ``["s", rid, [[key, amount], ...], at]`` settle: release the reservation, charge the actual amounts
- ``["x", rid]`` a reservation expired unsettled: release it
- ``["c", [[key, amount], ...], at]`` charge spend that came without a reservation
- ``["f", key, start, threshold]`` a threshold alert fired for the period starting at ``start``

``at`` is when the charged call started (epoch seconds): a counter whose current period does not
contain it is not charged. Journals written before ``at`` existed have none (``None``: charged).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple

from costspan.processor.budgets._model import EACH, SCOPE_DIMENSIONS, Block, Budget, Mode, Period, Unit
from costspan.processor.budgets._units import from_units, room_units, to_units

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
_new_reservation = tuple.__new__  # a named tuple without its Python ``__new__`` (the check's hot path)


@dataclass(slots=True)
class Counter:
    """Spend of one budget (one scope instance of it, for ``*`` scopes) in its current period."""

    key: str
    budget: Budget
    values: tuple[str, ...]  # values of the budget's ``*`` dimensions, in scope order
    start: float
    end: float
    spent: Decimal = ZERO
    #: What open reservations hold, in whole units of the budget's unit (pico-dollars for USD).
    held: int = 0
    fired: set[int] = field(default_factory=set)
    #: ``limit - spent`` in whole units, floored: a hold of ``n`` more fits exactly when ``n <= room - held``.
    room: int = 0
    #: Spend leases (docs/scale-out.md, only with peers): whether this counter draws on a lease, the most
    #: this instance may spend in the current period (None: no lease cap), and why a call is refused
    #: beyond it. Not journaled: a lease is asked for again after a restart.
    leased: bool = False
    cap: Decimal | None = None
    lease_note: str = ""

    def __post_init__(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Recompute :attr:`room` after ``spent``, the budget's limit or the lease cap changed."""
        unit = self.budget.unit
        self.room = room_units(self.budget.limit, self.spent, unit)
        if self.cap is not None:
            self.room = min(self.room, room_units(self.cap, self.spent, unit))

    @property
    def reserved(self) -> Decimal:
        return from_units(self.held, self.budget.unit)

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
            note=self.lease_note if self.cap is not None else "",
        )

    def scope(self) -> dict[str, str]:
        scope = self.budget.scope_dict
        for dim, value in zip(self.budget.each_dimensions, self.values, strict=True):
            scope[dim] = value
        return scope


class Reservation(NamedTuple):
    """An estimate held on counters until the call settles it (a named tuple: one is made per check)."""

    rid: str
    at: float
    expires: float
    match: tuple[str | None, ...]  # the call's dimensions, to settle a record that carries no reservation id
    items: list[tuple[str, int]]  # (counter key, units held on it)


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
        alert_emails=tuple(data.get("alert_emails", ())),
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
        return ["s", raw[1], _amounts(raw[2]), _at(raw, 3)]
    if op == "c":
        return ["c", _amounts(raw[1]), _at(raw, 2)]
    if op == "f":
        return ["f", raw[1], _float(raw[2]), int(raw[3])]
    if op in ("d", "x"):
        return [op, raw[1]]
    raise ValueError(f"unknown budget journal event {op!r}")


def _at(raw: list[Any], i: int) -> float | None:
    """The call start of a charge event; None in journals written before it was recorded."""
    return float(raw[i]) if len(raw) > i and raw[i] is not None else None


def encode_event(event: list[Any]) -> list[Any]:
    op = event[0]
    if op == "b":
        return ["b", event[1].to_json()]
    if op == "o":
        return ["o", event[1], event[2], list(event[3]), _enc_float(event[4]), _enc_float(event[5])]
    if op == "r":
        return ["r", event[1], event[2], event[3], list(event[4]), encode_amounts(event[5])]
    if op == "s":
        return ["s", event[1], encode_amounts(event[2]), *event[3:]]
    if op == "c":
        return ["c", encode_amounts(event[1]), *event[2:]]
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
        self.seq = 0
        #: Which budgets draw on spend leases (None: none, a single node): their counters open with no room
        #: until a lease arrives (budgets/_lessee.py).
        self.leased: Callable[[Budget], bool] | None = None

    def apply(self, event: list[Any]) -> None:
        op = event[0]
        if op == "r":
            self.reserve(event[1], event[2], event[3], event[4], event[5])
        elif op == "s":
            self._settle(event[1], event[2], event[3] if len(event) > 3 else None)
        elif op == "c":
            self._charge(event[1], event[2] if len(event) > 2 else None)
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
                    counter.refresh()
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
        for rid, res in list(self.reservations.items()):
            if any(k in gone for k, _ in res.items):
                self.reservations[rid] = res._replace(items=[(k, a) for k, a in res.items if k not in gone])

    def _open(self, key: str, budget_id: str, values: tuple[str, ...], start: float, end: float) -> None:
        counter = self.counters.get(key)
        if counter is None:
            budget = self.budgets.get(budget_id)
            if budget is None:
                return
            counter = self.counters[key] = Counter(key, budget, tuple(values), start, end)
            if self.leased is not None and self.leased(budget):
                counter.leased, counter.cap = True, ZERO
                counter.refresh()
            return
        counter.start, counter.end = start, end
        counter.spent = ZERO
        counter.fired = set()
        if counter.leased:
            counter.cap = ZERO  # the last period's lease is spent: the next one is asked for
        counter.refresh()

    def reserve(
        self, rid: str, at: float, expires: float, match: tuple[str | None, ...], items: list[tuple[str, Decimal]]
    ) -> None:
        """Apply a replayed ``["r", ...]``: its amounts become whole units on each counter still there."""
        held: list[tuple[str, int]] = []
        for key, amount in items:
            counter = self.counters.get(key)
            if counter is not None:
                units = to_units(amount, counter.budget.unit)
                counter.held += units
                held.append((key, units))
        self.hold(rid, at, expires, match, held)

    def hold(
        self, rid: str, at: float, expires: float, match: tuple[str | None, ...], items: list[tuple[str, int]]
    ) -> None:
        """Register a reservation whose ``items`` are already added to their counters' ``held``.

        With that addition this is ``["r", ...]`` applied; the live check then counts the event in ``seq``.
        """
        self.reservations[rid] = _new_reservation(Reservation, (rid, at, expires, match, items))
        queue = self.by_match.get(match)
        if queue is None:
            queue = self.by_match[match] = deque()
        queue.append(rid)

    def take(
        self, rid: str, at: float, expires: float, match: tuple[str | None, ...], items: list[tuple[str, int]]
    ) -> None:
        """The live check's ``["r", ...]``: :meth:`hold`, counted in ``seq`` as :meth:`apply` counts an event.

        :meth:`hold`'s body is repeated here, not called: this runs on every check.
        """
        self.reservations[rid] = _new_reservation(Reservation, (rid, at, expires, match, items))
        queue = self.by_match.get(match)
        if queue is None:
            queue = self.by_match[match] = deque()
        queue.append(rid)
        self.seq += 1

    def due(self, now: float) -> tuple[list[str], float | None]:
        """Open reservations past their expiry, oldest first, and the next expiry after them (None: none open).

        Reservations are kept in the order they were made, so expiries ascend (a clock that steps back
        only makes a reservation wait for the one before it).
        """
        out: list[str] = []
        for rid, res in self.reservations.items():
            if res.expires > now:
                return out, res.expires
            out.append(rid)
        return out, None

    def _release(self, rid: str) -> Reservation | None:
        res = self.reservations.pop(rid, None)
        if res is None:
            return None
        for key, units in res.items:
            counter = self.counters.get(key)
            if counter is not None:
                counter.held -= units
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

    def _settle(self, rid: str, actual: list[tuple[str, Decimal]], at: float | None) -> None:
        self._release(rid)
        self._charge(actual, at)

    def _charge(self, amounts: list[tuple[str, Decimal]], at: float | None) -> None:
        for key, amount in amounts:
            counter = self.counters.get(key)
            if counter is not None and (at is None or counter.start <= at < counter.end):
                counter.spent += amount
                counter.refresh()

    def held_amounts(self, res: Reservation) -> list[tuple[str, Decimal]]:
        """A reservation's holds as amounts in each counter's unit (for the journal and snapshots)."""
        counters = self.counters
        return [(k, from_units(u, counters[k].budget.unit)) for k, u in res.items if k in counters]


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
    items: list[tuple[str, int]],
    cost_usd: Decimal | None,
    tokens: int | None,
    requests: int,
) -> list[tuple[str, Decimal]]:
    """What a finished call charges each counter, in its unit; unknown cost or tokens keep the hold.

    ``items`` are (counter key, units held) as in a :class:`Reservation` (0 for unreserved spend).
    """
    out: list[tuple[str, Decimal]] = []
    for key, held in items:
        counter = counters.get(key)
        if counter is None:
            continue
        unit = counter.budget.unit
        if unit is Unit.USD:
            out.append((key, from_units(held, unit) if cost_usd is None else cost_usd))
        elif unit is Unit.TOKENS:
            out.append((key, Decimal(held) if tokens is None else Decimal(tokens)))
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
