"""Shared pieces of the routes: the index and pricer on app state, money, time windows, sums."""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from operator import itemgetter
from typing import Annotated, Any, Final, cast

from fastapi import HTTPException, Query, Request

from costspan.pricing import Pricer
from costspan.processor.api.aggs import Series
from costspan.processor.api.index import ALL, DAY_S, Agg, CallKey, UsageIndex

__all__ = [
    "CurrencyParam",
    "DaysParam",
    "Money",
    "Sessions",
    "Window",
    "by_call_in",
    "by_project_in",
    "by_provider_in",
    "calls_in",
    "day_iso",
    "dim_in",
    "index_of",
    "money_of",
    "per_day",
    "pricer_of",
    "ratio",
    "sessions_in",
    "sum_aggs",
    "tenant_key",
    "top_names",
    "workflow_days",
    "workflow_total",
]

_Q: Final = Decimal("0.00000001")
_ZERO: Final = Decimal(0)
#: A query folds at most this many new ledger records itself (read-after-write); the follower does the rest.
_CATCH_UP_PER_QUERY: Final = 2000
DaysParam = Annotated[int, Query(ge=1, le=3660, description="how many UTC days back, today included")]
CurrencyParam = Annotated[
    str, Query(pattern=r"^[A-Za-z]{3}$", description="ISO 4217 code the catalog has a rate for (default USD)")
]


def index_of(request: Request) -> UsageIndex:
    """The usage index, caught up with the ledger."""
    index: UsageIndex = request.app.state.usage_index
    index.catch_up(max_records=_CATCH_UP_PER_QUERY)
    return index


def pricer_of(request: Request) -> Pricer:
    pricer: Pricer = request.app.state.api_pricer
    return pricer


def tenant_key(tenant: str | None) -> str:
    return ALL if tenant is None else tenant


def day_iso(day_s: int) -> str:
    return datetime.fromtimestamp(day_s, UTC).date().isoformat()


def ratio(part: float, whole: float, digits: int = 2) -> float:
    return round(100.0 * part / whole, digits) if whole else 0.0


@dataclass(frozen=True, slots=True)
class Money:
    """Turns USD sums into the asked currency, as decimal strings (8 places)."""

    currency: str
    pricer: Pricer

    def rate(self, at: float) -> Decimal:
        if self.currency == "USD":
            return Decimal(1)
        rate = self.pricer.catalog.rate(self.currency, at)
        return Decimal(1) if rate is None else rate

    def amount(self, usd: Decimal, at: float | None = None) -> Decimal:
        return usd if self.currency == "USD" else usd * self.rate(time.time() if at is None else at)

    def fmt(self, usd: Decimal, at: float | None = None) -> str:
        return format(self.amount(usd, at).quantize(_Q), "f")


def money_of(request: Request, currency: str) -> Money:
    pricer = pricer_of(request)
    code = currency.upper()
    if code not in pricer.catalog.currencies:
        raise HTTPException(400, f"unknown currency {currency!r}; known: {', '.join(pricer.catalog.currencies)}")
    return Money(code, pricer)


@dataclass(frozen=True, slots=True)
class Window:
    """Whole UTC days: ``first`` and ``last`` day starts (seconds), ``last`` is today's by default."""

    first: int
    last: int

    @classmethod
    def last_days(cls, days: int, now: float | None = None) -> Window:
        t = int(time.time() if now is None else now)
        today = t - t % DAY_S
        return cls(today - (days - 1) * DAY_S, today)

    @classmethod
    def between(cls, start: date, end: date) -> Window:
        if start > end:
            raise HTTPException(400, f"from ({start}) is after to ({end})")
        first = int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp())
        last = int(datetime(end.year, end.month, end.day, tzinfo=UTC).timestamp())
        return cls(first, last)

    @property
    def days(self) -> int:
        return (self.last - self.first) // DAY_S + 1


def per_day(
    index: UsageIndex, tenant: str | None, window: Window, provider: str | None = None, project: str | None = None
) -> list[tuple[int, Agg]]:
    """Per-day totals of one tenant (or all) in a window, optionally of one provider and/or project.

    O(days) (a project filter: O(days × the day's projects)). The sums are the index's own: read them,
    never change them.
    """
    out: list[tuple[int, Agg]] = []
    with index.lock:
        if project is not None:
            for t in [tenant] if tenant is not None else index.tenant_ids():
                for day, td in index.day_range(t, window.first, window.last):
                    total = Agg()
                    for (proj, p), agg in td.by_project.items():
                        if proj == project and (provider is None or p == provider):
                            total.merge(agg, histogram=False)
                    out.append((day, total))
            if tenant is None:  # several tenants: one sum per day
                merged: dict[int, Agg] = {}
                for day, agg in out:
                    merged.setdefault(day, Agg()).merge(agg, histogram=False)
                out = sorted(merged.items())
            return out
        for day, td in index.day_range(tenant_key(tenant), window.first, window.last):
            if provider is None:
                out.append((day, td.total))
            else:
                out.append((day, td.by_provider.get(provider) or Agg()))
    return out


