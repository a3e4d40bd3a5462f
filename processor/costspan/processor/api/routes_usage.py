"""``/health``, ``/v1/usage`` and the ``/api/usage/*`` metrics, cost and latency questions."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request

from costspan.processor.api.auth import read_scope
from costspan.processor.api.common import (
    CurrencyParam,
    DaysParam,
    Window,
    agg_json,
    by_call_in,
    by_provider_in,
    day_iso,
    index_of,
    money_of,
    per_day,
    ratio,
    sum_aggs,
    tenant_key,
)
from costspan.processor.api.index import DAY_S, HOUR_S, Agg

__all__ = ["BudgetView", "router"]

#: ``(tenant or None for global) -> (limit, spent)`` in USD for the current period, from the budgets.
BudgetView = Callable[[str | None], tuple[Decimal | None, Decimal | None]]

router = APIRouter(tags=["usage"])

ProviderParam = Annotated[str | None, Query(min_length=1, max_length=200, description="only this provider")]
TenantParam = Annotated[str | None, Query(min_length=1, max_length=200, description="tenant (admin keys)")]
ProjectParam = Annotated[str | None, Query(min_length=1, max_length=200, description="only this project")]


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _budget(request: Request, tenant: str | None) -> tuple[Decimal | None, float | None, str]:
    view: BudgetView | None = request.app.state.budget_view
    limit, spent = view(tenant) if view is not None else (None, None)
    if limit is None or spent is None or limit <= 0:
        return limit, None, "healthy"
    used = float(spent / limit * 100)
    status = "critical" if used >= 90 else "warning" if used >= 75 else "healthy"
    return limit, round(used, 2), status


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    """Liveness of the usage API (no key needed)."""
    store = request.app.state.store
    return {"status": "healthy" if store.started and not store.closing else "starting", "timestamp": _now_iso()}


@router.get("/v1/usage")
async def usage(
    request: Request,
    scope: Literal["tenant", "summary", "global"] = "tenant",
    period: Literal["daily", "monthly"] = "daily",
    tenant_id: TenantParam = None,
    currency: CurrencyParam = "USD",
) -> dict[str, Any]:
    """Usage of a tenant (``scope=tenant``), a summary, or every tenant (``scope=global``, admin only)."""
    tenant = read_scope(request, tenant_id)
    if scope == "global" and tenant is not None:
        raise HTTPException(403, "scope=global is for admin keys without a tenant")
    if scope == "tenant" and tenant is None:
        raise HTTPException(400, "scope=tenant needs a tenant: send tenant_id or X-Tenant-ID")
    money = money_of(request, currency)
    index = index_of(request)
    now = time.time()
    today = Window.last_days(1, now)
    t = datetime.fromtimestamp(now, UTC)
    month = Window(int(datetime(t.year, t.month, 1, tzinfo=UTC).timestamp()), today.last)
    day_total = sum_aggs(a for _, a in per_day(index, tenant, today))
    limit, used, status = _budget(request, tenant)
    with index.lock:
        days = index.day_range(tenant_key(tenant), today.first, today.last)
        tenants = {x for _, td in days for x in td.tenants}
        services = {x for _, td in days for x in td.services}
    if scope == "global":
        return {
            "total_cost_today": money.fmt(day_total.cost),
            "request_count": day_total.requests,
            "active_tenants": len(tenants),
            "active_services": len(services),
            "budget_utilization_percent": used,
            "last_updated": _now_iso(),
        }
    if scope == "summary":
        return {
            "daily_cost": money.fmt(day_total.cost),
            "request_count": day_total.requests,
            "active_tenants": len(tenants),
            "active_services": len(services),
            "budget_utilization_percent": used,
            "status": status,
            "last_updated": _now_iso(),
        }
    month_total = sum_aggs(a for _, a in per_day(index, tenant, month))
    shown = by_call_in(index, tenant, month if period == "monthly" else today)
    by_model: dict[str, Agg] = {}
    for (_, model, _), agg in shown.items():
        by_model.setdefault(model, Agg()).merge(agg)
    return {
        "tenant_id": tenant,
        "period": period,
        "daily_cost": money.fmt(day_total.cost),
        "monthly_cost": money.fmt(month_total.cost),
        "request_count": (month_total if period == "monthly" else day_total).requests,
        "model_usage": {
            m: {
                "request_count": a.requests,
                "tokens_used": a.tokens,
                "cost": money.fmt(a.cost),
                "avg_latency_ms": round(a.latency_ms / a.requests, 3) if a.requests else None,
            }
            for m, a in sorted(by_model.items())
        },
        "budget_limit": None if limit is None else money.fmt(limit),
        "currency": money.currency,
        "last_updated": _now_iso(),
    }


@router.get("/api/usage/metrics/realtime")
async def realtime(request: Request, tenant: TenantParam = None, currency: CurrencyParam = "USD") -> dict[str, Any]:
    """The last 24 hours, hour by hour, with totals per provider."""
    scope = read_scope(request, tenant)
    money = money_of(request, currency)
    index = index_of(request)
    now = int(time.time())
    last = now - now % HOUR_S
    per_provider: dict[str, Agg] = {}
    hours = []
    with index.lock:
        for hour, by_provider in index.hour_range(tenant_key(scope), last - 23 * HOUR_S, last):
            total = Agg()
            for provider, agg in by_provider.items():
                total.merge(agg, histogram=False)
                per_provider.setdefault(provider, Agg()).merge(agg, histogram=False)
            hours.append({"hour": datetime.fromtimestamp(hour, UTC).isoformat(), **agg_json(total, money)})
    total = sum_aggs(per_provider.values())
    return {
        "window_hours": 24,
        "currency": money.currency,
        "totals": {**agg_json(total, money), "error_rate_percent": ratio(total.errors, total.requests)},
        "by_provider": {p: agg_json(a, money) for p, a in sorted(per_provider.items())},
        "hourly": hours,
    }


@router.get("/api/usage/metrics/aggregates")
async def aggregates(
    request: Request,
    days: DaysParam = 7,
    interval: Literal["hour", "day", "month"] = "day",
    provider: ProviderParam = None,
    project: ProjectParam = None,
    tenant: TenantParam = None,
    currency: CurrencyParam = "USD",
) -> dict[str, Any]:
    """Totals per hour, day or month over the last ``days`` days (hours: at most 90 days, no project filter)."""
    scope = read_scope(request, tenant)
    money = money_of(request, currency)
    index = index_of(request)
    window = Window.last_days(days)
    buckets: dict[str, Agg] = {}
    if interval == "hour":
        if days > 90:
            raise HTTPException(400, "interval=hour covers at most 90 days")
        if project is not None:
            raise HTTPException(400, "the project filter works with interval=day or month")
        with index.lock:
            for hour, by_provider in index.hour_range(tenant_key(scope), window.first, window.last + DAY_S - 1):
                total = Agg()
                for p, agg in by_provider.items():
                    if provider is None or p == provider:
                        total.merge(agg, histogram=False)
                if total.requests:
                    buckets[datetime.fromtimestamp(hour, UTC).isoformat()] = total
    else:
        for day, agg in per_day(index, scope, window, provider, project):
            if not agg.requests:
                continue
            label = day_iso(day)[: 7 if interval == "month" else 10]
            buckets.setdefault(label, Agg()).merge(agg, histogram=False)
    return {
        "interval": interval,
        "days": days,
        "provider": provider,
        "project": project,
        "currency": money.currency,
        "data": [{"period": k, **agg_json(a, money)} for k, a in buckets.items()],
    }


@router.get("/api/usage/costs/by-provider")
async def costs_by_provider(
    request: Request,
    days: DaysParam = 30,
    project: ProjectParam = None,
    tenant: TenantParam = None,
    currency: CurrencyParam = "USD",
) -> dict[str, Any]:
    scope = read_scope(request, tenant)
    money = money_of(request, currency)
    per = by_provider_in(index_of(request), scope, Window.last_days(days), project=project)
    total = sum_aggs(per.values())
    rows = sorted(per.items(), key=lambda kv: kv[1].cost, reverse=True)
    return {
        "days": days,
        "project": project,
        "currency": money.currency,
        "total_cost": money.fmt(total.cost),
        "providers": [
            {"provider": p, **agg_json(a, money), "cost_percent": ratio(float(a.cost), float(total.cost))}
            for p, a in rows
        ],
    }


def _latency(a: Agg) -> dict[str, Any]:
    return {
        "request_count": a.requests,
        "p50_ms": a.quantile_ms(0.5),
        "p95_ms": a.quantile_ms(0.95),
        "p99_ms": a.quantile_ms(0.99),
        "avg_ms": round(a.latency_ms / a.requests, 3) if a.requests else None,
        "success_rate_percent": ratio(a.requests - a.errors, a.requests) if a.requests else None,
        "error_rate_percent": ratio(a.errors, a.requests) if a.requests else None,
    }


@router.get("/api/usage/performance/latency")
async def latency(
    request: Request, days: DaysParam = 7, provider: ProviderParam = None, tenant: TenantParam = None
) -> dict[str, Any]:
    """Latency percentiles (from a 5 %-wide histogram) and success rate, overall and per provider."""
    scope = read_scope(request, tenant)
    per = by_provider_in(index_of(request), scope, Window.last_days(days), provider, histogram=True)
    return {
        "days": days,
        "provider": provider,
        **_latency(sum_aggs(per.values(), histogram=True)),
        "by_provider": {p: _latency(a) for p, a in sorted(per.items())},
    }


@router.get("/api/usage/operations/top")
async def top_operations(
    request: Request,
    days: DaysParam = 7,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    tenant: TenantParam = None,
    currency: CurrencyParam = "USD",
) -> dict[str, Any]:
    """The most expensive (provider, model, operation) combinations."""
    scope = read_scope(request, tenant)
    money = money_of(request, currency)
    by_call = by_call_in(index_of(request), scope, Window.last_days(days))
    rows = sorted(by_call.items(), key=lambda kv: kv[1].cost, reverse=True)[:limit]
    return {
        "days": days,
        "currency": money.currency,
        "operations": [{"provider": p, "model": m, "operation": o, **agg_json(a, money)} for (p, m, o), a in rows],
    }


@router.get("/api/usage/costs/trend")
async def cost_trend(
    request: Request, days: DaysParam = 30, tenant: TenantParam = None, currency: CurrencyParam = "USD"
) -> dict[str, Any]:
    """Daily cost per provider."""
    scope = read_scope(request, tenant)
    money = money_of(request, currency)
    index = index_of(request)
    window = Window.last_days(days)
    out: dict[str, dict[str, str]] = {}
    with index.lock:
        for day, td in index.day_range(tenant_key(scope), window.first, window.last):
            out[day_iso(day)] = {p: money.fmt(a.cost, day) for p, a in sorted(td.by_provider.items())}
    return {"days": days, "currency": money.currency, "daily": out}


@router.get("/api/usage/errors/by-provider")
async def errors_by_provider(request: Request, days: DaysParam = 7, tenant: TenantParam = None) -> dict[str, Any]:
    scope = read_scope(request, tenant)
    per = by_provider_in(index_of(request), scope, Window.last_days(days))
    return {
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
