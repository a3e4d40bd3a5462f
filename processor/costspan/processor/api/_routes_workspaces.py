"""Workspaces (= tenants), executions (= workflows), forecasts, optimization, compute resources."""

from __future__ import annotations

import calendar
import math
import statistics
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from costspan.pricing import InvalidUsageError, PricingError, Usage
from costspan.processor.api._auth import require_ingest
from costspan.processor.api._binding import named_tenant, write_tenant
from costspan.processor.api._common import (
    JSONBody,
    Money,
    Window,
    by_call_in,
    by_project_in,
    cost_or_null,
    day_iso,
    per_day,
    pricer_of,
    sum_all,
)
from costspan.processor.api._deps import Currency, Scope, TenantScope, WorkspaceId, WorkspaceScope
from costspan.processor.api._index import DAY_S
from costspan.processor.api._keys import Principal
from costspan.processor.api._names import workflow_total
from costspan.processor.api._resources import RESOURCE_KINDS, ResourceEntry, ResourceLog
from costspan.processor.api._schemas import Identifier, TenantId
from costspan.processor.api._schemas_views import (
    Caching,
    CostsBody,
    Downgrade,
    ExecutionCostsOut,
    ForecastFigures,
    NamedCost,
    OptimizationOut,
    StatsOut,
    TrendDay,
    WorkspaceCostsOut,
    WorkspaceForecastOut,
)
from costspan.processor.store._sums import Sums
from costspan.processor.store._validate import MAX_COST_USD

__all__ = ["SMALL_MODELS", "ResourceUsageIn", "router"]

router = APIRouter(tags=["workspaces"], default_response_class=JSONBody)

_PERIOD_DAYS: Final = {"day": 1, "week": 7, "month": 30}
#: The cheap model a downgrade recommendation points to, per provider.
SMALL_MODELS: Final = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "google": "gemini-2.5-flash"}
#: Share of input tokens a caching recommendation assumes could be served from cache.
CACHEABLE_SHARE: Final = Decimal("0.5")
_HISTORY_DAYS: Final = 400


def _resources(request: Request) -> ResourceLog:
    log: ResourceLog = request.app.state.resource_log
    return log


