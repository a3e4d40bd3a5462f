"""``/health`` and the ``/api/usage/*`` metrics, cost and latency questions (``/v1/usage``: :mod:`._routes_qlens`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Literal, NamedTuple

from fastapi import APIRouter, HTTPException, Query, Request

from costspan.processor.api._common import (
    DaysParam,
    JSONBody,
    Money,
    Window,
    by_call_in,
    by_provider_hours,
    by_provider_in,
    cost_or_null,
    day_iso,
    hour_iso,
    hour_rows,
    per_day,
    provider_days,
    ratio,
    sum_all,
    sums_json,
)
from costspan.processor.api._deps import Currency, TenantScope
from costspan.processor.api._index import DAY_S, HOUR_S
from costspan.processor.api._schemas import (
    AggregatesOut,
    CostsByProviderOut,
    CostTrendOut,
    ErrorsByProviderOut,
    HealthOut,
    HourRow,
    LatencyFigures,
    LatencyOut,
    PeriodRow,
    RealtimeOut,
    TopOperationsOut,
)
from costspan.processor.store._sums import Sums

__all__ = ["BudgetShown", "BudgetView", "router"]

Status = Literal["healthy", "warning", "critical", "blocked"]
UsagePeriod = Literal["daily", "monthly"]


class BudgetShown(NamedTuple):
    """A scope's budget as the usage routes show it: the strictest USD budget that applies to the scope
    in the period asked for, status decided by the budgets (the same word ``/v1/budgets/status`` and
    the workspace budget status show)."""

    limit: Decimal
    spent: Decimal
    utilization: Decimal  # spent / limit, exact
    status: Status


#: ``(tenant or None for global, period) -> BudgetShown`` (None: no USD budget of that period applies).
BudgetView = Callable[[str | None, UsagePeriod], BudgetShown | None]

router = APIRouter(tags=["usage"], default_response_class=JSONBody)

ProviderParam = Annotated[str | None, Query(min_length=1, max_length=200, description="only this provider")]
ProjectParam = Annotated[str | None, Query(min_length=1, max_length=200, description="only this project")]


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@router.get("/health", response_model=HealthOut)
async def health(request: Request) -> JSONBody:
    """Liveness of the usage API (no key needed)."""
    store = request.app.state.store
    body: HealthOut = {
        "status": "healthy" if store.started and not store.closing else "starting",
        "timestamp": _now_iso(),
    }
    return JSONBody(body)


def _key(label: str, money: Money) -> tuple[str, str] | None:
    """The memo key of hour rows labelled ``label`` in ``money``: in USD only (a rate is of the moment)."""
    return (label, "USD") if money.currency == "USD" else None


@router.get("/api/usage/metrics/realtime", response_model=RealtimeOut)
async def realtime(scope: TenantScope, money: Currency) -> JSONBody:
    """The last 24 hours, hour by hour, with totals per provider."""
    now = int(time.time())
    last = now - now % HOUR_S
    per_provider = by_provider_hours(scope.index, scope.tenant, last - 23 * HOUR_S, last)
    hours: list[HourRow] = hour_rows(
        scope.index,
        scope.tenant,
        last - 23 * HOUR_S,
        last,
        None,
        lambda h, a: {"hour": hour_iso(h), **sums_json(a, money)},
        _key("hour", money),
    )
    total = sum_all(per_provider.values())
    body: RealtimeOut = {
        "window_hours": 24,
        "currency": money.currency,
        "totals": {**sums_json(total, money), "error_rate_percent": ratio(total.errors, total.requests)},
        "by_provider": {p: sums_json(a, money) for p, a in sorted(per_provider.items())},
        "hourly": hours,
    }
    return JSONBody(body)


@router.get("/api/usage/metrics/aggregates", response_model=AggregatesOut)
async def aggregates(
    scope: TenantScope,
    money: Currency,
    days: DaysParam = 7,
    interval: Literal["hour", "day", "month"] = "day",
    provider: ProviderParam = None,
    project: ProjectParam = None,
) -> JSONBody:
    """Totals per hour, day or month over the last ``days`` days (hours: at most 90 days, no project filter)."""
    window = Window.last_days(days)
    rows: list[PeriodRow] = []
    if interval == "hour":
        if days > 90:
            raise HTTPException(400, "interval=hour covers at most 90 days")
        if project is not None:
            raise HTTPException(400, "the project filter works with interval=day or month")
        rows = hour_rows(
            scope.index,
            scope.tenant,
            window.first,
            window.last + DAY_S - 1,
            provider,
            lambda h, a: {"period": hour_iso(h), **sums_json(a, money)},
            _key("period", money),
        )
        rows = [row for row in rows if row["request_count"] or row["blocked_count"]]
    else:
        buckets: dict[str, Sums] = {}
        for day, agg in per_day(scope.index, scope.tenant, window, provider, project):
            if not agg.calls:
                continue
            label = day_iso(day)[: 7 if interval == "month" else 10]
            into = buckets.get(label)
            if into is None:  # a day's label is its own: the index's sums are only read
                buckets[label] = agg if interval == "day" else agg.copy()
            else:
                into.merge(agg, histogram=False)
        rows = [{"period": k, **sums_json(a, money)} for k, a in buckets.items()]
    body: AggregatesOut = {
        "interval": interval,
        "days": days,
        "provider": provider,
        "project": project,
        "currency": money.currency,
        "data": rows,
    }
    return JSONBody(body)


@router.get("/api/usage/costs/by-provider", response_model=CostsByProviderOut)
async def costs_by_provider(
    scope: TenantScope, money: Currency, days: DaysParam = 30, project: ProjectParam = None
) -> JSONBody:
    per = by_provider_in(scope.index, scope.tenant, Window.last_days(days), project=project)
    total = sum_all(per.values())
    rows = sorted(per.items(), key=lambda kv: kv[1].cost, reverse=True)
    body: CostsByProviderOut = {
        "days": days,
        "project": project,
        "currency": money.currency,
        "total_cost": cost_or_null(total, money),
        "unpriced_calls": total.unpriced,
        "blocked_count": total.blocked,
        "providers": [
            {"provider": p, **sums_json(a, money), "cost_percent": ratio(float(a.cost), float(total.cost))}
            for p, a in rows
        ],
    }
    return JSONBody(body)


def _latency(a: Sums) -> LatencyFigures:
    return {
        "request_count": a.requests,
        "p50_ms": a.quantile_ms(0.5),
        "p95_ms": a.quantile_ms(0.95),
        "p99_ms": a.quantile_ms(0.99),
        "avg_ms": round(a.latency_ms / a.requests, 3) if a.requests else None,
        "success_rate_percent": ratio(a.requests - a.errors, a.requests) if a.requests else None,
        "error_rate_percent": ratio(a.errors, a.requests) if a.requests else None,
    }


@router.get("/api/usage/performance/latency", response_model=LatencyOut)
async def latency(scope: TenantScope, days: DaysParam = 7, provider: ProviderParam = None) -> JSONBody:
    """Latency percentiles (from a 5 %-wide histogram) and success rate, overall and per provider."""
    per = by_provider_in(scope.index, scope.tenant, Window.last_days(days), provider, histogram=True)
    body: LatencyOut = {
        "days": days,
        "provider": provider,
        **_latency(sum_all(per.values(), histogram=True)),
        "by_provider": {p: _latency(a) for p, a in sorted(per.items())},
    }
    return JSONBody(body)


@router.get("/api/usage/operations/top", response_model=TopOperationsOut)
async def top_operations(
    scope: TenantScope,
    money: Currency,
    days: DaysParam = 7,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
) -> JSONBody:
    """The most expensive (provider, model, operation) combinations."""
    by_call = by_call_in(scope.index, scope.tenant, Window.last_days(days))
    rows = sorted(by_call.items(), key=lambda kv: kv[1].cost, reverse=True)[:limit]
    body: TopOperationsOut = {
        "days": days,
        "currency": money.currency,
        "operations": [{"provider": p, "model": m, "operation": o, **sums_json(a, money)} for (p, m, o), a in rows],
    }
    return JSONBody(body)


@router.get("/api/usage/costs/trend", response_model=CostTrendOut)
async def cost_trend(scope: TenantScope, money: Currency, days: DaysParam = 30) -> JSONBody:
    """Daily cost per provider."""
    out: dict[str, dict[str, str | None]] = {}
    for day, by_provider in provider_days(scope.index, scope.tenant, Window.last_days(days)):
        out[day_iso(day)] = {p: cost_or_null(a, money, day) for p, a in by_provider}
    body: CostTrendOut = {"days": days, "currency": money.currency, "daily": out}
    return JSONBody(body)


@router.get("/api/usage/errors/by-provider", response_model=ErrorsByProviderOut)
async def errors_by_provider(scope: TenantScope, days: DaysParam = 7) -> JSONBody:
    per = by_provider_in(scope.index, scope.tenant, Window.last_days(days))
    body: ErrorsByProviderOut = {
        "days": days,
        "providers": [
            {
                "provider": p,
                "request_count": a.requests,
                "error_count": a.errors,
                "error_rate_percent": ratio(a.errors, a.requests),
            }
            for p, a in sorted(per.items())
        ],
    }
    return JSONBody(body)
