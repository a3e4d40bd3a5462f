"""``GET /api/dashboard/summary``: everything the built-in page shows, in one read, tenant-isolated."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Query, Request

from costspan.processor.api._common import JSONBody, Window, by_call_in, day_iso, per_day, sum_all, tenants_of
from costspan.processor.api._deps import TenantScope
from costspan.processor.api._index import DAY_S
from costspan.processor.api._names import top_names
from costspan.processor.api._schemas_views import (
    DashboardOut,
    DashBudget,
    DashDay,
    DashModel,
    DashTenant,
    DashUnpriced,
    DashUser,
    DashWorkflow,
)
from costspan.processor.store._sums import Sums

__all__ = ["router"]

router = APIRouter(tags=["dashboard"], default_response_class=JSONBody)
TOP = 10


def _usd(value: Decimal) -> str:
    return format(value.quantize(Decimal("0.000001")), "f")


@router.get("/api/dashboard/summary", response_model=DashboardOut)
async def summary(
    request: Request,
    reader: TenantScope,
    days: Annotated[int, Query(ge=1, le=400, description="days back, today included")] = 14,
) -> JSONBody:
    """Spend per day, by tenant and model, budgets, top workflows and users, unpriced models (USD)."""
    scope, index = reader.tenant, reader.index
    window = Window.last_days(days)
    day_sums = per_day(index, scope, window)
    by_call = by_call_in(index, scope, window)
    total = sum_all(a for _, a in day_sums)
    by_tenant: list[DashTenant] = []
    with index.read():  # one consistent walk (the sums per_day returns are the index's own)
        for t in tenants_of(index, scope):
            agg = sum_all(a for _, a in per_day(index, t, window))
            if agg.calls:
                by_tenant.append(
                    {
                        "tenant": t,
                        "calls": agg.requests,
                        "cost_usd": _usd_or_null(agg),
                        "unpriced_calls": agg.unpriced,
                        "blocked_calls": agg.blocked,
                    }
                )
    by_tenant.sort(key=lambda r: Decimal(str(r["cost_usd"] or 0)), reverse=True)
    by_model: list[DashModel] = [  # a model none of whose calls has a price shows no cost, not a made-up 0
        {
            "provider": p,
            "model": m,
            "calls": a.requests,
            "cost_usd": _usd_or_null(a),
            "unpriced_calls": a.unpriced,
            "blocked_calls": a.blocked,
        }
        for (p, m, _), a in sorted(by_call.items(), key=lambda kv: kv[1].cost, reverse=True)
    ]
    unpriced: list[DashUnpriced] = [
        {"provider": p, "model": m, "calls": a.unpriced}
        for (p, m, _), a in sorted(by_call.items(), key=lambda kv: kv[1].unpriced, reverse=True)
        if a.unpriced
    ]
    workflows: list[DashWorkflow] = [
        {"workflow": name, "cost_usd": _usd(a.cost)} for name, a in top_names(index, scope, window, "workflow", TOP)
    ]
    users: list[DashUser] = [
        {"user": name, "cost_usd": _usd(a.cost)} for name, a in top_names(index, scope, window, "user", TOP)
    ]
    body: DashboardOut = {
        "tenant": scope,
        "days": days,
        "currency": "USD",
        "total_cost_usd": _usd(total.cost),
        "total_calls": total.requests,
        "unpriced_calls": total.unpriced,
        "blocked_calls": total.blocked,
        "outcomes": {"ok": total.ok, "degraded": total.degraded, "blocked": total.blocked, "error": total.errors},
        "daily": _every_day(window, day_sums),
        "by_tenant": by_tenant,
        "by_model": by_model,
        "budgets": _budgets(request, scope),
        "top_workflows": workflows,
        "top_users": users,
        "unpriced_models": unpriced,
        "generated_at": datetime.now(UTC).isoformat(),
    }
    return JSONBody(body)


def _usd_or_null(a: Sums) -> str | None:
    cost = a.priced_cost
    return None if cost is None else _usd(cost)


def _every_day(window: Window, per_day: list[tuple[int, Sums]]) -> list[DashDay]:
    """Spend per day over the whole window, days without calls included (as 0)."""
    cost = {day: agg.cost for day, agg in per_day}
    return [
        {"date": day_iso(day), "cost": _usd(cost.get(day, Decimal(0)))}
        for day in range(window.first, window.last + DAY_S, DAY_S)
    ]


def _budgets(request: Request, tenant: str | None) -> list[DashBudget]:
    book = getattr(request.app.state, "budget_book", None)
    if book is None:
        return []
    out: list[DashBudget] = []
    for status in book.status():
        scope = status.scope
        if tenant is not None and scope.get("tenant") != tenant:
            continue  # a tenant sees its own budgets only
        out.append(
            {
                "id": status.budget.id,
                "scope": ", ".join(f"{k}={v}" for k, v in sorted(scope.items())) or "global",
                "unit": status.budget.unit.value,
                "period": status.budget.period.value,
                "spent": _usd(status.spent),
                "limit": str(status.budget.limit),
                "utilization_percent": float(status.utilization * 100),
                "status": status.state,
            }
        )
    return out
