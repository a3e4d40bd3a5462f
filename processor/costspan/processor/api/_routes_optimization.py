"""``GET /api/workspaces/{id}/cost-optimization``: cheaper models and prompt caching, priced by the catalog.

Answered as the Phase 17 seed did: a bare JSON list of recommendations, each with the seed's
``type``, ``priority``, ``title``, ``description``, ``current_model``, ``recommended_model``,
``estimated_savings`` (a number) and ``impact``, and costspan's exact figures beside them.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final, Literal

from fastapi import APIRouter, Query, Request
from typing_extensions import TypedDict

from costspan.pricing import InvalidUsageError, Pricer, Usage
from costspan.pricing._match import PROVIDER_ALIASES
from costspan.processor.api._common import JSONBody, Money, Window, by_call_in, pricer_of
from costspan.processor.api._deps import Currency, WorkspaceScope
from costspan.processor.api._schemas import DecimalStr, Percent
from costspan.processor.store._sums import Sums

__all__ = ["CACHEABLE_SHARE", "CHEAPER_MODELS", "Recommendation", "router"]

router = APIRouter(tags=["workspaces"], default_response_class=JSONBody)

#: Per catalog provider, (a word of the model id, the cheaper model of that family on the same
#: provider); the first word found in the model id wins, ``""`` matches any. Azure OpenAI, Bedrock
#: and Vertex keep the call on the cloud it runs on.
CHEAPER_MODELS: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "openai": (("", "gpt-4o-mini"),),
    "azure": (("", "gpt-4o-mini"),),
    "anthropic": (("", "claude-haiku-4-5"),),
    "google": (("claude", "claude-haiku-4-5"), ("", "gemini-2.5-flash")),
    "aws": (
        ("global.anthropic", "global.anthropic.claude-haiku-4-5-20251001-v1:0"),
        ("claude", "anthropic.claude-haiku-4-5-20251001-v1:0"),
        ("llama", "meta.llama3-1-8b-instruct-v1:0"),
        ("", "amazon.nova-lite-v1:0"),
    ),
}
#: Share of input tokens a caching recommendation assumes could be served from cache.
CACHEABLE_SHARE: Final = Decimal("0.5")


class Recommendation(TypedDict, total=False):
    type: Literal["model_downgrade", "prompt_caching"]
    priority: Literal["high", "medium", "low"]
    title: str
    description: str
    current_model: str
    recommended_model: str
    estimated_savings: float
    impact: str
    provider: str
    model: str
    suggested_model: str
    current_monthly_cost: DecimalStr
    estimated_monthly_savings: DecimalStr
    current_cache_read_share_percent: Percent
    reason: str


def cheaper_model(provider: str, model: str) -> str | None:
    """The cheaper model of ``model``'s family on ``provider`` (any spelling of the provider), if any."""
    family = CHEAPER_MODELS.get(PROVIDER_ALIASES.get(provider.lower(), provider.lower()), ())
    name = model.lower()
    for word, small in family:
        if word in name:
            return None if small == name else small
    return None


def _priority(saving: Decimal, current: Decimal) -> Literal["high", "medium", "low"]:
    share = saving / current if current else Decimal(0)
    return "high" if share >= Decimal("0.5") else "medium" if share >= Decimal("0.2") else "low"


def _impact(amount: Decimal, money: Money) -> str:
    shown = f"{amount:.2f}"
    return f"${shown}/month" if money.currency == "USD" else f"{shown} {money.currency}/month"


def _advice(pricer: Pricer, money: Money, provider: str, model: str, a: Sums) -> list[Recommendation]:
    priced = a.requests - a.unpriced
    if not priced or a.cost <= 0:
        return []
    try:
        usage = Usage(
            input_tokens=a.input_tokens // a.requests,
            output_tokens=a.output_tokens // a.requests,
            cache_read_tokens=a.cache_read_tokens // a.requests,
        )
    except InvalidUsageError:  # an average no single call could have (stored unpriced): no advice
        return []
    out: list[Recommendation] = []
    current = a.cost
    small = cheaper_model(provider, model)
    if small is not None:
        alt = pricer.price_call(small, usage, provider=provider)
        if alt.total is not None and alt.total * priced < current:
            saving = current - alt.total * priced
            pct = round(100 * saving / current)
            out.append(
                {
                    "type": "model_downgrade",
                    "priority": _priority(saving, current),
                    "title": f"Use {small} instead of {model}",
                    "description": f"Calls to {model} average {usage.input_tokens} input and "
                    f"{usage.output_tokens} output tokens; {small} would cost {pct}% less for them.",
                    "current_model": model,
                    "recommended_model": small,
                    "estimated_savings": float(money.amount(saving)),
                    "impact": _impact(money.amount(saving), money),
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
            out.append(
                {
                    "type": "prompt_caching",
                    "priority": _priority(saving, current),
                    "title": f"Cache the repeated prompt prefix of {model}",
                    "description": f"{round(cached_share * 100, 2)}% of {model}'s input is read from cache; "
                    f"reading {int(CACHEABLE_SHARE * 100)}% of it from cache would save the amount shown.",
                    "current_model": model,
                    "estimated_savings": float(money.amount(saving)),
                    "impact": _impact(money.amount(saving), money),
                    "provider": provider,
                    "model": model,
                    "current_cache_read_share_percent": round(cached_share * 100, 2),
                    "estimated_monthly_savings": money.fmt(saving),
                    "reason": f"reading {int(CACHEABLE_SHARE * 100)} % of input from cache",
                }
            )
    return out


@router.get("/api/workspaces/{workspace_id}/cost-optimization", response_model=list[Recommendation])
async def workspace_optimization(
    request: Request,
    scope: WorkspaceScope,
    money: Currency,
    period: Literal["day", "week", "month"] = Query("month", description="accepted; savings are per month"),
) -> JSONBody:
    """Model-downgrade and prompt-caching recommendations, savings priced from the catalog.

    From the last 30 days per (provider, model): the average call is re-priced on the family's
    cheaper model on the same provider (:data:`CHEAPER_MODELS`: OpenAI, Azure OpenAI, Anthropic,
    Google and Vertex, Bedrock) and with :data:`CACHEABLE_SHARE` of its input read from cache;
    monthly savings = (current − alternative) × the calls of 30 days. Largest savings first.
    """
    pricer = pricer_of(request)
    per_model: dict[tuple[str, str], Sums] = {}
    for (p, m, _), a in by_call_in(scope.index, scope.one_tenant, Window.last_days(30)).items():
        per_model.setdefault((p, m), Sums()).merge(a, histogram=False)
    recs = [r for (p, m), a in sorted(per_model.items()) for r in _advice(pricer, money, p, m, a)]
    recs.sort(key=lambda r: Decimal(r["estimated_monthly_savings"]), reverse=True)
    return JSONBody(recs)
