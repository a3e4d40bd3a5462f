"""After the call: settle a reservation with what the call cost, record unreserved spend, fire alerts."""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from costspan.processor.budgets._alerts import Alert, AlertBoard, SpikeDetector, spikes, threshold_alert
from costspan.processor.budgets._journal import Journal
from costspan.processor.budgets._model import Budget, Call
from costspan.processor.budgets._state import BudgetState, Counter, actual_amounts, crossed_thresholds

__all__ = ["BudgetSettlement"]


class BudgetSettlement:
    """The settling half of :class:`~costspan.processor.budgets.BudgetBook` (same lock, same state).

    Every change is one ``_commit``-ed event; alerts go out through ``board`` outside the lock.
    """

    enabled: bool
    board: AlertBoard
    spike_detector: SpikeDetector | None
    _lock: threading.Lock
    _state: BudgetState
    _clock: Callable[[], float]
    _journal: Journal | None
    _snapshot_seq: int
    _snapshot_every: int

    if TYPE_CHECKING:  # provided by BudgetBook

        def _commit(self, event: list[Any]) -> None: ...
        def _roll(self, budget: Budget, key: str, values: tuple[str, ...], now: float) -> Counter: ...
        def _counters(self, dims: tuple[str | None, ...], now: float) -> tuple[Counter, ...]: ...
        def _snapshot_locked(self) -> None: ...

    def settle(
        self,
        reservation_id: str,
        cost_usd: Decimal | None,
        tokens: int | None = None,
        requests: int = 1,
    ) -> bool:
        """Replace a reservation by what the call cost; False if it is unknown (settled or expired).

        An unpriced call (``cost_usd=None``) or unknown token count keeps the reserved estimate.
        """
        now = self._clock()
        with self._lock:
            alerts = self._settle_locked(reservation_id, cost_usd, tokens, requests, now)
        if alerts is None:
            return False
        self.board.emit(alerts)
        return True

    def _settle_locked(
        self, reservation_id: str, cost_usd: Decimal | None, tokens: int | None, requests: int, now: float
    ) -> list[Alert] | None:
        res = self._state.reservations.get(reservation_id)
        if res is None:
            return None
        for key, _ in res.items:
            counter = self._state.counters.get(key)
            if counter is not None and counter.end <= now:
                self._roll(counter.budget, key, counter.values, now)
        items = actual_amounts(self._state.counters, res.items, cost_usd, tokens, requests)
        self._commit(["s", reservation_id, items])
        return self._after_spend([k for k, _ in items], now, res.match, cost_usd)

    def release(self, reservation_id: str) -> bool:
        """Give a reservation back unspent (the call was never sent)."""
        with self._lock:
            if reservation_id not in self._state.reservations:
                return False
            self._commit(["x", reservation_id])
            return True

    def settle_call(
        self,
        call: Call,
        cost_usd: Decimal | None,
        tokens: int | None = None,
        requests: int = 1,
        *,
        reservation_id: str | None = None,
    ) -> bool:
        """Settle a finished call's reservation, else :meth:`record` its spend. True if one was settled.

        With ``reservation_id`` (the span's ``costspan.budget.reservation_id``) exactly that
        reservation is settled; if it is no longer open (expired, or taken by another book) the spend
        is recorded and no other reservation is touched. Without it, the oldest open reservation made
        for the same scope and model is settled: a record whose model differs from the request's (a
        snapshot alias) finds none, and its reservation waits for the TTL.
        """
        if not self.enabled:
            return False
        now = self._clock()
        with self._lock:  # one step: two records of the same call never settle the same hold
            if reservation_id:
                alerts = self._settle_locked(reservation_id, cost_usd, tokens, requests, now)
            else:
                queue = self._state.by_match.get(call.dims())
                alerts = self._settle_locked(queue[0], cost_usd, tokens, requests, now) if queue else None
            settled = alerts is not None
            if alerts is None:
                alerts = self._record_locked(call, cost_usd, tokens, requests, None, now)
        self.board.emit(alerts)
        return settled

    def record_unreserved(self, call: Call, cost_usd: Decimal | None, tokens: int | None, requests: int) -> bool:
        """Charge ``requests`` finished calls of ``call``'s scope and model at once, as :meth:`settle_call`
        would one by one, if no reservation of that scope and model is open (then nothing is settled by
        them). False, charging nothing, when one is open: the caller settles the calls one by one."""
        if not self.enabled:
            return True
        now = self._clock()
        with self._lock:
            if self._state.by_match.get(call.dims()):
                return False
            alerts = self._record_locked(call, cost_usd, tokens, requests, None, now)
        self.board.emit(alerts)
        return True

    def record(
        self,
        call: Call,
        cost_usd: Decimal | None,
        tokens: int | None = None,
        requests: int = 1,
        at: float | None = None,
    ) -> None:
        """Charge spend that arrived without a reservation (e.g. another service's span)."""
        if not self.enabled:
            return
        now = self._clock()
        with self._lock:
            alerts = self._record_locked(call, cost_usd, tokens, requests, at, now)
        self.board.emit(alerts)

    def _record_locked(
        self, call: Call, cost_usd: Decimal | None, tokens: int | None, requests: int, at: float | None, now: float
    ) -> list[Alert]:
        dims = call.dims()
        counters = [c for c in self._counters(dims, now) if at is None or at >= c.start]
        if not counters:
            return spikes(self.spike_detector, dims, cost_usd, at or now)
        items = actual_amounts(self._state.counters, [(c.key, 0) for c in counters], cost_usd, tokens, requests)
        self._commit(["c", items])
        return self._after_spend([c.key for c in counters], now, dims, cost_usd)

    def _after_spend(
        self, keys: list[str], now: float, match: tuple[str | None, ...], cost_usd: Decimal | None
    ) -> list[Alert]:
        alerts: list[Alert] = []
        for counter, threshold in crossed_thresholds(self._state.counters, keys):
            self._commit(["f", counter.key, counter.start, threshold])
            alerts.append(threshold_alert(counter, threshold, now))
        alerts += spikes(self.spike_detector, match, cost_usd, now)
        if self._journal is not None and self._state.seq - self._snapshot_seq >= self._snapshot_every:
            self._snapshot_locked()
        return alerts
