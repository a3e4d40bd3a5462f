"""The Quantum Layer seed's ``/api/v2/*`` routes, answered as ``{"success": true, "data": {...}}``.

The seed's fields keep its names and types (money as JSON numbers); costspan's exact figures are
beside them as decimal strings (``*_exact``, and the asked currency's ``total_cost``). See
docs/compatibility.md, "Quantum Layer".
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Final, Literal

from fastapi import APIRouter, HTTPException, Query, Request

from costspan.pricing import Usage
from costspan.processor.api._common import (
    JSONBody,
    Window,
    active_in,
    by_call_in,
    by_provider_in,
    cost_or_null,
    day_iso,
    per_day,
    pricer_of,
    sum_all,
)
from costspan.processor.api._deps import Currency, TenantIdScope
from costspan.processor.api._names import workflow_days
from costspan.processor.api._resources import ResourceLog
from costspan.processor.api._schemas import (
    EstimateOk,
    MetricsCosts,
    MetricsOk,
    ModelBreakdown,
    ModelEstimate,
    V2CostsOk,
)
from costspan.processor.store._sums import Sums

__all__ = ["COMPLEXITY_ALIASES", "COMPLEXITY_DEFAULTS", "ESTIMATE_MODELS", "router"]

router = APIRouter(prefix="/api/v2", tags=["v2"], default_response_class=JSONBody)

Complexity = Literal["trivial", "simple", "moderate", "medium", "complex", "very_complex"]
#: The seed's names for a complexity that costspan names otherwise.
COMPLEXITY_ALIASES: Final[dict[str, str]] = {"medium": "moderate"}
#: At most this many tech-stack items, each at most this long.
_STACK_ITEMS: Final = 50
_STACK_ITEM_CHARS: Final = 200
_Q: Final = Decimal("0.00000001")
#: catalog resources counted in ``compute_hours`` (hours per catalog unit)
_COMPUTE_HOURS: Final = {"cpu_core_hour": Decimal(1), "gpu_hour": Decimal(1), "sandbox_minute": Decimal(1) / 60}

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


def _num(amount: Decimal) -> float:
    """Money as the seed wrote it: a JSON number (the exact decimal string is beside it)."""
    return float(amount.quantize(_Q))


def _exact(amount: Decimal) -> str:
    return format(amount.quantize(_Q), "f")


def _stack(tech_stack: list[str] | None) -> list[str]:
    """The tech stack of repeated ``tech_stack`` parameters, each also split at commas."""
    items = [s.strip() for given in tech_stack or () for s in given.split(",") if s.strip()]
    if len(items) > _STACK_ITEMS or any(len(s) > _STACK_ITEM_CHARS for s in items):
        raise HTTPException(422, f"tech_stack: at most {_STACK_ITEMS} items of at most {_STACK_ITEM_CHARS} characters")
    return items


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
    priced_calls = total.requests - total.unpriced
    models: dict[str, Sums] = {}
    if workflow_id is None:  # the index keeps models per tenant and day, not per workflow
        for (_, model, _), agg in by_call_in(index, tenant, window).items():
            models.setdefault(model, Sums()).merge(agg, histogram=False)
    breakdown: dict[str, ModelBreakdown] = {
        m: {
            "count": a.requests,
            "input_tokens": a.input_tokens,
            "output_tokens": a.output_tokens,
            "cost_usd": _num(a.cost),
            "unpriced_calls": a.unpriced,
        }
        for m, a in sorted(models.items())
    }
    body: V2CostsOk = {
        "success": True,
        "data": {
            "tenant_id": tenant,
            "workflow_id": workflow_id,
            "period_days": period_days,
            "currency": money.currency,
            "total_requests": total.requests,
            "total_input_tokens": total.input_tokens,
            "total_output_tokens": total.output_tokens,
            "total_tokens": total.input_tokens + total.output_tokens,
            "unpriced_calls": total.unpriced,
            "blocked_count": total.blocked,
            "total_cost_usd": _num(total.cost),
            "total_cost_usd_exact": _exact(total.cost) if priced else None,
            "total_cost": format(total_cost, "f") if priced else None,
            "average_cost_per_request": _num(total.cost / priced_calls) if priced_calls > 0 else None,
            "average_daily_cost": _num(average),
            "average_daily_cost_exact": _exact(average),
            "daily_breakdown": {d: _num(Decimal(v or 0)) for d, v in daily.items()},
            "daily_breakdown_exact": daily,
            "model_breakdown": breakdown if workflow_id is None else None,
            "projected_monthly_cost": _num(average * 30),
            "projected_monthly_cost_exact": _exact(average * 30),
        },
    }
    return JSONBody(body)


@router.get("/costs/estimate", response_model=EstimateOk)
async def estimate(
    request: Request,
    scope: TenantIdScope,
    money: Currency,
    complexity: Complexity = "moderate",
    tech_stack: Annotated[
        list[str] | None,
        Query(description="repeat it (tech_stack=Python&tech_stack=FastAPI) or separate with commas"),
    ] = None,
) -> JSONBody:
    """Tokens and cost of one task, per candidate model; calibrated from the ledger when it has history.

    Defaults: :data:`COMPLEXITY_DEFAULTS` (``medium`` is ``moderate``); each tech-stack item beyond the
    first adds 10 % (at most +50 %). Calibrated: per-call tokens are the tenant's 30-day average, scaled
    by the complexity's default relative to ``moderate``. Recommended: the cheapest candidate of the
    needed capability (large models for complex and very_complex tasks).
    """
    pricer = pricer_of(request)
    stack = _stack(tech_stack)
    level = COMPLEXITY_ALIASES.get(complexity, complexity)
    calls, in_per_call, out_per_call = COMPLEXITY_DEFAULTS[level]
    _, base_in, base_out = COMPLEXITY_DEFAULTS["moderate"]
    history = sum_all(a for _, a in per_day(scope.index, scope.tenant, Window.last_days(30)))
    source: Literal["defaults", "ledger"] = "defaults"
    if history.requests >= CALIBRATION_MIN_CALLS:
        source = "ledger"
        in_per_call = round(history.input_tokens / history.requests * in_per_call / base_in)
        out_per_call = round(history.output_tokens / history.requests * out_per_call / base_out)
    factor = 1 + min(max(len(stack) - 1, 0), 5) / 10
    input_tokens = round(calls * in_per_call * factor)
    output_tokens = round(calls * out_per_call * factor)
    need = 2 if level in ("complex", "very_complex") else 1
    estimates: dict[str, ModelEstimate] = {}
    best: tuple[Decimal, str] | None = None
    for provider, model, tier in ESTIMATE_MODELS:
        b = pricer.price_call(model, Usage(input_tokens=input_tokens, output_tokens=output_tokens), provider=provider)
        if b.total is None or b.status != "priced":
            continue
        estimates[model] = {
            "provider": provider,
            "estimated_cost_usd": _num(b.total),
            "estimated_cost_usd_exact": _exact(b.total),
            "estimated_cost": money.fmt(b.total),
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
async def metrics(request: Request, scope: TenantIdScope, money: Currency) -> JSONBody:
    """Headline figures; the ``costs`` block holds the seed's 30-day figures (LLM tokens and cost,
    compute hours, storage, compute cost, their sum) beside today, month to date and the last 30 days."""
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
    resources: ResourceLog = request.app.state.resource_log
    compute, units = resources.totals(tenant, today - 29 * 86400, today)
    compute_usd = sum(compute.values(), Decimal(0))
    hours = sum((units.get(r, Decimal(0)) * per for r, per in _COMPUTE_HOURS.items()), Decimal(0))
    costs: MetricsCosts = {
        "llm_tokens": last30.input_tokens + last30.output_tokens,
        "compute_hours": float(hours.quantize(Decimal("0.0001"))),
        "storage_gb": float(units.get("storage_gb_month", Decimal(0)).quantize(Decimal("0.0001"))),
        "estimated_cost": _num(last30.cost + compute_usd),
        "estimated_cost_exact": _exact(last30.cost + compute_usd),
        "total_llm_cost_usd": _num(last30.cost),
        "total_llm_cost_usd_exact": _exact(last30.cost),
        "compute_cost_usd": _num(compute_usd),
        "compute_costs_usd": {r: _num(c) for r, c in sorted(compute.items())},
        "today": cost_or_null(day_total, money),
        "month_to_date": cost_or_null(month, money),
        "last_30_days": cost_or_null(last30, money),
        "average_cost_per_request": money.fmt(last30.cost / (last30.requests - last30.unpriced))
        if last30.requests > last30.unpriced
        else None,
        "unpriced_requests_30d": last30.unpriced,
        "by_provider_30d": {p: cost_or_null(a, money) for p, a in sorted(per_provider.items())},
    }
    body: MetricsOk = {
        "success": True,
        "costs": costs,  # where the guide's example shows it, and in the envelope as the other v2 routes
        "data": {
            "tenant_id": tenant,
            "currency": money.currency,
            "costs": costs,
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
