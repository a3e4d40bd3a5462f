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
    by_provider_hours,
    by_provider_in,
    cost_or_null,
    day_iso,
    hour_iso,
    hour_rows,
    per_day,
    ratio,
    sum_all,
    sums_json,
)
from costspan.processor.api._deps import Currency, TenantScope
from costspan.processor.api._index import DAY_S, HOUR_S
from costspan.processor.api._schemas import (
    HealthOut,
    HourRow,
    LatencyFigures,
)
from costspan.processor.api._schemas_usage_seed import (
    SeedAggregatesOk,
    SeedByProviderOk,
    SeedLatencyOk,
    SeedPeriodRow,
    SeedRealtimeOk,
)
from costspan.processor.store._store import Store
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

ProviderParam = Annotated[
    str | None, Query(min_length=1, max_length=200, description="only this provider (any letter case)")
]
ProjectParam = Annotated[str | None, Query(min_length=1, max_length=200, description="only this project")]


def _usd(a: Sums) -> float:
    """The seed's money: USD of the priced calls as a JSON number (0 when none priced, as the seed did)."""
    return float(a.cost)


def _period_start(label: str) -> str:
    """The seed's ``period``: ISO 8601 start of the bucket (``YYYY-MM`` / ``YYYY-MM-DD`` / an ISO hour)."""
    if len(label) == 7:
        label += "-01"
    return label if "T" in label else label + "T00:00:00+00:00"


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


def _operations(store: Store, tenant: str | None, first_hour: int, last_hour: int) -> dict[str, Sums]:
    """Totals per operation over the hours ``[first_hour, last_hour]`` (of one tenant, or all), from the
    store's hour buckets (the usage index keeps operations per UTC day only). O(hours × the hours' series)."""
    out: dict[str, Sums] = {}
    with store.lock:
        hours = store.rollups.buckets["hour"]
        for hour in range(first_hour, last_hour + 1, HOUR_S):
            for dims, a in (hours.get(hour) or {}).items():
                if tenant is None or dims[0] == tenant:
                    into = out.get(dims[4])
                    if into is None:
                        into = out[dims[4]] = Sums()
                    into.merge_core(a)
    return out


@router.get("/api/usage/metrics/realtime", response_model=SeedRealtimeOk)
async def realtime(request: Request, scope: TenantScope, money: Currency) -> JSONBody:
    """The last 24 hours, hour by hour, with totals per provider and operation (seed envelope)."""
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
    per_op = _operations(request.app.state.store, scope.tenant, last - 23 * HOUR_S, last)
    body: SeedRealtimeOk = {
        "success": True,
        "data": {
            "total_cost": _usd(total),
            "total_requests": total.requests,
            "avg_latency_ms": int(total.latency_ms / total.requests) if total.requests else 0,
            "by_provider": {
                p: {"requests": a.requests, "cost_usd": _usd(a), **sums_json(a, money)}
                for p, a in sorted(per_provider.items())
            },
            "by_operation": {op: {"requests": a.requests, "cost_usd": _usd(a)} for op, a in sorted(per_op.items())},
            "cached_at": _now_iso(),
            "window_hours": 24,
            "currency": money.currency,
            "totals": {**sums_json(total, money), "error_rate_percent": ratio(total.errors, total.requests)},
            "hourly": hours,
        },
    }
    return JSONBody(body)


@router.get("/api/usage/metrics/aggregates", response_model=SeedAggregatesOk)
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
    only = provider.lower() if provider is not None else None
    rows: list[SeedPeriodRow] = []

    def row(label: str, a: Sums) -> SeedPeriodRow:
        return {
            "period": _period_start(label),
            "total_requests": a.requests,
            "total_cost_usd": _usd(a),
            "total_tokens": a.input_tokens + a.output_tokens,
            **sums_json(a, money),
        }

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
            only,
            lambda h, a: row(hour_iso(h), a),
            _key("seed-period", money),
        )
        rows = [r for r in rows if r["request_count"] or r["blocked_count"]]
    else:
        buckets: dict[str, Sums] = {}
        for day, agg in per_day(scope.index, scope.tenant, window, only, project):
            if not agg.calls:
                continue
            label = day_iso(day)[: 7 if interval == "month" else 10]
            into = buckets.get(label)
            if into is None:  # a day's label is its own: the index's sums are only read
                buckets[label] = agg if interval == "day" else agg.copy()
            else:
                into.merge(agg, histogram=False)
        rows = [row(k, a) for k, a in buckets.items()]
    body: SeedAggregatesOk = {
        "success": True,
        "data": {
            "start_date": day_iso(window.first) + "T00:00:00+00:00",
            "end_date": _now_iso().replace("Z", "+00:00"),
            "interval": interval,
            "provider": provider,
            "aggregates": rows,
            "days": days,
            "project": project,
            "currency": money.currency,
        },
    }
    return JSONBody(body)


@router.get("/api/usage/costs/by-provider", response_model=SeedByProviderOk)
async def costs_by_provider(
    scope: TenantScope, money: Currency, days: DaysParam = 30, project: ProjectParam = None
) -> JSONBody:
    per = by_provider_in(scope.index, scope.tenant, Window.last_days(days), project=project)
    total = sum_all(per.values())
    rows = sorted(per.items(), key=lambda kv: kv[1].cost, reverse=True)
    body: SeedByProviderOk = {
        "success": True,
        "data": {
            "total_cost_usd": _usd(total),
            "by_provider": {p: _usd(a) for p, a in rows},
            "period_days": days,
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
        },
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


@router.get("/api/usage/performance/latency", response_model=SeedLatencyOk)
async def latency(scope: TenantScope, days: DaysParam = 7, provider: ProviderParam = None) -> JSONBody:
    """Latency percentiles (from a 5 %-wide histogram) and success rate, overall and per provider."""
    only = provider.lower() if provider is not None else None
    per = by_provider_in(scope.index, scope.tenant, Window.last_days(days), only, histogram=True)
    figures = _latency(sum_all(per.values(), histogram=True))
    body: SeedLatencyOk = {
        "success": True,
        "data": {
            "latency_percentiles_ms": {
                "p50": round(figures["p50_ms"] or 0),
                "p95": round(figures["p95_ms"] or 0),
                "p99": round(figures["p99_ms"] or 0),
            },
            "period_days": days,
            "provider": provider,
            "days": days,
            **figures,
            "success_rate_percent": figures["success_rate_percent"] or 0.0,
            "by_provider": {p: _latency(a) for p, a in sorted(per.items())},
        },
    }
    return JSONBody(body)
