"""Unpriced calls never look free: every aggregate route counts them, and a group none of whose calls
could be priced shows cost null, never "0.00000000". Spans go through the real OTLP exporter."""

from __future__ import annotations

from typing import Any

import pytest

from costspan.pricing import Pricer, Usage
from tests.component.api.conftest import Api

KNOWN = {"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini"}
UNKNOWN_OF_KNOWN_PROVIDER = {"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-not-in-any-catalog"}
UNKNOWN = {"gen_ai.provider.name": "acmeai", "gen_ai.request.model": "acme-llm-9000"}
ATTRIBUTION = {
    "gen_ai.operation.name": "chat",
    "gen_ai.usage.input_tokens": 1000,
    "gen_ai.usage.output_tokens": 100,
    "costspan.tenant.id": "acme",
    "costspan.user.id": "u-1",
    "costspan.workflow.id": "wf-1",
    "costspan.project.id": "p-1",
    "session.id": "s-1",
}
FAKE_ZERO = "0.00000000"


@pytest.fixture
def mix(api: Api, pricer: Pricer) -> str:
    """One priced call, one unpriced call of the same provider, two of a provider no catalog knows;
    returns the priced call's cost as the API writes it."""
    api.export_spans(
        api.keys["ingest"],
        [{**ATTRIBUTION, **m} for m in (KNOWN, UNKNOWN_OF_KNOWN_PROVIDER, UNKNOWN, UNKNOWN)],
    )
    api.index.catch_up()
    records = api.store.read_records()
    assert sorted(r.cost_status for r in records) == ["priced", "unpriced", "unpriced", "unpriced"]
    assert {r.outcome for r in records if r.cost_status == "unpriced"} == {"degraded"}
    total = pricer.price_call("gpt-4o-mini", Usage(input_tokens=1000, output_tokens=100), provider="openai").total
    assert total is not None and total > 0
    return format(total.quantize(total.__class__("0.00000001")), "f")


def _no_fake_zero(body: Any, path: str) -> None:
    """No money figure of a group of calls is a made-up zero (every group here has calls; the compute
    resources' cost, of which there is none, is a true 0)."""
    if isinstance(body, dict):
        for key, value in body.items():
            if key in ("compute_cost", "compute_cost_exact", "compute"):
                continue
            assert value != FAKE_ZERO, f"{path}.{key} is a zero for calls that have no price"
            _no_fake_zero(value, f"{path}.{key}")
    elif isinstance(body, list):
        for i, value in enumerate(body):
            _no_fake_zero(value, f"{path}[{i}]")


def _unpriced_figures(row: dict[str, Any]) -> tuple[int, int, int, Any]:
    return row["request_count"], row["unpriced_calls"], row["unpriced_tokens"], row["cost"]


