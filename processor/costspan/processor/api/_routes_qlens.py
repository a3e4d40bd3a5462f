"""QLens' ``/v1/usage``: a tenant's usage, a summary, or every tenant's (admin keys).

QLens' fields keep its names, with money as JSON numbers (as QLens wrote them); costspan's exact
decimal strings (``*_exact``), outcomes and unpriced counts are beside them. ``X-Tenant-ID`` names the
tenant of ``scope=tenant`` and ``summary``; with ``scope=global`` it is the caller's own tenant (QLens'
admin sends ``admin-tenant``) and the answer covers every tenant. See docs/compatibility.md, "QLens".
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from fastapi import APIRouter, HTTPException, Request

from costspan.processor.api._auth import principal_of
from costspan.processor.api._common import (
    JSONBody,
    Window,
    active_in,
    by_call_in,
    cost_or_null,
    outcome_json,
    per_day,
    sum_all,
)
from costspan.processor.api._deps import Currency, TenantIdScope
from costspan.processor.api._routes_usage import BudgetView, Status, UsagePeriod
from costspan.processor.api._schemas import GlobalUsageOut, ModelUsage, SummaryUsageOut, TenantUsageOut
from costspan.processor.store._sums import Sums

__all__ = ["router"]

router = APIRouter(tags=["usage"], default_response_class=JSONBody)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _budget(request: Request, tenant: str | None, period: UsagePeriod) -> tuple[Decimal | None, float | None, Status]:
    """(limit, utilization in % rounded to 2 places, status) of the scope's strictest budget in ``period``."""
    view: BudgetView | None = request.app.state.budget_view
    shown = view(tenant, period) if view is not None else None
    if shown is None:
        return None, None, "healthy"
    return shown.limit, round(float(shown.utilization * 100), 2), shown.status


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