def by_call_in(index: UsageIndex, tenant: str | None, window: Window) -> dict[CallKey, Agg]:
    """Totals per (provider, model, operation) of one tenant (or all) in a window (no histograms)."""
    by_call: dict[CallKey, Agg] = {}
    with index.lock:
        for _, td in index.day_range(tenant_key(tenant), window.first, window.last):
            for key, agg in td.by_call.items():
                into = by_call.get(key)
                if into is None:
                    into = by_call[key] = Agg()
                into.merge(agg, histogram=False)
    return by_call


def by_provider_in(
    index: UsageIndex,
    tenant: str | None,
    window: Window,
    provider: str | None = None,
    *,
    histogram: bool = False,
    project: str | None = None,
) -> dict[str, Agg]:
    """Totals per provider of one tenant (or all) in a window; latency histograms when asked for
    (not with ``project``: a project's sums keep none)."""
    out: dict[str, Agg] = {}
    with index.lock:
        if project is not None:
            for t in _tenants(index, tenant):
                for _, td in index.day_range(t, window.first, window.last):
                    for (proj, p), agg in td.by_project.items():
                        if proj == project and (provider is None or p == provider):
                            out.setdefault(p, Agg()).merge(agg, histogram=False)
            return out
        for _, td in index.day_range(tenant_key(tenant), window.first, window.last):
            for p, agg in td.by_provider.items():
                if provider is not None and p != provider:
                    continue
                into = out.get(p)
                if into is None:
                    into = out[p] = Agg()
                into.merge(agg, histogram=histogram)
    return out


def by_project_in(index: UsageIndex, tenant: str, window: Window) -> dict[str, Agg]:
    """Totals per project of one tenant in a window (calls without a project left out)."""
    out: dict[str, Agg] = {}
    with index.lock:
        for _, td in index.day_range(tenant, window.first, window.last):
            for (project, _), agg in td.by_project.items():
                into = out.get(project)
                if into is None:
                    into = out[project] = Agg()
                into.merge(agg, histogram=False)
    return out


def calls_in(
    index: UsageIndex, tenant: str | None, window: Window, provider: str | None = None
) -> tuple[list[tuple[int, Agg]], dict[CallKey, Agg]]:
    """Per-day totals and totals per (provider, model, operation) of one tenant (or all) in a window."""
    by_call = by_call_in(index, tenant, window)
    if provider is not None:
        by_call = {k: a for k, a in by_call.items() if k[0] == provider}
    return per_day(index, tenant, window, provider), by_call


def sum_aggs(aggs: Iterable[Agg], *, histogram: bool = False) -> Agg:
    out = Agg()
    for a in aggs:
        out.merge(a, histogram=histogram)
    return out


def _tenants(index: UsageIndex, tenant: str | None) -> list[str]:
    return [tenant] if tenant is not None else index.tenant_ids()


def dim_in(index: UsageIndex, tenant: str | None, window: Window, dim: str) -> dict[str, Agg]:
    """Totals per user or workflow (``dim``) of one tenant in a window (None: every tenant), O(names)."""
    out: dict[str, Agg] = {}
    with index.lock:
        for t in _tenants(index, tenant):
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


def top_names(index: UsageIndex, tenant: str | None, window: Window, dim: str, limit: int) -> list[tuple[str, Agg]]:
    """The ``limit`` users or workflows with the highest cost in a window, with their totals.

    Ties go to the name seen first. When every call is in the window (the usual dashboard question)
    each name's cost is its running total, read without arithmetic, and the ranking is memoized
    until the index changes; otherwise each name costs one subtraction.
    """
    first, last = window.first, window.last
    with index.lock:
        tenants = _tenants(index, tenant)
        whole = _all_in_window(index, tenants, first, last)
        state = (index.records, index.generation)
        memo_key = ("top_names", tenant, dim, limit)
        memo = index.memo.get(memo_key)
        if whole and memo is not None and memo[0] == state:
            return _totals(index, tenants, dim, cast("list[str]", memo[1]), first, last)
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
        if whole:
            index.memo[memo_key] = (state, chosen)
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
) -> list[tuple[str, Agg]]:
    out = []
    for name in chosen:
        total = Agg()
        for t in tenants:
            found = index.names(t, dim).get(name)
            if found is not None:
                total.merge(found.between(first, last), histogram=False)
        out.append((name, total))
    return out


