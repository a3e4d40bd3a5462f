"""The ``/api/v2/*`` seed routes, answered as ``{"success": true, "data": {...}}``."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Final, Literal

from fastapi import APIRouter, Query, Request

from costspan.pricing import Usage
from costspan.processor.api._common import (
    JSONBody,
    Window,
    active_in,
    by_provider_in,
    cost_or_null,
    day_iso,
    per_day,
    pricer_of,
    sum_all,
)
from costspan.processor.api._deps import Currency, TenantIdScope
from costspan.processor.api._names import workflow_days
from costspan.processor.api._schemas import EstimateOk, MetricsOk, ModelEstimate, V2CostsOk
from costspan.processor.store._sums import Sums

__all__ = ["COMPLEXITY_DEFAULTS", "ESTIMATE_MODELS", "router"]

router = APIRouter(prefix="/api/v2", tags=["v2"], default_response_class=JSONBody)

Complexity = Literal["trivial", "simple", "moderate", "complex", "very_complex"]

#: Documented defaults per task complexity: (model calls, input tokens per call, output tokens per call).
COMPLEXITY_DEFAULTS: Final[dict[str, tuple[int, int, int]]] = {
    "trivial": (1, 500, 150),
    "simple": (2, 1500, 400),
    "moderate": (4, 3000, 800),
    "complex": (8, 6000, 1500),
    "very_complex": (16, 10000, 2500),
}
#: Candidate models of an estimate: (provider, model, capability tier 1 = small, 2 = large).
ESTIMATE_MODELS: Final = (
    ("openai", "gpt-4o-mini", 1),
    ("openai", "gpt-4o", 2),
    ("anthropic", "claude-haiku-4-5", 1),
    ("anthropic", "claude-sonnet-4-5", 2),
    ("google", "gemini-2.5-flash", 1),
    ("google", "gemini-2.5-pro", 2),
)
#: Calls of the last 30 days needed before an estimate is calibrated from the ledger.
CALIBRATION_MIN_CALLS: Final = 50


@router.get("/costs", response_model=V2CostsOk)
async def costs(
    scope: TenantIdScope,
    money: Currency,
    workflow_id: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    period_days: Annotated[int, Query(ge=1, le=3660)] = 30,
) -> JSONBody:
    """Cost of a tenant (or one of its workflows) over the last ``period_days`` UTC days."""
    tenant, index = scope.tenant, scope.index
    window = Window.last_days(period_days)
    daily: dict[str, str | None] = {}
    total = Sums()
    days = (
        per_day(index, tenant, window)
        if workflow_id is None
        else workflow_days(index, tenant, window, workflow_id).items()
    )
    for day, agg in sorted(days, key=lambda da: da[0]):
        daily[day_iso(day)] = cost_or_null(agg, money, day)
        total.merge(agg, histogram=False)
    total_cost = sum((Decimal(v) for v in daily.values() if v is not None), Decimal(0))
    priced = total.priced_cost is not None
    average = total_cost / period_days
    body: V2CostsOk = {
        "success": True,
        "data": {
            "tenant_id": tenant,
            "workflow_id": workflow_id,
            "period_days": period_days,
            "currency": money.currency,
            "total_requests": total.requests,
            "unpriced_calls": total.unpriced,
            "blocked_count": total.blocked,
            "total_cost_usd": format(total.cost.quantize(Decimal("0.00000001")), "f") if priced else None,
            "total_cost": format(total_cost, "f") if priced else None,
            "average_daily_cost": format(average.quantize(Decimal("0.00000001")), "f"),
            "daily_breakdown": daily,
            "projected_monthly_cost": format((average * 30).quantize(Decimal("0.00000001")), "f"),
        },
    }
    return JSONBody(body)


@router.get("/costs/estimate", response_model=EstimateOk)
async def estimate(
    request: Request,
    scope: TenantIdScope,
    money: Currency,
    complexity: Complexity = "moderate",
    tech_stack: Annotated[str | None, Query(max_length=500, description="comma-separated, e.g. python,react")] = None,
) -> JSONBody:
    """Tokens and cost of one task, per candidate model; calibrated from the ledger when it has history.

    Defaults: :data:`COMPLEXITY_DEFAULTS`; each tech-stack item beyond the first adds 10 % (at most
    +50 %). Calibrated: per-call tokens are the tenant's 30-day average, scaled by the complexity's
    default relative to ``moderate``. Recommended: the cheapest candidate of the needed capability
    (large models for complex and very_complex tasks).
    """
    pricer = pricer_of(request)
    calls, in_per_call, out_per_call = COMPLEXITY_DEFAULTS[complexity]
    _, base_in, base_out = COMPLEXITY_DEFAULTS["moderate"]
    history = sum_all(a for _, a in per_day(scope.index, scope.tenant, Window.last_days(30)))
    source: Literal["defaults", "ledger"] = "defaults"
    if history.requests >= CALIBRATION_MIN_CALLS:
        source = "ledger"
        in_per_call = round(history.input_tokens / history.requests * in_per_call / base_in)
        out_per_call = round(history.output_tokens / history.requests * out_per_call / base_out)
    stack = [s.strip() for s in (tech_stack or "").split(",") if s.strip()]
    factor = 1 + min(max(len(stack) - 1, 0), 5) / 10
    input_tokens = round(calls * in_per_call * factor)
    output_tokens = round(calls * out_per_call * factor)
    need = 2 if complexity in ("complex", "very_complex") else 1
    estimates: dict[str, ModelEstimate] = {}
    best: tuple[Decimal, str] | None = None
    for provider, model, tier in ESTIMATE_MODELS:
        b = pricer.price_call(model, Usage(input_tokens=input_tokens, output_tokens=output_tokens), provider=provider)
        if b.total is None or b.status != "priced":
            continue
        estimates[model] = {
            "provider": provider,
            "estimated_cost_usd": money.fmt(b.total),
            "estimated_tokens": input_tokens + output_tokens,
        }
        if tier >= need and (best is None or b.total < best[0]):
            best = (b.total, model)
    body: EstimateOk = {
        "success": True,
        "data": {
            "complexity": complexity,
            "tech_stack": stack,
            "estimated_input_tokens": input_tokens,
            "estimated_output_tokens": output_tokens,
            "model_estimates": estimates,
            "recommended_model": best[1] if best else None,
            "calibration": {"source": source, "history_calls": history.requests},
            "currency": money.currency,
        },
    }
    return JSONBody(body)


@router.get("/metrics", response_model=MetricsOk)
async def metrics(scope: TenantIdScope, money: Currency) -> JSONBody:
    """Headline figures; the ``costs`` block holds today, month to date and the last 30 days."""
    tenant, index = scope.tenant, scope.index
    now = time.time()
    t = datetime.fromtimestamp(now, UTC)
    month_first = int(datetime(t.year, t.month, 1, tzinfo=UTC).timestamp())
    window = Window.last_days(31, now)
    days = per_day(index, tenant, window)
    today_window = Window.last_days(1, now)
    today = today_window.first
    day_total = sum_all(a for d, a in days if d == today)
    month = sum_all(a for d, a in days if d >= month_first)
    last30 = sum_all(a for d, a in days if d > today - 30 * 86400)
    per_provider = by_provider_in(index, tenant, window)
    tenants, _ = active_in(index, tenant, today_window)
    body: MetricsOk = {
        "success": True,
        "data": {
            "tenant_id": tenant,
            "currency": money.currency,
            "costs": {
                "today": cost_or_null(day_total, money),
                "month_to_date": cost_or_null(month, money),
                "last_30_days": cost_or_null(last30, money),
                "average_cost_per_request": money.fmt(last30.cost / (last30.requests - last30.unpriced))
                if last30.requests > last30.unpriced
                else None,
                "unpriced_requests_30d": last30.unpriced,
                "by_provider_30d": {p: cost_or_null(a, money) for p, a in sorted(per_provider.items())},
            },
            "requests": {
                "today": day_total.requests,
                "last_30_days": last30.requests,
                "errors_30d": last30.errors,
                "blocked_30d": last30.blocked,
            },
            "tokens": {"input_30d": last30.input_tokens, "output_30d": last30.output_tokens},
            "active_tenants_today": len(tenants),
        },
    }
    return JSONBody(body)
