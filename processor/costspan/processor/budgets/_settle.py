"""After the call: settle a reservation with what the call cost, record unreserved spend, raise alerts.

Spend is charged to the period that contains the call's start (``at``, epoch seconds; a start in
the future is taken as now): a counter whose current period does not contain it is not charged, so
a call from yesterday never counts in today's budget, nor last month's in this month's. Without
``at`` the call is taken to have started now.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import NamedTuple

from costspan.processor.budgets._alerts import Alert, AlertBoard, threshold_alert
from costspan.processor.budgets._journal import JournaledState
from costspan.processor.budgets._match import Matches
from costspan.processor.budgets._model import Budget, Call, Unit
from costspan.processor.budgets._state import ZERO, Counter, actual_amounts, crossed_thresholds

__all__ = ["Settlement", "Spend", "in_period"]


class Spend(NamedTuple):
    """What stored calls spent, in every unit a budget may count."""

    cost: Decimal = ZERO
    tokens: int = 0
    requests: int = 0


def in_period(counter: Counter, at: float | None) -> bool:
    """Whether a call started at ``at`` (None: now) counts in ``counter``'s current period."""
    return at is None or counter.start <= at < counter.end


class Settlement:
    """What a :class:`~costspan.processor.budgets.BudgetBook` does when calls finish.

    Each change is one event committed to ``log`` under the book's ``lock``; the thresholds and
    spikes that spend crosses go out through ``board`` after the lock is released. The book's
    on/off switch is the book's: it decides whether to call here at all.
    """

    __slots__ = ("_board", "_clock", "_lock", "_log", "_matches", "_state")

    def __init__(
        self,
        lock: threading.Lock,
        log: JournaledState,
        matches: Matches,
        board: AlertBoard,
        clock: Callable[[], float],
    ) -> None:
        self._lock = lock
        self._log = log
        self._state = log.state  # read here; changed only through log
        self._matches = matches
        self._board = board
        self._clock = clock

    def settle(
        self, reservation_id: str, cost_usd: Decimal | None, tokens: int | None, requests: int, at: float | None = None
    ) -> bool:
        """Replace a reservation by what the call cost; False if it is unknown (settled or expired)."""
        now = self._clock()
        with self._lock:
            alerts = self._settle_locked(reservation_id, cost_usd, tokens, requests, now, at)
        if alerts is None:
            return False
        self._board.emit(alerts)
        return True

    def release(self, reservation_id: str) -> bool:
        """Give a reservation back unspent; False if it is unknown."""
        with self._lock:
            if reservation_id not in self._state.reservations:
                return False
            self._log.commit(["x", reservation_id])
            return True

    def settle_call(
        self,
        call: Call,
        cost_usd: Decimal | None,
        tokens: int | None,
        requests: int,
        reservation_id: str | None,
        at: float | None = None,
    ) -> bool:
        """Settle the call's reservation (that one by id, else the oldest of its scope and model), else
        record its spend; True if one was settled. See :meth:`BudgetBook.settle_call`."""
        now = self._clock()
        with self._lock:  # one step: two records of the same call never settle the same hold
            if reservation_id:
                alerts = self._settle_locked(reservation_id, cost_usd, tokens, requests, now, at)
            else:
                queue = self._state.by_match.get(call.dims())
                alerts = self._settle_locked(queue[0], cost_usd, tokens, requests, now, at) if queue else None
            settled = alerts is not None
            if alerts is None:
                alerts = self._record_locked(call, cost_usd, tokens, requests, at, now)
        self._board.emit(alerts)
        return settled

    def record_unreserved(
        self, call: Call, cost_usd: Decimal | None, tokens: int | None, requests: int, at: float | None = None
    ) -> bool:
        """Charge ``requests`` calls of ``call``'s scope and model at once unless a reservation of that
        scope and model is open (then False, nothing charged)."""
        now = self._clock()
        with self._lock:
            if self._state.by_match.get(call.dims()):
                return False
            alerts = self._record_locked(call, cost_usd, tokens, requests, at, now)
        self._board.emit(alerts)
        return True

    def record(self, call: Call, cost_usd: Decimal | None, tokens: int | None, requests: int, at: float | None) -> None:
        """Charge spend that arrived without a reservation (to the periods containing ``at``, if given)."""
        now = self._clock()
        with self._lock:
            alerts = self._record_locked(call, cost_usd, tokens, requests, at, now)
        self._board.emit(alerts)

    def seed(self, budget: Budget, spend: Mapping[tuple[str, tuple[str, ...]], Spend]) -> None:
        """Charge a budget just created what was already spent in its current period: ``spend`` by
        (counter key, values of its ``*`` dimensions). One ``["c", ...]`` event, at the period start."""
        now = self._clock()
        with self._lock:
            counters = self._state.counters
            items: list[tuple[str, Decimal]] = []
            start: float | None = None
            for (key, values), s in spend.items():
                counter = counters.get(key)
                if counter is None or counter.end <= now:
                    counter = self._log.roll(budget, key, values, now)
                start = counter.start
                unit = budget.unit
                items.append(
                    (key, s.cost if unit is Unit.USD else Decimal(s.tokens if unit is Unit.TOKENS else s.requests))
                )
            if not items:
                return
            self._log.commit(["c", items, start])
            alerts = self._after_spend([k for k, _ in items], now, (), None)
        self._board.emit(alerts)

    # --- under the lock ---------------------------------------------------------------------------------
    def _settle_locked(
        self,
        reservation_id: str,
        cost_usd: Decimal | None,
        tokens: int | None,
        requests: int,
        now: float,
        at: float | None,
    ) -> list[Alert] | None:
        state = self._state
        res = state.reservations.get(reservation_id)
        if res is None:
            return None
        counters = state.counters
        for key, _ in res.items:
            counter = counters.get(key)
            if counter is not None and counter.end <= now:
                self._log.roll(counter.budget, key, counter.values, now)
        if at is not None and at > now:
            at = now
        # the hold is released on every counter; the actual spend goes only to the periods of the call's start
        items = [
            (k, a)
            for k, a in actual_amounts(counters, res.items, cost_usd, tokens, requests)
            if in_period(counters[k], at)
        ]
        self._log.commit(["s", reservation_id, items, at])
        return self._after_spend([k for k, _ in items], now, res.match, cost_usd, at)

    def _record_locked(
        self, call: Call, cost_usd: Decimal | None, tokens: int | None, requests: int, at: float | None, now: float
    ) -> list[Alert]:
        dims = call.dims()
        if at is not None and at > now:
            at = now
        counters = [c for c in self._matches.get(dims, now).counters if in_period(c, at)]
        if not counters:
            return self._board.spikes(dims, cost_usd, now if at is None else at)
        items = actual_amounts(self._state.counters, [(c.key, 0) for c in counters], cost_usd, tokens, requests)
        self._log.commit(["c", items, at])
        return self._after_spend([c.key for c in counters], now, dims, cost_usd, at)

    def _after_spend(
        self,
        keys: list[str],
        now: float,
        match: tuple[str | None, ...],
        cost_usd: Decimal | None,
        at: float | None = None,
    ) -> list[Alert]:
        log = self._log
        alerts: list[Alert] = []
        for counter, threshold in crossed_thresholds(self._state.counters, keys):
            log.commit(["f", counter.key, counter.start, threshold])
            alerts.append(threshold_alert(counter, threshold, now))
        if match:
            alerts += self._board.spikes(match, cost_usd, now if at is None else at)
        log.snapshot_if_due()
        return alerts
