"""Workspaces (= tenants), executions (= workflows), forecasts, optimization, compute resources."""

from __future__ import annotations

import calendar
import math
import statistics
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Final, Literal

from fastapi import APIRouter, HTTPException, Query, Request

from costspan.processor.api._common import (
    JSONBody,
    Money,
    Window,
    by_call_in,
    by_project_in,
    cost_or_null,
    day_iso,
    per_day,
    sum_all,
)
from costspan.processor.api._deps import Currency, Scope, TenantScope, WorkspaceId, WorkspaceScope
from costspan.processor.api._index import DAY_S
from costspan.processor.api._names import workflow_total
from costspan.processor.api._resources import ResourceLog
from costspan.processor.api._schemas_views import (
    CostsBody,
    ExecutionCostsOut,
    ForecastFigures,
    ModelCostRow,
    NamedCost,
    StatsOut,
    TrendDay,
    WorkspaceCostsOut,
    WorkspaceForecastOut,
)
from costspan.processor.store._sums import Sums

__all__ = ["router"]

router = APIRouter(tags=["workspaces"], default_response_class=JSONBody)

_PERIOD_DAYS: Final = {"day": 1, "week": 7, "month": 30}
_Q: Final = Decimal("0.00000001")
_HISTORY_DAYS: Final = 400


def _resources(request: Request) -> ResourceLog:
    log: ResourceLog = request.app.state.resource_log
    return log


def _costs(request: Request, scope: Scope, window: Window, money: Money) -> CostsBody:
    tenant, index = scope.one_tenant, scope.index
    by_call = by_call_in(index, tenant, window)
    log = _resources(request)
    compute = log.days(tenant, window.first, window.last)
    llm_by_day = dict(per_day(index, tenant, window))
    trend: list[TrendDay] = []
    llm_total = compute_total = Decimal(0)
    calls = Sums()
    for day in range(window.first, window.last + 1, DAY_S):
        llm = llm_by_day[day].cost if day in llm_by_day else Decimal(0)
        comp = sum(compute.get(day, {}).values(), Decimal(0))
        llm_total += money.amount(llm, day)
        compute_total += money.amount(comp, day)
        if day in llm_by_day:
            calls.merge(llm_by_day[day], histogram=False)
        trend.append({"date": day_iso(day), "llm_cost": money.fmt(llm, day), "compute_cost": money.fmt(comp, day)})
    by_model: dict[tuple[str, str], Sums] = {}
    for (provider, model, _), a in by_call.items():
        by_model.setdefault((provider, model), Sums()).merge(a)
    kinds = log.kinds(tenant, window.first, window.last)
    total, llm_q, comp_q = ((v.quantize(_Q)) for v in (llm_total + compute_total, llm_total, compute_total))
    return {
        "total_cost": float(total),
        "llm_cost": float(llm_q),
        "compute_cost": float(comp_q),
        "total_cost_exact": format(total, "f"),
        "llm_cost_exact": format(llm_q, "f"),
        "compute_cost_exact": format(comp_q, "f"),
        "request_count": calls.requests,
        "unpriced_calls": calls.unpriced,
        "blocked_count": calls.blocked,
        "breakdown": {
            "llm": {
                "total": float(llm_q),
                "total_exact": format(llm_q, "f"),
                "tokens": calls.tokens,
                "calls": calls.requests,
            },
            "compute": {
                "total": float(comp_q),
                "total_exact": format(comp_q, "f"),
                "records": sum(k.count for k in kinds.values()),
            },
        },
        "by_model": sorted(
            (_model_row(p, m, a, money) for (p, m), a in by_model.items()),
            key=lambda r: (-(r["cost"] or 0.0), r["provider"], r["model"]),
        ),
        "by_resource": [
            {
                "resource_type": k,
                "cost": float(money.amount(v.cost)),
                "cost_exact": money.fmt(v.cost),
                "usage": float(v.usage),
                "count": v.count,
            }
            for k, v in sorted(kinds.items(), key=lambda kv: kv[1].cost, reverse=True)
        ],
        "by_project": {p: _named_cost(a, money) for p, a in sorted(by_project_in(index, tenant, window).items())},
        "daily_trend": trend,
    }


def _model_row(provider: str, model: str, a: Sums, money: Money) -> ModelCostRow:
    exact = cost_or_null(a, money)
    return {
        "provider": provider,
        "model": model,
        "cost": None if exact is None else float(exact),
        "cost_exact": exact,
        "tokens": a.tokens,
        "calls": a.requests,
        "unpriced_calls": a.unpriced,
        "blocked_count": a.blocked,
    }


