"""The budget engine: reserve before a call, settle after it, alert at thresholds, roll periods.

One lock guards all state, so "check the room, then take it" is one step: 100 concurrent calls
against room for 10 let at most 10 through. Every change goes through :meth:`BudgetBook._commit`,
which journals the event (when a data directory is given) and applies it — replay applies the
same events, so a restart recovers counters, reservations and fired thresholds exactly.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from costspan.processor.budgets._alerts import Alert, AlertBoard, SpikeDetector, spikes, threshold_alert
from costspan.processor.budgets._estimate import CostEstimator
from costspan.processor.budgets._journal import AUDIT, AuditLog, FsyncPolicy, Journal
from costspan.processor.budgets._model import (
    Budget,
    BudgetSpec,
    Call,
    Decision,
    Mode,
    Period,
    Unit,
    adaptive_candidates,
    parse_budget,
)
from costspan.processor.budgets._periods import window
from costspan.processor.budgets._state import (
    ZERO,
    BudgetState,
    Counter,
    Target,
    actual_amounts,
    crossed_thresholds,
    match_targets,
)
from costspan.processor.budgets._status import BudgetStatus, statuses

__all__ = ["BudgetBook"]

logger = logging.getLogger(__name__)

ONE = Decimal(1)
_ALLOW = Decision(True)
_USD, _TOKENS = Unit.USD, Unit.TOKENS
_SOFT, _HARD, _ADAPTIVE = Mode.SOFT, Mode.HARD, Mode.ADAPTIVE
_PER_REQUEST = Period.PER_REQUEST


class BudgetBook:
    """Budgets, their counters and reservations; thread-safe.

    ``data_dir`` (optional) holds the journal, snapshot and audit log; without it state lives in
    memory only. ``clock`` returns epoch seconds (tests inject one). ``alert_sinks`` are called with
    each :class:`Alert` outside the lock (a :class:`WebhookNotifier` is one).
    """

    def __init__(
        self,
        *,
        estimator: CostEstimator | None = None,
        clock: Callable[[], float] = time.time,
        data_dir: str | Path | None = None,
        fsync: FsyncPolicy = "interval",
        reservation_ttl: float = 300.0,
        snapshot_every: int = 50_000,
        alert_sinks: Iterable[Callable[[Alert], None]] = (),
        spike_detector: SpikeDetector | None = None,
        unpriced_estimate_usd: Decimal = ZERO,
        enabled: bool = True,
    ) -> None:
        if reservation_ttl <= 0 or snapshot_every < 1 or unpriced_estimate_usd < 0:
            raise ValueError("reservation_ttl > 0, snapshot_every >= 1 and unpriced_estimate_usd >= 0 are required")
        self.enabled = enabled
        self._clock = clock
        self._estimator = estimator or CostEstimator(clock=clock)
        self._ttl = reservation_ttl
        self._snapshot_every = snapshot_every
        self._unpriced = unpriced_estimate_usd
        self._lock = threading.Lock()
        self._journal = Journal(data_dir, fsync=fsync) if data_dir is not None else None
        self._state = self._journal.load() if self._journal is not None else BudgetState()
        self._snapshot_seq = self._state.seq
        self._audit = AuditLog(Path(data_dir) / AUDIT if data_dir is not None else None, clock=clock)
        self._targets: dict[tuple[str | None, ...], list[Target]] = {}
        self._rid_prefix = uuid.uuid4().hex[:10]
        self._rids = itertools.count(1)
        self.board = AlertBoard(alert_sinks)
        # the board's own list, deque and dict under the names the API, metrics and notifier read
        self.alert_sinks, self.alerts, self.alert_counts = self.board.sinks, self.board.recent, self.board.counts
        self.spike_detector = spike_detector
        #: budget id → calls blocked / degraded
        self.blocked_by: dict[str, int] = {}
        self.rewritten_by: dict[str, int] = {}
        self.blocked_total = 0
        self.rewritten_total = 0
        self.expired_total = 0
        self._closed = False

    def now(self) -> float:
        """The book's clock (epoch seconds)."""
        return self._clock()

    @property
    def estimator(self) -> CostEstimator:
        return self._estimator

    # --- budget definitions --------------------------------------------------------------------------
    def put_budget(self, spec: Budget | BudgetSpec | Mapping[str, Any], *, actor: str = "system") -> Budget:
        """Create or replace a budget (validated; raises ``InvalidBudgetError``); audited."""
        budget = spec if isinstance(spec, Budget) else parse_budget(spec)
        with self._lock:
            before = self._state.budgets.get(budget.id)
            if before == budget:
                return budget
            self._commit(["b", budget])
            self._targets = {}
        self._audit.write(
            actor, "update" if before else "create", budget.id, before.to_json() if before else None, budget.to_json()
        )
        return budget

    def delete_budget(self, budget_id: str, *, actor: str = "system") -> bool:
        with self._lock:
            before = self._state.budgets.get(budget_id)
            if before is None:
                return False
            self._commit(["d", budget_id])
            self._targets = {}
        self._audit.write(actor, "delete", budget_id, before.to_json(), None)
        return True

    def get_budget(self, budget_id: str) -> Budget | None:
        return self._state.budgets.get(budget_id)

    def budgets(self) -> list[Budget]:
        with self._lock:
            return list(self._state.budgets.values())

    def audit_log(self, budget_id: str | None = None) -> list[dict[str, Any]]:
        return self._audit.entries(budget_id)

    # --- the hot path -----------------------------------------------------------------------------------
    def check(self, call: Call) -> Decision:
        """Reserve the call's estimated cost against every budget whose scope matches, or refuse.

        All or nothing: either every matching budget has room (soft budgets always do) and the
        reservation is taken, or nothing is reserved. An adaptive budget without room tries each
        fallback model, then its ``max_tokens_cap``, then the fallbacks with the cap, before blocking.
        """
        if not self.enabled:
            return _ALLOW
        now = self._clock()
        dims = call.dims()
        with self._lock:
            expiry = self._state.expiry
            if expiry and expiry[0][0] <= now:
                self._sweep(now)
            counters, amounts, est, failing = self._evaluate(call, dims, now)
            if not counters:
                return _ALLOW
            if failing is None:
                return Decision(True, self._reserve(dims, counters, amounts, now), est[0] if est else None)
            if failing.budget.mode is Mode.ADAPTIVE:
                served = lambda m: self._estimator.prices(m, call.provider)  # noqa: E731
                for model, max_tokens in adaptive_candidates(failing.budget, call, served):
                    alt = replace(call, model=model, max_tokens=max_tokens)
                    alt_dims = alt.dims()
                    alt_counters, alt_amounts, alt_est, alt_failing = self._evaluate(alt, alt_dims, now)
                    if alt_failing is None:
                        self.rewritten_total += 1
                        self.rewritten_by[failing.budget.id] = self.rewritten_by.get(failing.budget.id, 0) + 1
                        rid = self._reserve(alt_dims, alt_counters, alt_amounts, now)
                        return Decision(
                            True,
                            rid,
                            alt_est[0] if alt_est else None,
                            model=model if model != call.model else None,
                            max_tokens=max_tokens if max_tokens != call.max_tokens else None,
                            reason=f"budget {failing.budget.id}: adaptive",
                        )
            self.blocked_total += 1
            self.blocked_by[failing.budget.id] = self.blocked_by.get(failing.budget.id, 0) + 1
            block = failing.block(amounts[counters.index(failing)])
            return Decision(False, None, est[0] if est else None, block=block)

    def _evaluate(
        self, call: Call, dims: tuple[str | None, ...], now: float
    ) -> tuple[list[Counter], list[Decimal], tuple[Decimal | None, int] | None, Counter | None]:
        counters = self._counters(dims, now)
        if not counters:
            return counters, [], None, None
        est = self._estimator.usd_and_tokens(call.model, call.provider, call.input_tokens, call.max_tokens, now)
        amounts: list[Decimal] = []
        failing: Counter | None = None
        for counter in counters:
            budget = counter.budget
            unit = budget.unit
            if unit is _USD:
                amount = est[0] if est[0] is not None else self._unpriced
            elif unit is _TOKENS:
                amount = Decimal(est[1])
            else:
                amount = ONE
            amounts.append(amount)
            mode = budget.mode
            if mode is _SOFT:
                continue
            used = amount if budget.period is _PER_REQUEST else counter.spent + counter.reserved + amount
            if used > budget.limit and (failing is None or (failing.budget.mode is _ADAPTIVE and mode is _HARD)):
                failing = counter
        return counters, amounts, est, failing

    def _reserve(
        self, match: tuple[str | None, ...], counters: list[Counter], amounts: list[Decimal], now: float
    ) -> str:
        rid = f"{self._rid_prefix}-{next(self._rids)}"
        items = [(c.key, a) for c, a in zip(counters, amounts, strict=True)]
        if self._journal is None:  # the same as _commit(["r", ...]) without building the event
            self._state.reserve(rid, now, now + self._ttl, match, items)
            self._state.seq += 1
        else:
            self._commit(["r", rid, now, now + self._ttl, match, items])
        return rid

    def _counters(self, dims: tuple[str | None, ...], now: float) -> list[Counter]:
        targets = self._targets.get(dims)
        if targets is None:
            targets = match_targets(self._state.budgets.values(), dims)
            if len(self._targets) >= 10_000:
                self._targets = {}
            self._targets[dims] = targets
        out: list[Counter] = []
        counters = self._state.counters
        for budget, key, values in targets:
            counter = counters.get(key)
            if counter is None or counter.end <= now:
                counter = self._roll(budget, key, values, now)
            out.append(counter)
        return out

    def _roll(self, budget: Budget, key: str, values: tuple[str, ...], now: float) -> Counter:
        start, end = window(budget.period, now, budget.timezone)
        self._commit(["o", key, budget.id, values, start, end])
        return self._state.counters[key]

    # --- after the call ----------------------------------------------------------------------------------
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

    def settle_call(self, call: Call, cost_usd: Decimal | None, tokens: int | None = None, requests: int = 1) -> bool:
        """Settle the oldest open reservation made for this call's scope and model, else :meth:`record` it.

        For a priced record that carries no reservation id. Returns True if a reservation was settled.
        """
        if not self.enabled:
            return False
        match = call.dims()
        now = self._clock()
        with self._lock:  # one step: two records of the same call never settle the same hold
            queue = self._state.by_match.get(match)
            alerts = self._settle_locked(queue[0], cost_usd, tokens, requests, now) if queue else None
            settled = alerts is not None
            if alerts is None:
                alerts = self._record_locked(call, cost_usd, tokens, requests, None, now)
        self.board.emit(alerts)
        return settled

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
        items = actual_amounts(self._state.counters, [(c.key, ZERO) for c in counters], cost_usd, tokens, requests)
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

    def _sweep(self, now: float) -> None:
        expiry = self._state.expiry
        reservations = self._state.reservations
        while expiry and expiry[0][0] <= now:
            _, rid = expiry.popleft()
            if rid in reservations:
                self.expired_total += 1
                self._commit(["x", rid])

    def expire(self) -> None:
        """Release reservations past their TTL now (also done on every check)."""
        with self._lock:
            self._sweep(self._clock())

    # --- state, durability ----------------------------------------------------------------------------------
    def _commit(self, event: list[Any]) -> None:
        if self._journal is not None:
            self._journal.append(self._state.seq + 1, event)
        self._state.apply(event)

    def status(self, budget_id: str | None = None) -> list[BudgetStatus]:
        """Every budget (or one), each ``*`` scope instance on its own row."""
        now = self._clock()
        with self._lock:
            return statuses(self._state, budget_id, now)

    def open_reservations(self) -> int:
        return len(self._state.reservations)

    def snapshot(self) -> None:
        """Write a snapshot now (no-op without a data directory)."""
        with self._lock:
            self._snapshot_locked()

    def _snapshot_locked(self) -> None:
        if self._journal is not None:
            self._journal.snapshot(self._state)
            self._snapshot_seq = self._state.seq

    def close(self) -> None:
        """Snapshot and close the journal. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._snapshot_locked()
            if self._journal is not None:
                self._journal.close()
