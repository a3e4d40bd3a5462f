"""Shared pieces of the routes: the index and pricer on app state, money, time windows, JSON bodies, and the
queries over the usage index the routes share (each holds the index's :meth:`~UsageIndex.read` for its walk only)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Final, TypeVar

import orjson
from fastapi import HTTPException, Query, Request
from fastapi.responses import JSONResponse

from costspan.pricing import Pricer
from costspan.processor.api._folds import fold_days, hour_views
from costspan.processor.api._index import ALL, DAY_S, CallKey, TenantDay, UsageIndex
from costspan.processor.api._schemas import AggFigures, OutcomeFigures
from costspan.processor.store._sums import Sums

__all__ = [
    "FOLLOWS_STORE",
    "CurrencyParam",
    "DaysParam",
    "JSONBody",
    "Money",
    "Window",
    "active_in",
    "by_call_in",
    "by_project_in",
    "by_provider_hours",
    "by_provider_in",
    "calls_in",
    "cost_or_null",
    "day_iso",
    "hour_iso",
    "hour_rows",
    "index_of",
    "money_of",
    "outcome_json",
    "per_day",
    "pricer_of",
    "provider_days",
    "ratio",
    "sum_all",
    "sums_json",
    "tenant_key",
    "tenants_of",
]

V = TypeVar("V")
_Q: Final = Decimal("0.00000001")
_ZERO: Final = Decimal(0)
#: A query folds at most this many new ledger records itself (read-after-write); the follower does the rest.
_CATCH_UP_PER_QUERY: Final = 2000
DaysParam = Annotated[int, Query(ge=1, le=3660, description="how many UTC days back, today included")]
CurrencyParam = Annotated[
    str, Query(pattern=r"^[A-Za-z]{3}$", description="ISO 4217 code the catalog has a rate for (default USD)")
]


#: App state flag: the index is fed by the store's commit listener (every append reaches it before
#: the write is acknowledged), so a query need not read the ledger's tail itself.
FOLLOWS_STORE: Final = "usage_index_follows_store"


def _encode(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)  # as pydantic writes a Decimal
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class JSONBody(JSONResponse):
    """A route's JSON answer, encoded by orjson; returned as is, so FastAPI neither validates nor
    re-encodes the body (the route's ``response_model`` documents it: a JSONResponse, so the OpenAPI
    document shows that schema). The bytes match FastAPI's own encoding: the same numbers,
    non-finite floats as null, Decimals as strings."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=_encode)


def index_of(request: Request) -> UsageIndex:
    """The usage index, caught up with the ledger (nothing to read when the store feeds it)."""
    index: UsageIndex = request.app.state.usage_index
    if not getattr(request.app.state, FOLLOWS_STORE, False):
        index.catch_up(max_records=_CATCH_UP_PER_QUERY)
    return index


def pricer_of(request: Request) -> Pricer:
    pricer: Pricer = request.app.state.api_pricer
    return pricer


def tenant_key(tenant: str | None) -> str:
    return ALL if tenant is None else tenant


@functools.lru_cache(maxsize=8192)
def day_iso(day_s: int) -> str:
    """``YYYY-MM-DD`` of a UTC day start (memoized: routes label up to hundreds of rows with it)."""
    return datetime.fromtimestamp(day_s, UTC).date().isoformat()


@functools.lru_cache(maxsize=8192)
def hour_iso(hour_s: int) -> str:
    """ISO 8601 of a UTC hour start, ``+00:00`` offset (memoized)."""
    return datetime.fromtimestamp(hour_s, UTC).isoformat()


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
        if self.currency == "USD":
            return format(usd.quantize(_Q), "f")
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
) -> list[tuple[int, Sums]]:
    """Per-day totals of one tenant (or all) in a window, optionally of one provider and/or project.

    O(days) (a project filter: O(days × the day's projects)). The sums are the index's own: read them,
    never change them.
    """
    out: list[tuple[int, Sums]] = []
    with index.read():
        if project is not None:
            for t in [tenant] if tenant is not None else index.tenant_ids():
                for day, td in index.day_range(t, window.first, window.last):
                    total = Sums()
                    for (proj, p), agg in td.by_project.items():
                        if proj == project and (provider is None or p == provider):
                            total.merge(agg, histogram=False)
                    out.append((day, total))
            if tenant is None:  # several tenants: one sum per day
                merged: dict[int, Sums] = {}
                for day, agg in out:
                    merged.setdefault(day, Sums()).merge(agg, histogram=False)
                out = sorted(merged.items())
            return out
        for day, td in index.day_range(tenant_key(tenant), window.first, window.last):
            if provider is None:
                out.append((day, td.total))
            else:
                out.append((day, td.by_provider.get(provider) or Sums()))
    return out


def by_call_in(index: UsageIndex, tenant: str | None, window: Window) -> dict[CallKey, Sums]:
    """Totals per (provider, model, operation) of one tenant (or all) in a window (no histograms)."""
    with index.read():
        return fold_days(index, tenant_key(tenant), window.first, window.last, "by_call", _by_call)


def _by_call(td: TenantDay) -> dict[CallKey, Sums]:
    return td.by_call


def _by_provider(td: TenantDay) -> dict[str, Sums]:
    return td.by_provider