def _named_cost(a: Sums, money: Money) -> NamedCost:
    return {
        "cost": cost_or_null(a, money),
        "request_count": a.requests,
        "tokens": a.tokens,
        "unpriced_calls": a.unpriced,
        "blocked_count": a.blocked,
    }


def _forecast(request: Request, scope: Scope, money: Money, now: float | None = None) -> ForecastFigures:
    """End-of-month forecast: month to date + the last 14 days' daily average × the days left.

    Confidence comes from the data: how many of the 14 days have data and how much they vary
    (coefficient of variation); the range is ±1.96 σ·√(days left).
    """
    tenant, index = scope.one_tenant, scope.index
    t = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    window = Window.last_days(14, t.timestamp())
    compute = _resources(request).days(tenant, window.first, window.last)
    llm = {d: a.cost for d, a in per_day(index, tenant, window)}
    daily = [
        float(llm.get(d, 0) + sum(compute.get(d, {}).values(), Decimal(0)))
        for d in range(window.first, window.last + 1, DAY_S)
    ]
    first_with_data = next((i for i, v in enumerate(daily) if v), len(daily))
    observed = daily[first_with_data:]
    avg = statistics.fmean(observed) if observed else 0.0
    sd = statistics.pstdev(observed) if len(observed) > 1 else 0.0
    cv = sd / avg if avg else 0.0
    month_first = datetime(t.year, t.month, 1, tzinfo=UTC).timestamp()
    mtd_days = per_day(index, tenant, Window(int(month_first), window.last))
    mtd_llm = float(sum((a.cost for _, a in mtd_days), Decimal(0)))
    month_compute = _resources(request).days(tenant, int(month_first), window.last).values()
    mtd_compute = float(sum((sum(v.values(), Decimal(0)) for v in month_compute), Decimal(0)))
    mtd = mtd_llm + mtd_compute
    total_days = calendar.monthrange(t.year, t.month)[1]
    days_left = total_days - t.day
    forecast = mtd + avg * days_left
    spread = 1.96 * sd * math.sqrt(days_left)
    score = round(max(0.0, 1.0 - min(cv, 1.0)) * len(observed) / 14, 3)
    rate = float(money.rate(t.timestamp()))
    confidence: Literal["high", "medium", "low"] = "high" if score >= 0.75 else "medium" if score >= 0.4 else "low"
    return {
        "current_month_spent": round(mtd * rate, 8),
        "llm_cost": round(mtd_llm * rate, 8),
        "compute_cost": round(mtd_compute * rate, 8),
        "days_elapsed": t.day,
        "total_days": total_days,
        "forecast_end_of_month": round(forecast * rate, 8),
        "forecast_confidence": score,
        "projection_accuracy": confidence,
        "daily_average": round(avg * rate, 8),
        "month_to_date": round(mtd * rate, 8),
        "days_left_in_month": days_left,
        "forecast_eom": round(forecast * rate, 8),
        "forecast_low": round(max(mtd, forecast - spread) * rate, 8),
        "forecast_high": round((forecast + spread) * rate, 8),
        "confidence": confidence,
        "confidence_score": score,
        "days_of_data": len(observed),
        "note": "money here is a number (a statistical estimate), not an exact decimal string",
    }


@router.get("/api/workspaces/{workspace_id}/costs", response_model=WorkspaceCostsOut)
async def workspace_costs(
    request: Request, scope: WorkspaceScope, money: Currency, period: Literal["day", "week", "month"] = "month"
) -> JSONBody:
    """Totals, LLM vs compute, by model and resource, the daily trend and the end-of-month forecast."""
    costs = _costs(request, scope, Window.last_days(_PERIOD_DAYS[period]), money)
    forecast = _forecast(request, scope, money)
    body: WorkspaceCostsOut = {
        "workspace_id": scope.one_tenant,
        "period": period,
        "currency": money.currency,
        **costs,
        "forecast_eom": forecast["forecast_eom"],
        "trends": {
            "daily": costs["daily_trend"],
            "forecast_eom": forecast["forecast_eom"],
            "forecast_confidence": forecast["confidence"],
        },
    }
    return JSONBody(body)


@router.get("/api/workspaces/{workspace_id}/cost-forecast", response_model=WorkspaceForecastOut)
async def workspace_forecast(request: Request, scope: WorkspaceScope, money: Currency) -> JSONBody:
    body: WorkspaceForecastOut = {
        "workspace_id": scope.one_tenant,
        "currency": money.currency,
        **_forecast(request, scope, money),
    }
    return JSONBody(body)


