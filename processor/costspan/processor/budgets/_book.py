"""The budget engine: reserve before a call, settle after it, alert at thresholds, roll periods.

One lock guards all state, so "check the room, then take it" is one step: 100 concurrent calls
against room for 10 let at most 10 through. Every change goes through :meth:`BudgetBook._commit`,
which journals the event (when a data directory is given) and applies it — replay applies the
same events, so a restart recovers counters, reservations and fired thresholds exactly.

The check is here; budget definitions are in :mod:`._definitions` and settling in :mod:`._settle`
(mixins over the same lock and state). The check holds reservations as integers (:mod:`._units`)
and caches, per call scope, the counters that apply (:class:`_Match`).
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from costspan.processor.budgets._alerts import Alert, AlertBoard, SpikeDetector
from costspan.processor.budgets._definitions import BudgetDefinitions
from costspan.processor.budgets._estimate import LINEAR_UP_TO, CostEstimator, Rate
from costspan.processor.budgets._journal import AUDIT, AuditLog, FsyncPolicy, Journal
from costspan.processor.budgets._model import Budget, Call, Decision, Mode, Period, Unit, adaptive_candidates
from costspan.processor.budgets._periods import window
from costspan.processor.budgets._settle import BudgetSettlement
from costspan.processor.budgets._state import ZERO, BudgetState, Counter, match_targets
from costspan.processor.budgets._status import BudgetStatus, statuses
from costspan.processor.budgets._units import from_units, to_units, units_below

__all__ = ["BudgetBook"]

logger = logging.getLogger(__name__)

_ALLOW = Decision(True)
_USD, _TOKENS = Unit.USD, Unit.TOKENS
_SOFT, _HARD, _ADAPTIVE = Mode.SOFT, Mode.HARD, Mode.ADAPTIVE
_PER_REQUEST = Period.PER_REQUEST
_PICO = Decimal("1E-12")
_EXACT_BELOW = 10**28
_new = tuple.__new__  # builds a named tuple without its Python ``__new__`` (a third of a microsecond)


class _Match:
    """The counters of the budgets one call scope falls in, and what the check reads of each.

    Cached per scope (the call's dimension tuple) until a counter's period ends (``until``) or a
    budget changes. Counters are mutated in place when they roll, so holding them is safe.
    """

    __slots__ = ("checks", "counters", "holds", "rate", "slots", "until")

    def __init__(self, counters: list[Counter]) -> None:
        self.counters = tuple(counters)
        self.rate: Rate | None = None  # the call model's rates (the scope names the provider and model)
        self.until = min((c.end for c in counters), default=math.inf)
        # (counter, key, unit, mode, per_request, the limit in whole units: what one per-request call may take)
        self.slots = tuple(
            (c, c.key, b.unit, b.mode, b.period is _PER_REQUEST, units_below(b.limit, b.unit))
            for c, b in ((c, c.budget) for c in counters)
        )
        # what the check reads: (counter, unit, per_request, cap) of the budgets that can refuse, and
        # (counter, key, unit) of all, where the hold goes
        self.checks = tuple((c, u, p, cap) for c, _, u, mode, p, cap in self.slots if mode is not _SOFT)
        self.holds = tuple((c, k, u) for c, k, u, _, _, _ in self.slots)


class BudgetBook(BudgetDefinitions, BudgetSettlement):
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
        self._unpriced_pico = to_units(unpriced_estimate_usd, Unit.USD)
        self._lock = threading.Lock()
        self._journal = Journal(data_dir, fsync=fsync) if data_dir is not None else None
        self._state = self._journal.load() if self._journal is not None else BudgetState()
        self._snapshot_seq = self._state.seq
        self._audit = AuditLog(Path(data_dir) / AUDIT if data_dir is not None else None, clock=clock)
        self._matches: dict[tuple[str | None, ...], _Match] = {}
        self._next_expiry = -math.inf  # when the oldest open reservation expires (the first check looks)
        self._rid_prefix = uuid.uuid4().hex[:10] + "-"
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

    def _forget_matches(self) -> None:
        self._matches = {}

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
            match = self._matches.get(dims)
            if match is None or match.until <= now:
                match = self._match(dims, now)
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

    def _estimate(self, call: Call, match: _Match, now: float) -> tuple[int | None, int]:
        if call.model:
            rate = self._estimator.rate(call.model, call.provider, now)
            match.rate = rate if rate.base is not None else None
        return self._estimator.pico_and_tokens(call.model, call.provider, call.input_tokens, call.max_tokens, now)

    def _take(self, dims: tuple[str | None, ...], match: _Match, usd: int, tokens: int, now: float) -> str | None:
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
        rid = self._rid_prefix + str(next(self._rids))
        expires = now + self._ttl
        if self._journal is not None:
            try:
                self._journal_reserve(rid, now, expires, dims, items, match)
            except BaseException:
                for (counter, *_), (_, n) in zip(match.slots, items, strict=True):
                    counter.held -= n  # not journaled: not held
                raise
        state = self._state
        state.hold(rid, now, expires, dims, items)
        state.seq += 1  # the event's number, as apply() counts it
        return rid

    @staticmethod
    def _without_room(match: _Match, usd: int, tokens: int) -> Counter:
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
        match: _Match,
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
                alt_match = self._matches.get(alt_dims)
                if alt_match is None or alt_match.until <= now:
                    alt_match = self._match(alt_dims, now)
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
        unit = budget.unit
        requested = from_units(usd if unit is _USD else tokens if unit is _TOKENS else 1, unit)
        return Decision(False, None, None if pico is None else from_units(pico, _USD), block=failing.block(requested))

    def _journal_reserve(
        self,
        rid: str,
        now: float,
        expires: float,
        dims: tuple[str | None, ...],
        items: list[tuple[str, int]],
        match: _Match,
    ) -> None:
        assert self._journal is not None
        amounts = [(key, from_units(n, slot[2])) for (key, n), slot in zip(items, match.slots, strict=True)]
        self._journal.append(self._state.seq + 1, ["r", rid, now, expires, dims, amounts])

    def _match(self, dims: tuple[str | None, ...], now: float) -> _Match:
        """The counters of every budget a call with these dimensions falls in (rolled to ``now``), cached."""
        counters: list[Counter] = []
        state_counters = self._state.counters
        for budget, key, values in match_targets(self._state.budgets.values(), dims):
            counter = state_counters.get(key)
            if counter is None or counter.end <= now:
                counter = self._roll(budget, key, values, now)
            counters.append(counter)
        if len(self._matches) >= 10_000:
            self._matches = {}
        match = self._matches[dims] = _Match(counters)
        return match

    def _counters(self, dims: tuple[str | None, ...], now: float) -> tuple[Counter, ...]:
        match = self._matches.get(dims)
        if match is None or match.until <= now:
            match = self._match(dims, now)
        return match.counters

    def _roll(self, budget: Budget, key: str, values: tuple[str, ...], now: float) -> Counter:
        start, end = window(budget.period, now, budget.timezone)
        self._commit(["o", key, budget.id, values, start, end])
        return self._state.counters[key]

    def _sweep(self, now: float) -> None:
        """Release the reservations past their TTL; note when the next one is due."""
        expired, due = self._state.due(now)
        for rid in expired:
            self.expired_total += 1
            self._commit(["x", rid])
        # a reservation made from now on expires no sooner than now + TTL
        self._next_expiry = now + self._ttl if due is None else due

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
