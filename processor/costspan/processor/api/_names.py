"""Per-name queries of the usage index: users, workflows and sessions, their totals and top lists."""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from decimal import Decimal
from operator import itemgetter
from typing import Final, cast

from costspan.processor.api._common import Window, tenants_of
from costspan.processor.api._folds import memo_get, memo_put
from costspan.processor.api._index import TenantDay, UsageIndex
from costspan.processor.store._sums import Sums

__all__ = ["Sessions", "dim_in", "sessions_in", "top_names", "workflow_days", "workflow_total"]

_ZERO: Final = Decimal(0)


def dim_in(index: UsageIndex, tenant: str | None, window: Window, dim: str) -> dict[str, Sums]:
    """Totals per user or workflow (``dim``) of one tenant in a window (None: every tenant), O(names)."""
    out: dict[str, Sums] = {}
    with index.read():
        for t in tenants_of(index, tenant):
            for name, series in index.names(t, dim).items():
                agg = series.between(window.first, window.last)
                if not agg.requests:
                    continue
                into = out.get(name)
                if into is None:
                    out[name] = agg
                else:
                    into.merge(agg, histogram=False)
    return out


def top_names(index: UsageIndex, tenant: str | None, window: Window, dim: str, limit: int) -> list[tuple[str, Sums]]:
    """The ``limit`` users or workflows with the highest cost in a window, with their totals.

    Ties go to the name seen first. When every call is in the window (the usual dashboard question)
    each name's cost is its running total, read without arithmetic; otherwise each name costs one
    subtraction. The ranking is memoized (per window unless it holds every call) until the index
    changes.
    """
    first, last = window.first, window.last
    with index.read():
        tenants = tenants_of(index, tenant)
        whole = _all_in_window(index, tenants, first, last)
        state = (index.records, index.generation)
        memo_key = ("top_names", tenant, dim, limit, None if whole else (first, last))
        memo = memo_get(index, memo_key, state)
        if memo is not None:
            return _totals(index, tenants, dim, cast("list[str]", memo), first, last)
        costs: dict[str, Decimal] = {}
        for t in tenants:
            names = index.names(t, dim)
            if whole:
                part = {name: series.cum[-1].cost for name, series in names.items()}
            else:
                part = {}
                for name, series in names.items():
                    n, cost = series.cost_between(first, last)
                    if n:
                        part[name] = cost
            if costs.keys().isdisjoint(part):  # names unique to this tenant (the usual case)
                costs.update(part)
                continue
            for name, cost in part.items():  # the same name under several tenants (admin view)
                prev = costs.get(name)
                costs[name] = cost if prev is None else prev + cost
        chosen = [name for name, _ in heapq.nlargest(limit, costs.items(), key=itemgetter(1))]
        memo_put(index, memo_key, state, chosen)
        return _totals(index, tenants, dim, chosen, first, last)


def _all_in_window(index: UsageIndex, tenants: list[str], first: int, last: int) -> bool:
    """Whether every call of ``tenants`` falls in the days ``[first, last]``."""
    for t in tenants:
        days = index.days.get(t)
        if days and not (first <= min(days) and max(days) <= last):
            return False
    return True


def _totals(
    index: UsageIndex, tenants: list[str], dim: str, chosen: list[str], first: int, last: int
) -> list[tuple[str, Sums]]:
    out = []
    for name in chosen:
        total = Sums()
        for t in tenants:
            found = index.names(t, dim).get(name)
            if found is not None:
                total.merge(found.between(first, last), histogram=False)
        out.append((name, total))
    return out


def workflow_days(index: UsageIndex, tenant: str | None, window: Window, workflow: str) -> dict[int, Sums]:
    """Per-day totals of one workflow (every tenant's of that id when ``tenant`` is None)."""
    out: dict[int, Sums] = {}
    with index.read():
        for t in tenants_of(index, tenant):
            series = index.names(t, "workflow").get(workflow)
            if series is not None:
                for day, agg in series.per_day(window.first, window.last):
                    out.setdefault(day, Sums()).merge(agg, histogram=False)
    return out


def workflow_total(index: UsageIndex, tenant: str | None, window: Window, workflow: str) -> Sums:
    total = Sums()
    with index.read():
        for t in tenants_of(index, tenant):
            series = index.names(t, "workflow").get(workflow)
            if series is not None:
                total.merge(series.between(window.first, window.last), histogram=False)
    return total


@dataclass(frozen=True, slots=True)
class Sessions:
    count: int
    calls: int
    cost: Decimal
    top: list[tuple[str, str, Sums]]  # (tenant, session, sums in the window)


def sessions_in(index: UsageIndex, tenant: str | None, window: Window, limit: int) -> Sessions:
    """Sessions of one tenant (or of each tenant: a session belongs to its tenant) in a window: how
    many, their calls and cost, and the ``limit`` most expensive ones.

    O(days × (1 + multi-day sessions) + days × limit): counts and sums come from the per-day session
    totals; a session seen on several days (kept in ``multi_day``) is counted once. The most
    expensive sessions are among each day's most expensive plus the multi-day ones (a one-day
    session's window cost is its day's cost), so only those are summed exactly.
    """
    count = calls = 0
    cost = _ZERO
    sums: list[tuple[str, str, Sums]] = []
    with index.read():
        state = (index.records, index.generation)
        memo_key = ("sessions", tenant, window.first, window.last, limit)
        memo = memo_get(index, memo_key, state)
        if memo is not None:  # nothing was added since: the same answer (callers never change it)
            return cast("Sessions", memo)
        for t in tenants_of(index, tenant):
            days = index.day_range(t, window.first, window.last)
            for _, td in days:
                count += len(td.by_session) + td.aged_sessions
                calls += td.sessions.requests
                cost += td.sessions.cost
            multi = [s for s, last in index.multi_day.get(t, {}).items() if last >= window.first]
            for s in multi:
                seen = sum(1 for _, td in days if s in td.by_session)
                if seen > 1:
                    count -= seen - 1
            # a candidate seen on one day only is summed from that day, a multi-day one over the window
            candidates: dict[str, TenantDay | None] = {}
            for _, td in days:
                for name in td.top_sessions(limit):
                    candidates.setdefault(name, td)
            for s in multi:
                candidates[s] = None
            for name, one_day in candidates.items():
                total = Sums()
                for td in (one_day,) if one_day is not None else (td for _, td in days):
                    found = td.by_session.get(name)
                    if found is not None:
                        total.merge(found, histogram=False)
                if total.requests:
                    sums.append((t, name, total))
        sums.sort(key=lambda e: e[2].cost, reverse=True)
        answer = Sessions(count, calls, cost, sums[:limit])
        memo_put(index, memo_key, state, answer)
    return answer