@router.get("/api/workspaces/{workspace_id}/cost-stats", response_model=StatsOut)
async def workspace_stats(
    request: Request, scope: WorkspaceScope, money: Currency, days: Annotated[int, Query(ge=1, le=3660)] = 30
) -> JSONBody:
    """Totals (LLM and compute), counts, the dearest and cheapest day, by operation and resource."""
    tenant, index = scope.one_tenant, scope.index
    window = Window.last_days(days)
    days_sums = dict(per_day(index, tenant, window))
    by_call = by_call_in(index, tenant, window)
    total = sum_all(days_sums.values())
    log = _resources(request)
    compute = {d: sum(v.values(), Decimal(0)) for d, v in log.days(tenant, window.first, window.last).items()}
    kinds = log.kinds(tenant, window.first, window.last)
    compute_total = sum(compute.values(), Decimal(0))
    day_costs = sorted(
        (
            (d, (days_sums[d].cost if d in days_sums else Decimal(0)) + compute.get(d, Decimal(0)))
            for d in set(days_sums) | set(compute)
        ),
        key=lambda dc: (dc[1], dc[0]),
    )
    llm = cost_or_null(total, money)
    per_op: dict[str, Sums] = {}
    for (_, _, op), a in by_call.items():
        per_op.setdefault(op, Sums()).merge(a)
    body: StatsOut = {
        "workspace_id": tenant,
        "days": days,
        "currency": money.currency,
        "total_cost": None if llm is None and not kinds else money.fmt(total.cost + compute_total),
        "llm_cost": llm,
        "compute_cost": money.fmt(compute_total),
        "request_count": total.requests,
        "error_count": total.errors,
        "unpriced_count": total.unpriced,
        "unpriced_calls": total.unpriced,
        "blocked_count": total.blocked,
        "compute_records": sum(k.count for k in kinds.values()),
        "avg_cost_per_request": money.fmt(total.cost / (total.requests - total.unpriced))
        if total.requests > total.unpriced
        else None,
        "max_day": {"date": day_iso(day_costs[-1][0]), "cost": money.fmt(day_costs[-1][1])} if day_costs else None,
        "min_day": {"date": day_iso(day_costs[0][0]), "cost": money.fmt(day_costs[0][1])} if day_costs else None,
        "by_operation": {op: cost_or_null(a, money) for op, a in sorted(per_op.items())},
        "by_resource": {k: money.fmt(v.cost) for k, v in sorted(kinds.items())},
        "models_used": len({m for _, m, _ in by_call}),
    }
    return JSONBody(body)


@router.get("/api/executions/{execution_id}/costs", response_model=ExecutionCostsOut)
async def execution_costs(request: Request, execution_id: WorkspaceId, scope: TenantScope, money: Currency) -> JSONBody:
    """One execution (workflow) over the retained history: LLM calls plus compute resources."""
    llm = workflow_total(scope.index, scope.tenant, Window.last_days(_HISTORY_DAYS), execution_id)
    log = _resources(request)
    compute = log.workflow(scope.tenant, execution_id)
    kinds = log.workflow_kinds(scope.tenant, execution_id)
    comp_total = sum(compute.values(), Decimal(0))
    if not llm.calls and not compute:
        raise HTTPException(404, f"no costs recorded for execution {execution_id!r}")
    total, llm_cost, comp = (money.amount(v) for v in (llm.cost + comp_total, llm.cost, comp_total))
    body: ExecutionCostsOut = {
        "execution_id": execution_id,
        "currency": money.currency,
        "total_cost": float(total),
        "llm_cost": float(llm_cost),
        "compute_cost": float(comp),
        "total_cost_exact": money.fmt(llm.cost + comp_total),
        "llm_cost_exact": money.fmt(llm.cost),
        "compute_cost_exact": money.fmt(comp_total),
        "breakdown": {
            "llm": {"cost": float(llm_cost), "tokens": llm.tokens, "calls": llm.requests},
            "compute": {
                "cost": float(comp),
                "by_type": {
                    k: {"cost": float(money.amount(v.cost)), "usage": float(v.usage)} for k, v in sorted(kinds.items())
                },
            },
        },
        "request_count": llm.requests,
        "unpriced_calls": llm.unpriced,
        "blocked_count": llm.blocked,
        "input_tokens": llm.input_tokens,
        "output_tokens": llm.output_tokens,
        "by_resource": {r: money.fmt(c) for r, c in sorted(compute.items())},
    }
    return JSONBody(body)
