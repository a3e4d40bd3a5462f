"""Shared pieces of the routes: the index and pricer on app state, money, time windows, sums."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Final

from fastapi import HTTPException, Query, Request

from costspan.pricing import Pricer
from costspan.processor.api.index import ALL, DAY_S, Agg, CallKey, UsageIndex

__all__ = [
    "CurrencyParam",
    "DaysParam",
    "Money",
    "Window",
    "by_call_in",
    "by_project_in",
    "by_provider_in",
    "calls_in",
    "day_iso",
    "index_of",
    "money_of",
    "per_day",
    "pricer_of",
    "ratio",
    "sum_aggs",
    "tenant_key",
    "tenants_of",
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
            for t in tenants_of(index, tenant):
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


def tenants_of(index: UsageIndex, tenant: str | None) -> list[str]:
    return [tenant] if tenant is not None else index.tenant_ids()


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
