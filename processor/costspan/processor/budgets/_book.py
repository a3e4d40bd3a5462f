"""The budget engine: reserve before a call, settle after it, alert at thresholds, roll periods.

One lock guards all state, so "check the room, then take it" is one step: 100 concurrent calls
against room for 10 let at most 10 through. Every change is one event that
:class:`~._journal.JournaledState` journals (when a data directory is given) and applies — replay
applies the same events, so a restart recovers counters, reservations and fired thresholds exactly.

:class:`BudgetBook` makes the pre-call check itself and composes the rest, each behind a small
interface and sharing the book's lock: the state and its journal (:class:`~._journal.JournaledState`),
the per-scope counter cache (:class:`~._match.Matches`), the definitions (:class:`~._definitions.BudgetDefinitions`),
settlement (:class:`~._settle.Settlement`) and alerts (:class:`~._alerts.AlertBoard`). The check holds
reservations as integers (:mod:`._units`).
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from costspan.processor.budgets._alerts import Alert, AlertBoard, SpikeDetector
from costspan.processor.budgets._definitions import BudgetDefinitions
from costspan.processor.budgets._estimate import LINEAR_UP_TO, CostEstimator
from costspan.processor.budgets._journal import AUDIT, AuditLog, FsyncPolicy, JournaledState
from costspan.processor.budgets._match import Match, Matches
from costspan.processor.budgets._model import (
    Budget,
    BudgetSpec,
    Call,
    Decision,
    Mode,
    Period,
    Unit,
    adaptive_candidates,
)
from costspan.processor.budgets._refusals import as_refusing
from costspan.processor.budgets._seed import SpendSource, put_seeded
from costspan.processor.budgets._settle import Settlement
from costspan.processor.budgets._state import ZERO, Counter
from costspan.processor.budgets._status import BudgetStatus, scope_status, statuses
from costspan.processor.budgets._units import from_units, to_units

__all__ = ["BudgetBook"]

logger = logging.getLogger(__name__)

_ALLOW = Decision(True)
_USD, _TOKENS = Unit.USD, Unit.TOKENS
_SOFT, _HARD, _ADAPTIVE = Mode.SOFT, Mode.HARD, Mode.ADAPTIVE
_PICO = Decimal("1E-12")
_EXACT_BELOW = 10**28
_new = tuple.__new__  # builds a named tuple without its Python ``__new__`` (a third of a microsecond)
_token_hex = secrets.token_hex
#: Reservation ids: this prefix and 128 random bits (unguessable: an id is the right to settle it).
RESERVATION_PREFIX = "rsv_"
_FOREIGN = "\x00foreign"  # an id no reservation has: settling it records the call's spend instead


_LAPSED = "its lease expired before the owner renewed it; refused (lease_owner_down=closed)"


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
        self._unpriced_pico = to_units(unpriced_estimate_usd, Unit.USD)
        self._lock = threading.Lock()
        # the collaborators, each behind the same lock
        self._log = JournaledState(data_dir, fsync=fsync, snapshot_every=snapshot_every)
        self._state = self._log.state
        self._matches = Matches(self._log)
        self._match_cache = self._matches.cache  # read by the check directly (one dict lookup)
        self._reserve = self._log.reserve  # the check's one write: ["r", ...] for the holds it took
        self.board = AlertBoard(alert_sinks, spike_detector)
        audit = AuditLog(Path(data_dir) / AUDIT if data_dir is not None else None, clock=clock)
        self._definitions = BudgetDefinitions(self._lock, self._log, self._matches, audit)
        self._settlement = Settlement(self._lock, self._log, self._matches, self.board, clock)
        # the board's own list, deque and dict under the names the API, metrics and notifier read
        self.alert_sinks, self.alerts, self.alert_counts = self.board.sinks, self.board.recent, self.board.counts
        self._next_expiry = -math.inf  # when the oldest open reservation expires (the first check looks)
        #: leased counter key → (period start, when its lease lapses on this book's clock): see lease_due
        self._lease_due: dict[str, tuple[float, float]] = {}
        #: counter key → start of the period in which it refused its latest call (cleared when it admits one)
        self._refusing: dict[str, float] = {}
        #: budget id → calls blocked / degraded
        self.blocked_by: dict[str, int] = {}
        self.rewritten_by: dict[str, int] = {}
        self.blocked_total = 0
        self.rewritten_total = 0
        self.expired_total = 0
        self._closed = False
        #: Where a new budget's spend so far comes from (None: it starts at 0); see :func:`put_seeded`.
        self.spend_source: SpendSource | None = None

    def now(self) -> float:
        """The book's clock (epoch seconds)."""
        return self._clock()

    @property
    def estimator(self) -> CostEstimator:
        return self._estimator

    @property
    def spike_detector(self) -> SpikeDetector | None:
        """The cost-spike rule fed by every charged call (None: off); may be replaced at any time."""
        return self.board.spike_detector

    @spike_detector.setter
    def spike_detector(self, detector: SpikeDetector | None) -> None:
        self.board.spike_detector = detector

    # --- definitions --------------------------------------------------------------------------------------
    def put_budget(self, spec: Budget | BudgetSpec | Mapping[str, Any], *, actor: str = "system") -> Budget:
        """Create or replace a budget (validated; raises ``InvalidBudgetError``); audited.

        With a :attr:`spend_source`, a new budget (or one whose scope, period or unit changed) starts
        from what its scope already spent in the current period.
        """
        if self.spend_source is None:
            return self._definitions.put(spec, actor=actor)
        return put_seeded(self._definitions, self._settlement, self.spend_source, spec, actor, self._clock)

    def delete_budget(self, budget_id: str, *, actor: str = "system") -> bool:
        return self._definitions.delete(budget_id, actor=actor)

    def get_budget(self, budget_id: str) -> Budget | None:
        return self._definitions.get(budget_id)

    def budgets(self) -> list[Budget]:
        return self._definitions.all()

    def audit_log(self, budget_id: str | None = None) -> list[dict[str, Any]]:
        return self._definitions.audit_log(budget_id)

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
        dims = (call.tenant, call.service, call.workflow, call.user, call.project, call.provider, call.model)
        with self._lock:
            if now >= self._next_expiry:
                self._sweep(now)
            match = self._match_cache.get(dims)
            if match is None or match.until <= now:
                match = self._matches.match(dims, now)
            if not match.counters:
                return _ALLOW
            # the estimate, as CostEstimator.pico_and_tokens makes it, inlined for the usual call
            rate, n_in, n_out = match.rate, call.input_tokens, call.max_tokens
            if (
                rate is not None
                and rate.expires > now
                and n_in is not None
                and n_out is not None
                and 0 <= n_in <= LINEAR_UP_TO
                and 0 <= n_out <= rate.out_cap
            ):
                pico: int | None = rate.in_p * n_in + rate.out_p * n_out + rate.base_p
                tokens = n_in + n_out
            else:
                pico, tokens = self._estimate(call, match, now)
            usd = self._unpriced_pico if pico is None else pico
            rid = self._take(dims, match, usd, tokens, now)
            if rid is None:
                return self._refuse_or_degrade(call, match, usd, tokens, pico, now)
            # from_units(pico, USD) inlined: exact below 10**28 pico-dollars (28 digits)
            est = None if pico is None else _PICO * pico if pico < _EXACT_BELOW else from_units(pico, _USD)
            return _new(Decision, (True, rid, est, None, None, None, ""))

    def _estimate(self, call: Call, match: Match, now: float) -> tuple[int | None, int]:
        if call.model:
            rate = self._estimator.rate(call.model, call.provider, now)
            match.rate = rate if rate.base is not None else None
        return self._estimator.pico_and_tokens(call.model, call.provider, call.input_tokens, call.max_tokens, now)

    def _take(self, dims: tuple[str | None, ...], match: Match, usd: int, tokens: int, now: float) -> str | None:
        """Reserve ``usd`` pico-dollars / ``tokens`` / one request on every counter of ``match``, if all
        non-soft ones have room (else None, nothing held): the event ``["r", ...]``, journaled first.

        Integers: ``n <= room - held`` is exactly ``spent + reserved + amount <= limit``.
        """
        for counter, unit, per_request, cap in match.checks:
            if (usd if unit is _USD else tokens if unit is _TOKENS else 1) > (
                cap if per_request else counter.room - counter.held
            ):
                return None
        items: list[tuple[str, int]] = []
        for counter, key, unit in match.holds:
            n = usd if unit is _USD else tokens if unit is _TOKENS else 1
            counter.held += n
            items.append((key, n))
        rid = RESERVATION_PREFIX + _token_hex(16)
        if self._refusing:
            for counter, _, _ in match.holds:
                self._refusing.pop(counter.key, None)
        try:
            self._reserve(rid, now, now + self._ttl, dims, items)
        except BaseException:
            for (counter, *_), (_, n) in zip(match.holds, items, strict=True):
                counter.held -= n  # not journaled: not held
            raise
        return rid

    @staticmethod
    def _without_room(match: Match, usd: int, tokens: int) -> Counter:
        """The counter that refuses the call: a hard budget out of room wins over an adaptive one
        (degrading cannot help then)."""
        failing: Counter | None = None
        for counter, _, unit, mode, per_request, cap in match.slots:
            if mode is _SOFT:
                continue
            n = usd if unit is _USD else tokens if unit is _TOKENS else 1
            if n > (cap if per_request else counter.room - counter.held) and (
                failing is None or (failing.budget.mode is _ADAPTIVE and mode is _HARD)
            ):
                failing = counter
        assert failing is not None, "called after _take found no room"
        return failing

    def _refuse_or_degrade(
        self,
        call: Call,
        match: Match,
        usd: int,
        tokens: int,
        pico: int | None,
        now: float,
    ) -> Decision:
        failing = self._without_room(match, usd, tokens)
        budget = failing.budget
        if budget.mode is _ADAPTIVE:
            served = lambda m: self._estimator.prices(m, call.provider)  # noqa: E731
            for model, max_tokens in adaptive_candidates(budget, call, served):
                alt = replace(call, model=model, max_tokens=max_tokens)
                alt_dims = alt.dims()
                alt_match = self._matches.get(alt_dims, now)
                alt_pico, alt_tokens = self._estimator.pico_and_tokens(
                    alt.model, alt.provider, alt.input_tokens, alt.max_tokens, now
                )
                alt_usd = self._unpriced_pico if alt_pico is None else alt_pico
                rid = self._take(alt_dims, alt_match, alt_usd, alt_tokens, now) if alt_match.slots else None
                if rid is not None or not alt_match.slots:
                    self.rewritten_total += 1
                    self.rewritten_by[budget.id] = self.rewritten_by.get(budget.id, 0) + 1
                    return Decision(
                        True,
                        rid,
                        None if alt_pico is None else from_units(alt_pico, _USD),
                        model=model if model != call.model else None,
                        max_tokens=max_tokens if max_tokens != call.max_tokens else None,
                        reason=f"budget {budget.id}: adaptive",
                    )
        self.blocked_total += 1
        self.blocked_by[budget.id] = self.blocked_by.get(budget.id, 0) + 1
        self._refusing[failing.key] = failing.start
        unit = budget.unit
        requested = from_units(usd if unit is _USD else tokens if unit is _TOKENS else 1, unit)
        estimate = None if pico is None else from_units(pico, _USD)
        basis = self._estimator.basis(call.model, call.provider, call.input_tokens, call.max_tokens, now)
        block = replace(failing.block(requested), estimate_usd=estimate, basis=basis, mode=budget.mode)
        return Decision(False, None, estimate, block=block)

    def _sweep(self, now: float) -> None:
        """Release the reservations past their TTL; note when the next one is due."""
        expired, due = self._state.due(now)
        for rid in expired:
            self.expired_total += 1
            self._log.commit(["x", rid])
        # a reservation made from now on expires no sooner than now + TTL
        self._next_expiry = now + self._ttl if due is None else due
        if self._lease_due:
            self._lapse_leases(now)

    def lease_due(self, key: str, start: float, deadline: float) -> None:
        """The lease capping counter ``key`` (period ``start``) lapses at ``deadline`` (this book's clock).

        From then on the check admits nothing beyond what the counter has spent until the lessee sets
        a new cap: the lapse happens in the check itself, not when the lessee's thread next looks (it
        may be waiting on an owner that hangs), so a shard never draws on a lease the owner counts as
        expired (docs/scale-out.md).
        """
        with self._lock:
            self._lease_due[key] = (start, deadline)
            self._next_expiry = min(self._next_expiry, deadline)

    def _lapse_leases(self, now: float) -> None:
        for key, (start, deadline) in list(self._lease_due.items()):
            counter = self._state.counters.get(key)
            if counter is None or counter.start != start or counter.cap is None:
                del self._lease_due[key]
            elif deadline <= now:
                del self._lease_due[key]
                if counter.cap > counter.spent:
                    counter.cap = counter.spent
                    counter.lease_note = _LAPSED
                    counter.refresh()
            else:
                self._next_expiry = min(self._next_expiry, deadline)

    def expire(self) -> None:
        """Release reservations past their TTL now (also done on every check)."""
        with self._lock:
            self._sweep(self._clock())

    # --- after the call ---------------------------------------------------------------------------------
    def settle(
        self,
        reservation_id: str,
        cost_usd: Decimal | None,
        tokens: int | None = None,
        requests: int = 1,
        *,
        tenant: str | None = None,
        at: float | None = None,
    ) -> bool:
        """Replace a reservation by what the call cost; False if it is unknown (settled or expired).

        An unpriced call (``cost_usd=None``) or unknown token count keeps the reserved estimate.
        ``tenant`` (a tenant-bound caller's tenant): only a reservation made for that tenant is
        settled; another tenant's is answered as unknown. ``at``: when the call started (epoch seconds;
        None: now) — only the periods containing it are charged, the hold is released on every budget.
        """
        if tenant is not None and self.reservation_tenant(reservation_id) != (True, tenant):
            return False
        return self._settlement.settle(reservation_id, cost_usd, tokens, requests, at)

    def release(self, reservation_id: str, *, tenant: str | None = None) -> bool:
        """Give a reservation back unspent (the call was never sent); ``tenant`` as for :meth:`settle`."""
        if tenant is not None and self.reservation_tenant(reservation_id) != (True, tenant):
            return False
        return self._settlement.release(reservation_id)

    def reservation_tenant(self, reservation_id: str) -> tuple[bool, str | None]:
        """(open, tenant): whether the reservation is open, and the tenant it was made for (None: no tenant).

        A reservation is bound to the tenant of the call it was made for; the journal keeps that
        (the call's scope), so the binding survives a restart.
        """
        with self._lock:
            res = self._state.reservations.get(reservation_id)
        return (False, None) if res is None else (True, res.match[0])

    def foreign(self, reservation_id: str, tenant: str | None) -> bool:
        """Whether ``reservation_id`` is open and was made for a tenant other than ``tenant``."""
        found, owner = self.reservation_tenant(reservation_id)
        return found and owner != tenant

    def settle_call(
        self,
        call: Call,
        cost_usd: Decimal | None,
        tokens: int | None = None,
        requests: int = 1,
        *,
        reservation_id: str | None = None,
        at: float | None = None,
    ) -> bool:
        """Settle a finished call's reservation, else :meth:`record` its spend. True if one was settled.

        With ``reservation_id`` (the span's ``costspan.budget.reservation_id``) exactly that
        reservation is settled; if it is no longer open (expired, or taken by another book) the spend
        is recorded and no other reservation is touched. Without it, the oldest open reservation made
        for the same scope and model is settled: a record whose model differs from the request's (a
        snapshot alias) finds none, and its reservation waits for the TTL. ``at``: the call's start
        (None: now); the spend counts only in budget periods that contain it.
        """
        if not self.enabled:
            return False
        if reservation_id and self.foreign(reservation_id, call.tenant):
            reservation_id = _FOREIGN  # another tenant's: not settled by this call, whose spend is recorded
        return self._settlement.settle_call(call, cost_usd, tokens, requests, reservation_id, at)

    def record_unreserved(
        self, call: Call, cost_usd: Decimal | None, tokens: int | None, requests: int, at: float | None = None
    ) -> bool:
        """Charge ``requests`` finished calls of ``call``'s scope and model at once, as :meth:`settle_call`
        would one by one, if no reservation of that scope and model is open (then nothing is settled by
        them). False, charging nothing, when one is open: the caller settles the calls one by one.
        ``at``: when they started (all in the same period of every budget)."""
        if not self.enabled:
            return True
        return self._settlement.record_unreserved(call, cost_usd, tokens, requests, at)

    def record(
        self,
        call: Call,
        cost_usd: Decimal | None,
        tokens: int | None = None,
        requests: int = 1,
        at: float | None = None,
    ) -> None:
        """Charge spend that arrived without a reservation (e.g. another service's span)."""
        if self.enabled:
            self._settlement.record(call, cost_usd, tokens, requests, at)

    # --- state, durability ----------------------------------------------------------------------------------
    def status(self, budget_id: str | None = None) -> list[BudgetStatus]:
        """Every budget (or one), each ``*`` scope instance on its own row."""
        now = self._clock()
        with self._lock:
            return as_refusing(statuses(self._state, budget_id, now), self._refusing, self._state.counters, now)

    def scope_status(
        self, scope: Mapping[str, str], *, period: Period | None = None, unit: Unit | None = None
    ) -> BudgetStatus | None:
        """The status of a scope (``{"tenant": "acme"}``; ``{}`` = global): of every budget that applies
        to all of its calls (of ``period`` and ``unit``, if given), the strictest; None if none applies.
        See :func:`~._status.scope_status`."""
        now = self._clock()
        with self._lock:
            return scope_status(
                self._state,
                scope,
                now,
                period=period,
                unit=unit,
                adjust=lambda rows: as_refusing(rows, self._refusing, self._state.counters, now),
            )

    def open_reservations(self) -> int:
        return len(self._state.reservations)

    def snapshot(self) -> None:
        """Write a snapshot now (no-op without a data directory)."""
        with self._lock:
            self._log.snapshot()

    def close(self) -> None:
        """Snapshot and close the journal. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._log.close()