def _by_project(td: TenantDay) -> dict[tuple[str, str], Sums]:
    return td.by_project


def by_provider_in(
    index: UsageIndex,
    tenant: str | None,
    window: Window,
    provider: str | None = None,
    *,
    histogram: bool = False,
    project: str | None = None,
) -> dict[str, Sums]:
    """Totals per provider of one tenant (or all) in a window; latency histograms when asked for
    (not with ``project``: a project's sums keep none)."""
    out: dict[str, Sums] = {}
    with index.read():
        if project is not None:
            for t in tenants_of(index, tenant):
                by_project = fold_days(index, t, window.first, window.last, "by_project", _by_project)
                for (proj, p), agg in by_project.items():
                    if proj == project and (provider is None or p == provider):
                        into = out.get(p)
                        if into is None:
                            out[p] = agg
                        else:
                            into.merge(agg, histogram=False)
            return out
        folded = fold_days(
            index, tenant_key(tenant), window.first, window.last, "by_provider", _by_provider, histogram=histogram
        )
    if provider is None:
        return folded
    return {p: a for p, a in folded.items() if p == provider}


def by_project_in(index: UsageIndex, tenant: str, window: Window) -> dict[str, Sums]:
    """Totals per project of one tenant in a window (calls without a project left out)."""
    out: dict[str, Sums] = {}
    with index.read():
        by_project = fold_days(index, tenant, window.first, window.last, "by_project", _by_project)
    for (project, _), agg in by_project.items():
        into = out.get(project)
        if into is None:
            out[project] = agg
        else:
            into.merge(agg, histogram=False)
    return out


def calls_in(
    index: UsageIndex, tenant: str | None, window: Window, provider: str | None = None
) -> tuple[list[tuple[int, Sums]], dict[CallKey, Sums]]:
    """Per-day totals and totals per (provider, model, operation) of one tenant (or all) in a window."""
    by_call = by_call_in(index, tenant, window)
    if provider is not None:
        by_call = {k: a for k, a in by_call.items() if k[0] == provider}
    return per_day(index, tenant, window, provider), by_call


def active_in(index: UsageIndex, tenant: str | None, window: Window) -> tuple[set[str], set[str]]:
    """The tenants and the services with calls in a window (of one tenant, or of all)."""
    tenants: set[str] = set()
    services: set[str] = set()
    with index.read():
        for _, td in index.day_range(tenant_key(tenant), window.first, window.last):
            tenants |= td.tenants
            services |= td.services
    return tenants, services


def provider_days(index: UsageIndex, tenant: str | None, window: Window) -> list[tuple[int, list[tuple[str, Sums]]]]:
    """Per day of a window, the day's sums per provider, sorted by provider (the index's own sums: only read)."""
    with index.read():
        return [
            (day, sorted(td.by_provider.items()))
            for day, td in index.day_range(tenant_key(tenant), window.first, window.last)
        ]


def by_provider_hours(index: UsageIndex, tenant: str | None, first_hour: int, last_hour: int) -> dict[str, Sums]:
    """Totals per provider over the hours ``[first_hour, last_hour]`` (no histograms)."""
    out: dict[str, Sums] = {}
    with index.read():
        for _, by_provider in index.hour_range(tenant_key(tenant), first_hour, last_hour):
            for provider, agg in by_provider.items():
                into = out.get(provider)
                if into is None:
                    into = out[provider] = Sums()
                into.merge(agg, histogram=False)
    return out


def hour_rows(
    index: UsageIndex,
    tenant: str | None,
    first: int,
    last: int,
    provider: str | None,
    view: Callable[[int, Sums], V],
    view_key: Hashable | None,
) -> list[V]:
    """:func:`~costspan.processor.api._folds.hour_views` of one tenant (or all), under the index's read."""
    with index.read():
        return hour_views(index, tenant_key(tenant), first, last, provider, view, view_key)


def sum_all(aggs: Iterable[Sums], *, histogram: bool = False) -> Sums:
    out = Sums()
    for a in aggs:
        out.merge(a, histogram=histogram)
    return out


def tenants_of(index: UsageIndex, tenant: str | None) -> list[str]:
    return [tenant] if tenant is not None else index.tenant_ids()


def cost_or_null(a: Sums, money: Money, at: float | None = None) -> str | None:
    """The cost of the priced calls of a sum; None when calls were sent and none could be priced."""
    cost = a.priced_cost
    return None if cost is None else money.fmt(cost, at)


def outcome_json(a: Sums) -> OutcomeFigures:
    """How the calls of a sum ended, and how many of them (and their tokens) are unpriced."""
    return {
        "ok_count": a.ok,
        "degraded_count": a.degraded,
        "blocked_count": a.blocked,
        "unpriced_calls": a.unpriced,
        "unpriced_tokens": a.unpriced_tokens,
    }


def sums_json(a: Sums, money: Money, at: float | None = None) -> AggFigures:
    """The common figures of a sum, as the API shows them."""
    n = a.requests
    return {
        "request_count": n,
        "error_count": a.errors,
        "cost": cost_or_null(a, money, at),
        "input_tokens": a.input_tokens,
        "output_tokens": a.output_tokens,
        "tokens_used": a.input_tokens + a.output_tokens,
        "avg_latency_ms": round(a.latency_ms / n, 3) if n else None,
        **outcome_json(a),
    }
