"""The seed's monitoring questions as routes: most expensive operations, daily cost per provider, errors."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from costspan.processor.api._common import (
    DaysParam,
    JSONBody,
    Window,
    by_call_in,
    by_provider_in,
    cost_or_null,
    day_iso,
    provider_days,
    ratio,
    sums_json,
)
from costspan.processor.api._deps import Currency, TenantScope
from costspan.processor.api._schemas import CostTrendOut, ErrorsByProviderOut, TopOperationsOut

__all__ = ["router"]

router = APIRouter(tags=["usage"], default_response_class=JSONBody)


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
