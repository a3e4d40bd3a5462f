"""Analytics: top users, provider comparison, token efficiency, sessions (currency selectable)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Query

from costspan.processor.api._common import (
    DaysParam,
    JSONBody,
    Money,
    Window,
    by_call_in,
    by_provider_in,
    ratio,
    sum_all,
    sums_json,
)
from costspan.processor.api._deps import Currency, TenantScope
from costspan.processor.api._names import sessions_in, top_names
from costspan.processor.api._schemas_views import ProvidersOut, SessionsOut, TokenEfficiencyOut, TopUsersOut
from costspan.processor.store._sums import Sums

__all__ = ["router"]

router = APIRouter(prefix="/api/analytics", tags=["analytics"], default_response_class=JSONBody)

_ZERO = Decimal(0)
LimitParam = Annotated[int, Query(ge=1, le=1000)]


def _per_1k(a: Sums, money: Money) -> str | None:
    """Cost per 1k tokens of the priced calls (an unpriced call's tokens are not free: left out)."""
    priced_tokens = a.tokens - a.unpriced_tokens
    return money.fmt(a.cost * 1000 / priced_tokens) if priced_tokens > 0 and a.priced_cost is not None else None


@router.get("/top-users", response_model=TopUsersOut)
async def top_users(scope: TenantScope, money: Currency, days: DaysParam = 30, limit: LimitParam = 10) -> JSONBody:
    rows = top_names(scope.index, scope.tenant, Window.last_days(days), "user", limit)
    body: TopUsersOut = {
        "days": days,
        "currency": money.currency,
        "users": [{"user_id": u, **sums_json(a, money)} for u, a in rows],
    }
    return JSONBody(body)


@router.get("/providers", response_model=ProvidersOut)
async def providers(scope: TenantScope, money: Currency, days: DaysParam = 30) -> JSONBody:
    """Providers side by side: cost, requests, cost per request and per 1k tokens, latency, error rate."""
    per = by_provider_in(scope.index, scope.tenant, Window.last_days(days), histogram=True)
    body: ProvidersOut = {
        "days": days,
        "currency": money.currency,
        "providers": [
            {
                "provider": p,
                **sums_json(a, money),
                "avg_cost_per_request": money.fmt(a.cost / (a.requests - a.unpriced))
                if a.requests > a.unpriced
                else None,
                "cost_per_1k_tokens": _per_1k(a, money),
                "p95_latency_ms": a.quantile_ms(0.95),
                "error_rate_percent": ratio(a.errors, a.requests),
            }
            for p, a in sorted(per.items(), key=lambda kv: kv[1].cost, reverse=True)
        ],
    }
    return JSONBody(body)


@router.get("/token-efficiency", response_model=TokenEfficiencyOut)
async def token_efficiency(scope: TenantScope, money: Currency, days: DaysParam = 30) -> JSONBody:
    """Per model: cost per 1k tokens, output/input ratio, share of input read from cache."""
    by_call = by_call_in(scope.index, scope.tenant, Window.last_days(days))
    per: dict[tuple[str, str], Sums] = {}
    for (p, m, _), a in by_call.items():
        per.setdefault((p, m), Sums()).merge(a)
    total = sum_all(per.values(), histogram=True)
    body: TokenEfficiencyOut = {
        "days": days,
        "currency": money.currency,
        "overall": {
            "cost_per_1k_tokens": _per_1k(total, money),
            "output_input_ratio": round(total.output_tokens / total.input_tokens, 4) if total.input_tokens else None,
        },
        "models": [
            {
                "provider": p,
                "model": m,
                "request_count": a.requests,
                "input_tokens": a.input_tokens,
                "output_tokens": a.output_tokens,
                "cost_per_1k_tokens": _per_1k(a, money),
                "output_input_ratio": round(a.output_tokens / a.input_tokens, 4) if a.input_tokens else None,
                "cache_read_percent": ratio(a.cache_read_tokens, a.input_tokens),
                "avg_tokens_per_request": round(a.tokens / a.requests, 1) if a.requests else None,
                "unpriced_calls": a.unpriced,
                "unpriced_tokens": a.unpriced_tokens,
            }
            for (p, m), a in sorted(per.items())
        ],
    }
    return JSONBody(body)


@router.get("/sessions", response_model=SessionsOut)
async def sessions(scope: TenantScope, money: Currency, days: DaysParam = 7, limit: LimitParam = 10) -> JSONBody:
    """Sessions (conversations): how many, their average cost and calls, the most expensive ones."""
    found = sessions_in(scope.index, scope.tenant, Window.last_days(days), limit)
    body: SessionsOut = {
        "days": days,
        "currency": money.currency,
        "session_count": found.count,
        "avg_cost_per_session": money.fmt(found.cost / found.count) if found.count else None,
        "avg_calls_per_session": round(found.calls / found.count, 2) if found.count else None,
        "top_sessions": [{"session_id": name, "tenant_id": t, **sums_json(agg, money)} for t, name, agg in found.top],
    }
    return JSONBody(body)
