"""The UsageTracker seed's documented requests, replayed against costspan: same paths, parameters,
envelope (``{"success": true, "data": {...}}``), field names and JSON types (money as numbers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from costspan.pricing import Pricer, Usage
from tests.component.api.conftest import Api

#: The calls of the seed's integration guide, as its ``log_api_call`` sent them (HTTP here).
CALLS: list[dict[str, Any]] = [
    {
        "provider": "cerebras",
        "model": "llama3.1-8b",
        "endpoint": "/chat/completions",
        "prompt_tokens": 1200,
        "completion_tokens": 300,
        "latency_ms": 120,
        "operation_type": "qualification",
        "cache_hit": False,
        "user_id": "user_123",
        "success": True,
    },
    {
        "provider": "anthropic",
        "model": "claude-3-haiku",
        "endpoint": "/v1/messages",
        "prompt_tokens": 2000,
        "completion_tokens": 500,
        "latency_ms": 900,
        "operation_type": "research",
        "success": True,
    },
    {  # a failed call, logged as the guide's "Handle Failures" does
        "provider": "anthropic",
        "model": "claude-3-haiku",
        "endpoint": "/v1/messages",
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "latency_ms": 3000,
        "operation_type": "research",
        "success": False,
        "error_message": "TimeoutError",
    },
]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cost(pricer: Pricer, provider: str, model: str, i: int, o: int) -> Decimal:
    total = pricer.price_call(model, Usage(input_tokens=i, output_tokens=o), provider=provider).total
    assert total is not None
    return total


@pytest.fixture
def tracked(api: Api) -> Api:
    for call in CALLS:
        r = api.post_call("ingest", tenant_id="acme", **call)
        assert r.status_code == 201, r.text
    r = api.post_call("ingest", tenant_id="globex", **CALLS[0])  # another tenant's, never in acme's figures
    assert r.status_code == 201
    return api


def _ok(api: Api, path: str, **params: Any) -> dict[str, Any]:
    r = api.get("acme", path, **params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and set(body) == {"success", "data"}
    data: dict[str, Any] = body["data"]
    return data


def test_realtime_metrics(tracked: Api, pricer: Pricer) -> None:
    data = _ok(tracked, "/api/usage/metrics/realtime")
    cerebras = _cost(pricer, "cerebras", "llama3.1-8b", 1200, 300)
    haiku = _cost(pricer, "anthropic", "claude-3-haiku", 2000, 500)
    assert data["total_requests"] == 3
    assert _number(data["total_cost"]) and data["total_cost"] == pytest.approx(float(cerebras + haiku))
    assert data["avg_latency_ms"] == (120 + 900 + 3000) // 3 and isinstance(data["avg_latency_ms"], int)
    assert {p: (row["requests"], row["cost_usd"]) for p, row in data["by_provider"].items()} == {
        "anthropic": (2, pytest.approx(float(haiku))),
        "cerebras": (1, pytest.approx(float(cerebras))),
    }
    assert all(_number(row["avg_latency_ms"]) for row in data["by_provider"].values())
    assert {op: row["requests"] for op, row in data["by_operation"].items()} == {"qualification": 1, "research": 2}
    assert all(_number(row["cost_usd"]) for row in data["by_operation"].values())
    assert isinstance(data["cached_at"], str)
    # costspan's exact figures beside the seed's
    assert Decimal(data["totals"]["cost"]) == (cerebras + haiku).quantize(Decimal("0.00000001"))


def test_realtime_by_operation_covers_the_same_24_hours(tracked: Api) -> None:
    old = datetime.now(UTC) - timedelta(hours=26)  # yesterday (or the day before): outside the 24 hours
    call = {**CALLS[0], "operation_type": "archive", "timestamp": old.isoformat(), "call_id": "old-archive"}
    assert tracked.post_call("ingest", tenant_id="acme", **call).status_code == 201
    data = _ok(tracked, "/api/usage/metrics/realtime")
    assert {op: row["requests"] for op, row in data["by_operation"].items()} == {"qualification": 1, "research": 2}
    assert sum(row["requests"] for row in data["by_operation"].values()) == data["total_requests"]
    everyone = tracked.get("admin", "/api/usage/metrics/realtime").json()["data"]
    assert everyone["by_operation"]["qualification"]["requests"] == 2  # acme's and globex's


@pytest.mark.parametrize("interval", ["hour", "day", "month"])
def test_aggregates(tracked: Api, pricer: Pricer, interval: str) -> None:
    data = _ok(tracked, "/api/usage/metrics/aggregates", days=7, interval=interval)
    assert (data["interval"], data["provider"]) == (interval, None)
    assert data["start_date"] < data["end_date"]
    (row,) = data["aggregates"]
    assert row["total_requests"] == 3 and row["total_tokens"] == 1200 + 300 + 2000 + 500
    assert _number(row["total_cost_usd"]) and _number(row["avg_latency_ms"])
    assert row["period"].endswith("+00:00") and "T" in row["period"]


@pytest.mark.parametrize("spelling", ["anthropic", "Anthropic", "ANTHROPIC"])
def test_provider_filter_ignores_case(tracked: Api, pricer: Pricer, spelling: str) -> None:
    data = _ok(tracked, "/api/usage/metrics/aggregates", days=7, interval="day", provider=spelling)
    assert data["provider"] == spelling
    (row,) = data["aggregates"]
    assert row["total_requests"] == 2
    assert row["total_cost_usd"] == pytest.approx(float(_cost(pricer, "anthropic", "claude-3-haiku", 2000, 500)))
    latency = _ok(tracked, "/api/usage/performance/latency", days=7, provider=spelling)
    assert latency["request_count"] == 2 and latency["success_rate_percent"] == 50.0


def test_costs_by_provider(tracked: Api, pricer: Pricer) -> None:
    data = _ok(tracked, "/api/usage/costs/by-provider", days=30)
    assert data["period_days"] == 30
    assert set(data["by_provider"]) == {"anthropic", "cerebras"}
    assert all(_number(v) for v in data["by_provider"].values())
    assert _number(data["total_cost_usd"])
    assert data["total_cost_usd"] == pytest.approx(sum(data["by_provider"].values()))


def test_latency(tracked: Api) -> None:
    data = _ok(tracked, "/api/usage/performance/latency", days=7)
    assert set(data["latency_percentiles_ms"]) == {"p50", "p95", "p99"}
    assert all(isinstance(v, int) for v in data["latency_percentiles_ms"].values())
    p = data["latency_percentiles_ms"]
    assert 0 < p["p50"] <= p["p95"] <= p["p99"] and 2800 <= p["p99"] <= 3200  # 5 %-wide buckets
    assert data["success_rate_percent"] == pytest.approx(66.67) and (data["period_days"], data["provider"]) == (7, None)


def test_no_calls_answers_zeros_in_the_seed_shape(api: Api) -> None:
    latency = _ok(api, "/api/usage/performance/latency")
    assert latency["latency_percentiles_ms"] == {"p50": 0, "p95": 0, "p99": 0}
    assert latency["success_rate_percent"] == 0.0
    by_provider = _ok(api, "/api/usage/costs/by-provider")
    assert (by_provider["total_cost_usd"], by_provider["by_provider"]) == (0.0, {})
    assert _ok(api, "/api/usage/metrics/aggregates")["aggregates"] == []
    realtime = _ok(api, "/api/usage/metrics/realtime")
    assert (realtime["total_cost"], realtime["total_requests"], realtime["avg_latency_ms"]) == (0.0, 0, 0)


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/usage/metrics/aggregates", {"interval": "week"}),
        ("/api/usage/metrics/aggregates", {"days": "seven"}),
        ("/api/usage/costs/by-provider", {"days": 0}),
        ("/api/usage/performance/latency", {"days": -1}),
        ("/api/usage/performance/latency", {"provider": ""}),
    ],
)
def test_bad_parameters_get_a_clear_error(api: Api, path: str, params: dict[str, Any]) -> None:
    r = api.get("acme", path, **params)
    assert r.status_code == 422
    body = r.json()
    assert body["success"] is False and body["detail"]


def test_a_tenant_key_sees_only_its_tenant(tracked: Api) -> None:
    globex = tracked.get("globex", "/api/usage/costs/by-provider").json()["data"]
    assert list(globex["by_provider"]) == ["cerebras"]
    assert tracked.get("globex", "/api/usage/metrics/realtime", tenant="acme").status_code == 403
