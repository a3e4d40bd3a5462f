"""The data the route tests ingest: two tenants through OTLP and through ``POST /api/usage/calls``.

Every id of tenant globex contains "globex", so a response that leaks it is easy to spot.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from costspan.pricing import Pricer, Usage
from tests.component.api.conftest import Api

DAY = 86400

ACME_SPANS: list[dict[str, Any]] = [
    {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 200,
        "gen_ai.usage.cache_read.input_tokens": 100,
        "costspan.tenant.id": "acme",
        "costspan.user.id": "acme-user-1",
        "costspan.workflow.id": "acme-wf-1",
        "session.id": "acme-session-1",
    }
] * 2
GLOBEX_SPANS: list[dict[str, Any]] = [
    {
        "gen_ai.system": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4-5",
        "gen_ai.usage.input_tokens": 3000,
        "gen_ai.usage.output_tokens": 400,
        "costspan.tenant.id": "globex",
        "costspan.user.id": "globex-user-1",
        "costspan.workflow.id": "globex-wf-1",
        "session.id": "globex-session-1",
    }
]


def two_days_ago_noon() -> datetime:
    t = int(time.time())
    return datetime.fromtimestamp(t - t % DAY - 2 * DAY + DAY // 2, UTC)


def ingest(api: Api) -> None:
    api.export_spans(api.keys["ingest"], ACME_SPANS + GLOBEX_SPANS)
    at = two_days_ago_noon().isoformat()
    for i, ok in enumerate((True, True, False)):
        r = api.post_call(
            "ingest",
            tenant_id="acme",
            provider="openai",
            model="gpt-4o-mini",
            prompt_tokens=2000,
            completion_tokens=500,
            latency_ms=250 * (i + 1),
            user_id="acme-user-2",
            workflow_id="acme-wf-2",
            session_id="acme-session-2",
            success=ok,
            error_message="" if ok else "rate_limited",
            timestamp=at,
            call_id=f"acme-call-{i}",
        )
        assert r.status_code == 201, r.text
    r = api.post_call(
        "ingest",
        tenant_id="globex",
        provider="openai",
        model="gpt-4o",
        prompt_tokens=10,
        completion_tokens=10,
        user_id="globex-user-2",
        timestamp=at,
        call_id="globex-call-1",
    )
    assert r.status_code == 201, r.text
    api.index.catch_up()
    assert api.index.records == 7


def cost(pricer: Pricer, model: str, provider: str, n: int = 1, **usage: int) -> Decimal:
    total = pricer.price_call(model, Usage(**usage), provider=provider).total
    assert total is not None
    return total * n


def acme_today(pricer: Pricer) -> Decimal:
    return cost(pricer, "gpt-4o", "openai", 2, input_tokens=1000, output_tokens=200, cache_read_tokens=100)


def acme_two_days_ago(pricer: Pricer) -> Decimal:
    return cost(pricer, "gpt-4o-mini", "openai", 3, input_tokens=2000, output_tokens=500)


def money(d: Decimal) -> str:
    return format(d.quantize(Decimal("0.00000001")), "f")
