"""``/health``, ``/v1/usage`` and the ``/api/usage/*`` metrics, cost and latency questions."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Literal, NamedTuple

from fastapi import APIRouter, HTTPException, Query, Request

from costspan.processor.api._auth import principal_of
from costspan.processor.api._common import (
    DaysParam,
    JSONBody,
    Money,
    Window,
    active_in,
    by_call_in,
    by_provider_hours,
    by_provider_in,
    cost_or_null,
    day_iso,
    hour_iso,
    hour_rows,
    outcome_json,
    per_day,
    provider_days,
    ratio,
    sum_all,
    sums_json,
)
from costspan.processor.api._deps import Currency, TenantIdScope, TenantScope
from costspan.processor.api._index import DAY_S, HOUR_S
from costspan.processor.api._schemas import (
    AggregatesOut,
    CostsByProviderOut,
    CostTrendOut,
    ErrorsByProviderOut,
    GlobalUsageOut,
    HealthOut,
    HourRow,
    LatencyFigures,
    LatencyOut,
    ModelUsage,
    PeriodRow,
    RealtimeOut,
    SummaryUsageOut,
    TenantUsageOut,
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


def _budget(request: Request, tenant: str | None, period: UsagePeriod) -> tuple[Decimal | None, float | None, Status]:
    """(limit, utilization in % rounded to 2 places, status) of the scope's strictest budget in ``period``."""
    view: BudgetView | None = request.app.state.budget_view
    shown = view(tenant, period) if view is not None else None
    if shown is None:
        return None, None, "healthy"
    return shown.limit, round(float(shown.utilization * 100), 2), shown.status


@router.get("/health", response_model=HealthOut)
async def health(request: Request) -> JSONBody:
    """Liveness of the usage API (no key needed)."""
    store = request.app.state.store
    body: HealthOut = {
        "status": "healthy" if store.started and not store.closing else "starting",
        "timestamp": _now_iso(),
    }
    return JSONBody(body)


def _seed_number(amount: str | None) -> float:
    """A QLens money field: a JSON number (0 when nothing was priced; the exact string is beside it)."""
    return float(amount) if amount is not None else 0.0


@router.get("/v1/usage", response_model=TenantUsageOut | SummaryUsageOut | GlobalUsageOut)
async def usage(
    request: Request,
    reader: TenantIdScope,
    money: Currency,
    scope: Literal["tenant", "summary", "global"] = "tenant",
    period: UsagePeriod = "daily",
) -> JSONBody:
    """Usage of a tenant (``scope=tenant``), a summary, or every tenant (``scope=global``, admin only).

    ``X-Tenant-ID`` (or ``tenant_id``) names the tenant of ``scope=tenant`` and ``summary``; with
    ``scope=global`` it is the caller's own tenant, as QLens' admin sends it, and the answer covers
    every tenant.
    """
    tenant, index = reader.tenant, reader.index
    if scope == "global":
        if principal_of(request).role != "admin":
            raise HTTPException(403, "scope=global needs an admin key")
        if request.query_params.get("tenant_id") is not None:
            raise HTTPException(400, "scope=global covers every tenant: leave out tenant_id")
        tenant = None
    if scope == "tenant" and tenant is None:
        raise HTTPException(400, "scope=tenant needs a tenant: send tenant_id or X-Tenant-ID")
    now = time.time()
    today = Window.last_days(1, now)
    t = datetime.fromtimestamp(now, UTC)
    month = Window(int(datetime(t.year, t.month, 1, tzinfo=UTC).timestamp()), today.last)
    day_total = sum_all(a for _, a in per_day(index, tenant, today))
    limit, used, status = _budget(request, tenant, period)
    tenants, services = active_in(index, tenant, today)
    day_cost = cost_or_null(day_total, money)
    if scope == "global":
        everyone: GlobalUsageOut = {
            "total_cost_today": _seed_number(day_cost),
            "total_cost_today_exact": day_cost,
            "request_count": day_total.requests,
            "unpriced_calls": day_total.unpriced,
            "blocked_count": day_total.blocked,
            "active_tenants": len(tenants),
            "active_services": len(services),
            "budget_utilization_percent": used,
            "currency": money.currency,
            "last_updated": _now_iso(),
        }
        return JSONBody(everyone)
    if scope == "summary":
        summary: SummaryUsageOut = {
            "daily_cost": _seed_number(day_cost),
            "daily_cost_exact": day_cost,
            "request_count": day_total.requests,
            "unpriced_calls": day_total.unpriced,
            "blocked_count": day_total.blocked,
            "active_tenants": len(tenants),
            "active_services": len(services),
            "budget_utilization_percent": used,
            "status": status,
            "currency": money.currency,
            "last_updated": _now_iso(),
        }
        return JSONBody(summary)
    assert tenant is not None
    month_total = sum_all(a for _, a in per_day(index, tenant, month))
    shown = by_call_in(index, tenant, month if period == "monthly" else today)
    by_model: dict[str, Sums] = {}
    for (_, model, _), agg in shown.items():
        by_model.setdefault(model, Sums()).merge(agg)
    model_usage: dict[str, ModelUsage] = {}
    for m, a in sorted(by_model.items()):
        cost = cost_or_null(a, money)
        model_usage[m] = {
            "request_count": a.requests,
            "tokens_used": a.tokens,
            "cost": _seed_number(cost),
            "cost_exact": cost,
            "avg_latency_ms": round(a.latency_ms / a.requests, 3) if a.requests else None,
            **outcome_json(a),
        }
    shown_total = month_total if period == "monthly" else day_total
    month_cost = cost_or_null(month_total, money)
    body: TenantUsageOut = {
        "tenant_id": tenant,
        "period": period,
        "daily_cost": _seed_number(day_cost),
        "daily_cost_exact": day_cost,
        "monthly_cost": _seed_number(month_cost),
        "monthly_cost_exact": month_cost,
        "request_count": shown_total.requests,
        "unpriced_calls": shown_total.unpriced,
        "blocked_count": shown_total.blocked,
        "model_usage": model_usage,
        "budget_limit": None if limit is None else _seed_number(money.fmt(limit)),
        "budget_limit_exact": None if limit is None else money.fmt(limit),
        "currency": money.currency,
        "last_updated": _now_iso(),
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