def _top_in_window(
    bounds: dict[str, Decimal], owners: dict[str, list[dict[str, Series]]], first: int, last: int, limit: int
) -> list[str]:
    if limit <= 0:
        return []
    rank = {name: i for i, name in enumerate(bounds)}  # first seen first, for ties
    best: list[tuple[Decimal, int, str]] = []  # min-heap of (cost, -rank, name): the worst kept on top
    for name, bound in sorted(bounds.items(), key=itemgetter(1), reverse=True):
        if len(best) == limit and bound < best[0][0]:
            break  # no name from here on can reach the limit-th cost
        requests, cost = 0, _ZERO
        for names in owners[name]:
            n, c = names[name].cost_between(first, last)
            requests += n
            cost += c
        if not requests:
            continue  # no call in the window
        item = (cost, -rank[name], name)
        if len(best) < limit:
            heapq.heappush(best, item)
        elif item > best[0]:
            heapq.heapreplace(best, item)
    return [name for _, _, name in sorted(best, reverse=True)]


def workflow_days(index: UsageIndex, tenant: str | None, window: Window, workflow: str) -> dict[int, Agg]:
    """Per-day totals of one workflow (every tenant's of that id when ``tenant`` is None)."""
    out: dict[int, Agg] = {}
    with index.lock:
        for t in _tenants(index, tenant):
            series = index.names(t, "workflow").get(workflow)
            if series is not None:
                for day, agg in series.per_day(window.first, window.last):
                    out.setdefault(day, Agg()).merge(agg, histogram=False)
    return out


def workflow_total(index: UsageIndex, tenant: str | None, window: Window, workflow: str) -> Agg:
    total = Agg()
    with index.lock:
        for t in _tenants(index, tenant):
            series = index.names(t, "workflow").get(workflow)
            if series is not None:
                total.merge(series.between(window.first, window.last), histogram=False)
    return total


@dataclass(frozen=True, slots=True)
class Sessions:
    count: int
    calls: int
    cost: Decimal
    top: list[tuple[str, str, Agg]]  # (tenant, session, sums in the window)


def sessions_in(index: UsageIndex, tenant: str | None, window: Window, limit: int) -> Sessions:
    """Sessions of one tenant (or of each tenant: a session belongs to its tenant) in a window: how
    many, their calls and cost, and the ``limit`` most expensive ones.

    O(days + multi-day sessions + days × limit): counts and sums come from the per-day session
    totals; a session seen on several days (kept in ``multi_day``) is counted once. The most
    expensive sessions are among each day's most expensive plus the multi-day ones (a one-day
    session's window cost is its day's cost), so only those are summed exactly.
    """
    count = calls = 0
    cost = _ZERO
    sums: list[tuple[str, str, Agg]] = []
    with index.lock:
        for t in _tenants(index, tenant):
            days = index.day_range(t, window.first, window.last)
            for _, td in days:
                count += len(td.by_session)
                calls += td.sessions.requests
                cost += td.sessions.cost
            multi = [s for s, last in index.multi_day.get(t, {}).items() if last >= window.first]
            for s in multi:
                seen = sum(1 for _, td in days if s in td.by_session)
                if seen > 1:
                    count -= seen - 1
            candidates: dict[str, None] = {}
            for _, td in days:
                for name in td.top_sessions(limit):
                    candidates[name] = None
            for s in multi:
                candidates[s] = None
            for name in candidates:
                total = Agg()
                for _, td in days:
                    found = td.by_session.get(name)
                    if found is not None:
                        total.merge(found, histogram=False)
                if total.requests:
                    sums.append((t, name, total))
    sums.sort(key=lambda e: e[2].cost, reverse=True)
    return Sessions(count, calls, cost, sums[:limit])


def agg_json(a: Agg, money: Money, at: float | None = None) -> dict[str, Any]:
    """The common figures of a sum, as the API shows them."""
    return {
        "request_count": a.requests,
        "error_count": a.errors,
        "cost": money.fmt(a.cost, at),
        "input_tokens": a.input_tokens,
        "output_tokens": a.output_tokens,
        "tokens_used": a.tokens,
        "avg_latency_ms": round(a.latency_ms / a.requests, 3) if a.requests else None,
    }
