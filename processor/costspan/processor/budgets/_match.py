"""Which budget counters a call falls in: matched once per call scope, cached until a period ends or a budget changes.

A call's scope is its dimension tuple (``SCOPE_DIMENSIONS`` order). The cache holds, per scope, the
counters of every budget whose scope the call falls in, rolled to the current period, and what the
check reads of each (:class:`Match`). Counters are mutated in place when they roll, so holding them is safe.
"""

from __future__ import annotations

import math

from costspan.processor.budgets._estimate import Rate
from costspan.processor.budgets._journal import JournaledState
from costspan.processor.budgets._model import Mode, Period
from costspan.processor.budgets._state import Counter, match_targets
from costspan.processor.budgets._units import units_below

__all__ = ["MAX_SCOPES", "Match", "Matches"]

#: Scopes cached before the cache starts over (a bound on memory, not a tuning knob).
MAX_SCOPES = 10_000

_SOFT = Mode.SOFT
_PER_REQUEST = Period.PER_REQUEST


class Match:
    """The counters of the budgets one call scope falls in, and what the check reads of each.

    Valid until a counter's period ends (``until``) or a budget changes (the cache is dropped).
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


class Matches:
    """The per-scope cache of :class:`Match` over a book's state; counters it finds lapsed are rolled.

    Not thread-safe: the book holds its lock around every call. The check reads :attr:`cache`
    itself (one dict lookup on the hot path) and calls :meth:`match` on a miss or a lapsed match.
    """

    __slots__ = ("_log", "cache")

    def __init__(self, log: JournaledState) -> None:
        self._log = log
        self.cache: dict[tuple[str | None, ...], Match] = {}

    def match(self, dims: tuple[str | None, ...], now: float) -> Match:
        """Match ``dims`` afresh (counters rolled to ``now``) and cache the result."""
        log = self._log
        state_counters = log.state.counters
        counters: list[Counter] = []
        for budget, key, values in match_targets(log.state.budgets.values(), dims):
            counter = state_counters.get(key)
            if counter is None or counter.end <= now:
                counter = log.roll(budget, key, values, now)
            counters.append(counter)
        cache = self.cache
        if len(cache) >= MAX_SCOPES:
            cache.clear()
        match = cache[dims] = Match(counters)
        return match

    def get(self, dims: tuple[str | None, ...], now: float) -> Match:
        """The cached match of ``dims`` if still valid at ``now``, else a fresh one."""
        match = self.cache.get(dims)
        if match is None or match.until <= now:
            match = self.match(dims, now)
        return match

    def forget(self) -> None:
        """Drop every cached match (a budget was created, changed or deleted)."""
        self.cache.clear()