def _costs(request: Request, scope: Scope, window: Window, money: Money) -> CostsBody:
    tenant, index = scope.one_tenant, scope.index
    by_call = by_call_in(index, tenant, window)
    compute = _resources(request).days(tenant, window.first, window.last)
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
    by_model: dict[str, Sums] = {}
    for (_, model, _), a in by_call.items():
        by_model.setdefault(model, Sums()).merge(a)
    by_resource: dict[str, Decimal] = {}
    for day_costs in compute.values():
        for r, c in day_costs.items():
            by_resource[r] = by_resource.get(r, Decimal(0)) + c
    q = Decimal("0.00000001")
    return {
        "total_cost": format((llm_total + compute_total).quantize(q), "f"),
        "llm_cost": format(llm_total.quantize(q), "f"),
        "compute_cost": format(compute_total.quantize(q), "f"),
        "request_count": calls.requests,
        "unpriced_calls": calls.unpriced,
        "blocked_count": calls.blocked,
        "by_model": {m: _named_cost(a, money) for m, a in sorted(by_model.items())},
        "by_resource": {r: money.fmt(c) for r, c in sorted(by_resource.items())},
        "by_project": {p: _named_cost(a, money) for p, a in sorted(by_project_in(index, tenant, window).items())},
        "daily_trend": trend,
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
    mtd = float(sum((a.cost for _, a in mtd_days), Decimal(0)))
    month_compute = _resources(request).days(tenant, int(month_first), window.last).values()
    mtd += float(sum((sum(v.values(), Decimal(0)) for v in month_compute), Decimal(0)))
    days_left = calendar.monthrange(t.year, t.month)[1] - t.day
    forecast = mtd + avg * days_left
    spread = 1.96 * sd * math.sqrt(days_left)
    score = round(max(0.0, 1.0 - min(cv, 1.0)) * len(observed) / 14, 3)
    rate = float(money.rate(t.timestamp()))
    return {
        "daily_average": round(avg * rate, 8),
        "month_to_date": round(mtd * rate, 8),
        "days_left_in_month": days_left,
        "forecast_eom": round(forecast * rate, 8),
        "forecast_low": round(max(mtd, forecast - spread) * rate, 8),
        "forecast_high": round((forecast + spread) * rate, 8),
        "confidence": "high" if score >= 0.75 else "medium" if score >= 0.4 else "low",
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
    body: WorkspaceCostsOut = {
        "workspace_id": scope.one_tenant,
        "period": period,
        "currency": money.currency,
        **costs,
        "forecast_eom": _forecast(request, scope, money)["forecast_eom"],
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


@router.get("/api/workspaces/{workspace_id}/cost-optimization", response_model=OptimizationOut)
async def workspace_optimization(request: Request, scope: WorkspaceScope, money: Currency) -> JSONBody:
    """Model-downgrade and prompt-caching recommendations, savings priced from the catalog.

    From the last 30 days per (provider, model): the average call is re-priced on the provider's
    small model (:data:`SMALL_MODELS`) and with :data:`CACHEABLE_SHARE` of its input read from
    cache; monthly savings = (current − alternative) × the calls of 30 days.
    """
    tenant = scope.one_tenant
    pricer = pricer_of(request)
    by_call = by_call_in(scope.index, tenant, Window.last_days(30))
    per_model: dict[tuple[str, str], Sums] = {}
    for (p, m, _), a in by_call.items():
        per_model.setdefault((p, m), Sums()).merge(a)
    recs: list[Downgrade | Caching] = []
    for (provider, model), a in sorted(per_model.items()):
        priced = a.requests - a.unpriced
        if not priced or a.cost <= 0:
            continue
        try:
            usage = Usage(
                input_tokens=a.input_tokens // a.requests,
                output_tokens=a.output_tokens // a.requests,
                cache_read_tokens=a.cache_read_tokens // a.requests,
            )
        except InvalidUsageError:  # an average no single call could have (stored unpriced): no advice
            continue
        current = a.cost
        small = SMALL_MODELS.get(provider)
        if small and small != model:
            alt = pricer.price_call(small, usage, provider=provider)
            if alt.total is not None and alt.total * priced < current:
                saving = current - alt.total * priced
                recs.append(
                    {
                        "type": "model_downgrade",
                        "provider": provider,
                        "model": model,
                        "suggested_model": small,
                        "current_monthly_cost": money.fmt(current),
                        "estimated_monthly_savings": money.fmt(saving),
                        "reason": f"{small} costs {money.fmt(alt.total)} per average call of this workload",
                    }
                )
        cached_share = a.cache_read_tokens / a.input_tokens if a.input_tokens else 0.0
        if cached_share < 0.1 and usage.input_tokens >= 1024:
            cached = int(usage.input_tokens * CACHEABLE_SHARE)
            with_cache = pricer.price_call(
                model,
                Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, cache_read_tokens=cached),
                provider=provider,
            )
            plain = pricer.price_call(model, usage, provider=provider)
            if with_cache.total is not None and plain.total is not None and with_cache.total < plain.total:
                saving = (plain.total - with_cache.total) * priced
                recs.append(
                    {
                        "type": "prompt_caching",
                        "provider": provider,
                        "model": model,
                        "current_cache_read_share_percent": round(cached_share * 100, 2),
                        "estimated_monthly_savings": money.fmt(saving),
                        "reason": f"reading {int(CACHEABLE_SHARE * 100)} % of input from cache",
                    }
                )
    recs.sort(key=lambda r: Decimal(r["estimated_monthly_savings"]), reverse=True)
    total = sum((Decimal(r["estimated_monthly_savings"]) for r in recs), Decimal(0))
    body: OptimizationOut = {
        "workspace_id": tenant,
        "currency": money.currency,
        "recommendations": recs,
        "total_estimated_monthly_savings": format(total, "f"),
    }
    return JSONBody(body)


@router.get("/api/workspaces/{workspace_id}/cost-stats", response_model=StatsOut)
async def workspace_stats(
    scope: WorkspaceScope, money: Currency, days: Annotated[int, Query(ge=1, le=3660)] = 30
) -> JSONBody:
    tenant, index = scope.one_tenant, scope.index
    window = Window.last_days(days)
    days_sums = per_day(index, tenant, window)
    by_call = by_call_in(index, tenant, window)
    total = sum_all(a for _, a in days_sums)
    costs = sorted(days_sums, key=lambda da: da[1].cost)
    per_op: dict[str, Sums] = {}
    for (_, _, op), a in by_call.items():
        per_op.setdefault(op, Sums()).merge(a)
    body: StatsOut = {
        "workspace_id": tenant,
        "days": days,
        "currency": money.currency,
        "total_cost": cost_or_null(total, money),
        "request_count": total.requests,
        "error_count": total.errors,
        "unpriced_count": total.unpriced,
        "unpriced_calls": total.unpriced,
        "blocked_count": total.blocked,
        "avg_cost_per_request": money.fmt(total.cost / (total.requests - total.unpriced))
        if total.requests > total.unpriced
        else None,
        "max_day": {"date": day_iso(costs[-1][0]), "cost": money.fmt(costs[-1][1].cost)} if costs else None,
        "min_day": {"date": day_iso(costs[0][0]), "cost": money.fmt(costs[0][1].cost)} if costs else None,
        "by_operation": {op: cost_or_null(a, money) for op, a in sorted(per_op.items())},
        "models_used": len({m for _, m, _ in by_call}),
    }
    return JSONBody(body)


@router.get("/api/executions/{execution_id}/costs", response_model=ExecutionCostsOut)
async def execution_costs(request: Request, execution_id: WorkspaceId, scope: TenantScope, money: Currency) -> JSONBody:
    """One execution (workflow) over the retained history: LLM calls plus compute resources."""
    llm = workflow_total(scope.index, scope.tenant, Window.last_days(_HISTORY_DAYS), execution_id)
    compute = _resources(request).workflow(scope.tenant, execution_id)
    comp_total = sum(compute.values(), Decimal(0))
    if not llm.calls and not compute:
        raise HTTPException(404, f"no costs recorded for execution {execution_id!r}")
    body: ExecutionCostsOut = {
        "execution_id": execution_id,
        "currency": money.currency,
        "total_cost": money.fmt(llm.cost + comp_total),
        "llm_cost": money.fmt(llm.cost),
        "compute_cost": money.fmt(comp_total),
        "request_count": llm.requests,
        "unpriced_calls": llm.unpriced,
        "blocked_count": llm.blocked,
        "input_tokens": llm.input_tokens,
        "output_tokens": llm.output_tokens,
        "by_resource": {r: money.fmt(c) for r, c in sorted(compute.items())},
    }
    return JSONBody(body)


class ResourceUsageIn(BaseModel):
    """Compute used by a workspace. ``amount`` is cores, GB, GPUs or sandboxes; bandwidth is GB moved.

    Catalog quantity: cpu/memory/gpu = amount × hours; storage = amount × months (30 days);
    bandwidth = amount; sandbox = amount × minutes.
    """

    model_config = ConfigDict(extra="forbid")

    workspace_id: TenantId = ""
    execution_id: Identifier = ""
    project_id: Identifier = ""
    resource_type: Literal["cpu", "memory", "gpu", "storage", "bandwidth", "sandbox"]
    amount: Decimal = Field(ge=0, le=Decimal(10**9), allow_inf_nan=False)
    duration_seconds: Decimal = Field(Decimal(0), ge=0, le=Decimal(10**9), allow_inf_nan=False)
    timestamp: datetime | None = None
    id: Identifier = Field("", max_length=200, description="idempotency key")


_UNIT_SECONDS: Final = {"cpu": 3600, "memory": 3600, "gpu": 3600, "storage": 30 * 86400, "sandbox": 60}


@router.post("/api/resources/usage", status_code=201)
def resource_usage(
    request: Request, body: ResourceUsageIn, principal: Annotated[Principal, Depends(require_ingest)]
) -> dict[str, Any]:
    named = named_tenant(request, body.workspace_id)
    tenant = write_tenant(principal, named, refusal="this key may only report usage for its own workspace")
    if not tenant:
        raise HTTPException(422, "workspace_id is required")
    if not getattr(request.app.state, "cost_tracking", True):  # off: answered, neither priced nor stored
        return {"id": body.id, "stored": False, "workspace_id": tenant, "cost_status": "untracked"}
    unit = _UNIT_SECONDS.get(body.resource_type)
    quantity = body.amount if unit is None else body.amount * body.duration_seconds / unit
    at = body.timestamp.timestamp() if body.timestamp else time.time()
    resource = RESOURCE_KINDS[body.resource_type]
    try:
        cost = pricer_of(request).price_resource(resource, quantity, at=at, tenant=tenant).total
    except PricingError as exc:
        raise HTTPException(422, str(exc)) from None
    if cost > MAX_COST_USD:  # each factor is bounded, their product need not be
        raise HTTPException(422, f"this usage would cost {cost:.2f} USD, above {MAX_COST_USD} for one report")
    entry = ResourceEntry(
        body.id or uuid.uuid4().hex,
        at,
        tenant,
        body.execution_id,
        body.project_id,
        body.resource_type,
        resource,
        quantity,
        cost,
    )
    stored = _resources(request).append(entry)
    return {
        "id": entry.id,
        "stored": stored,
        "workspace_id": tenant,
        "resource": resource,
        "quantity": format(quantity, "f"),
        "cost_usd": format(cost, "f"),
    }