def test_every_aggregate_route_counts_unpriced_calls_and_shows_no_fake_zero(api: Api, mix: str) -> None:
    def get(path: str, **params: Any) -> Any:
        r = api.get("acme", path, **params)
        assert r.status_code == 200, (path, r.text)
        body = r.json()
        _no_fake_zero(body, path)
        return body

    usage = get("/v1/usage", scope="tenant")
    assert (usage["daily_cost_exact"], usage["request_count"], usage["unpriced_calls"]) == (mix, 4, 3)
    assert usage["daily_cost"] == float(mix)  # QLens' number: the priced calls' cost
    models = usage["model_usage"]
    assert (models["acme-llm-9000"]["cost_exact"], models["acme-llm-9000"]["unpriced_calls"]) == (None, 2)
    assert (models["gpt-4o-mini"]["cost_exact"], models["gpt-4o-mini"]["unpriced_calls"]) == (mix, 0)
    assert get("/v1/usage", scope="summary")["unpriced_calls"] == 3

    realtime = get("/api/usage/metrics/realtime")["data"]
    assert _unpriced_figures(realtime["totals"]) == (4, 3, 3300, mix)
    assert _unpriced_figures(realtime["by_provider"]["acmeai"]) == (2, 2, 2200, None)
    assert _unpriced_figures(realtime["by_provider"]["openai"]) == (2, 1, 1100, mix)
    assert [_unpriced_figures(h) for h in realtime["hourly"]] == [(4, 3, 3300, mix)]

    for interval in ("hour", "day", "month"):
        (row,) = get("/api/usage/metrics/aggregates", days=1, interval=interval)["data"]["aggregates"]
        assert _unpriced_figures(row) == (4, 3, 3300, mix), interval
    (row,) = get("/api/usage/metrics/aggregates", days=1, provider="acmeai")["data"]["aggregates"]
    assert _unpriced_figures(row) == (2, 2, 2200, None)

    by_provider = get("/api/usage/costs/by-provider", days=1)["data"]
    assert (by_provider["total_cost"], by_provider["unpriced_calls"]) == (mix, 3)
    rows = {p["provider"]: p for p in by_provider["providers"]}
    assert _unpriced_figures(rows["acmeai"]) == (2, 2, 2200, None)
    assert _unpriced_figures(rows["openai"]) == (2, 1, 1100, mix)

    top = {(o["provider"], o["model"]): o for o in get("/api/usage/operations/top", days=1)["operations"]}
    assert _unpriced_figures(top["acmeai", "acme-llm-9000"]) == (2, 2, 2200, None)
    assert _unpriced_figures(top["openai", "gpt-not-in-any-catalog"]) == (1, 1, 1100, None)
    assert _unpriced_figures(top["openai", "gpt-4o-mini"]) == (1, 0, 0, mix)

    (day,) = get("/api/usage/costs/trend", days=1)["daily"].values()
    assert day == {"acmeai": None, "openai": mix}

    v2 = get("/api/v2/costs", period_days=1)["data"]
    assert (v2["total_requests"], v2["unpriced_calls"], v2["total_cost_usd_exact"]) == (4, 3, mix)
    metrics = get("/api/v2/metrics")["data"]
    assert metrics["costs"]["unpriced_requests_30d"] == 3
    assert metrics["costs"]["by_provider_30d"] == {"acmeai": None, "openai": mix}
    assert metrics["costs"]["average_cost_per_request"] == mix  # of the one priced call, not spread over four

    costs = get("/api/workspaces/acme/costs", period="day")
    assert (costs["llm_cost_exact"], costs["request_count"], costs["unpriced_calls"]) == (mix, 4, 3)
    models = {m["model"]: m for m in costs["by_model"]}
    assert (models["acme-llm-9000"]["cost"], models["acme-llm-9000"]["unpriced_calls"]) == (None, 2)
    assert costs["by_project"]["p-1"] == {
        "cost": mix,
        "request_count": 4,
        "tokens": 4400,
        "unpriced_calls": 3,
        "blocked_count": 0,
    }
    stats = get("/api/workspaces/acme/cost-stats", days=1)
    assert (stats["total_cost"], stats["unpriced_calls"], stats["unpriced_count"]) == (mix, 3, 3)
    assert get("/api/executions/wf-1/costs")["unpriced_calls"] == 3

    (user,) = get("/api/analytics/top-users", days=1)["users"]
    assert _unpriced_figures(user) == (4, 3, 3300, mix)
    providers = {p["provider"]: p for p in get("/api/analytics/providers", days=1)["providers"]}
    assert _unpriced_figures(providers["acmeai"]) == (2, 2, 2200, None)
    assert providers["acmeai"]["cost_per_1k_tokens"] is None and providers["acmeai"]["avg_cost_per_request"] is None
    efficiency = {m["model"]: m for m in get("/api/analytics/token-efficiency", days=1)["models"]}
    assert (efficiency["acme-llm-9000"]["unpriced_calls"], efficiency["acme-llm-9000"]["cost_per_1k_tokens"]) == (
        2,
        None,
    )
    (session,) = get("/api/analytics/sessions", days=1)["top_sessions"]
    assert _unpriced_figures(session) == (4, 3, 3300, mix)
