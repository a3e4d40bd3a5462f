"""Each route of the usage API over data ingested through OTLP and ``POST /api/usage/calls``."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, timedelta
from decimal import Decimal

import pytest

from costspan.pricing import Pricer
from tests.component.api.conftest import Api
from tests.component.api.seed import acme_today, acme_two_days_ago, cost, ingest, money, two_days_ago_noon


@pytest.fixture
def seeded(api: Api) -> Api:
    ingest(api)
    return api


def test_v1_usage_tenant(seeded: Api, pricer: Pricer) -> None:
    r = seeded.get("acme", "/v1/usage", scope="tenant", period="daily")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tenant_id"] == "acme"
    assert body["daily_cost_exact"] == money(acme_today(pricer))
    assert body["daily_cost"] == float(acme_today(pricer))
    assert body["request_count"] == 2
    assert set(body["model_usage"]) == {"gpt-4o"}
    assert body["model_usage"]["gpt-4o"]["tokens_used"] == 2400
    assert body["model_usage"]["gpt-4o"]["cost_exact"] == money(acme_today(pricer))
    assert body["budget_limit"] is None
    monthly = seeded.get("acme", "/v1/usage", scope="tenant", period="monthly").json()
    if two_days_ago_noon().month == date.today().month:
        assert monthly["monthly_cost_exact"] == money(acme_today(pricer) + acme_two_days_ago(pricer))
        assert monthly["request_count"] == 5
        assert set(monthly["model_usage"]) == {"gpt-4o", "gpt-4o-mini"}


def test_v1_usage_summary_and_global(seeded: Api, pricer: Pricer) -> None:
    summary = seeded.get("acme", "/v1/usage", scope="summary").json()
    assert summary["request_count"] == 2 and summary["active_tenants"] == 1 and summary["status"] == "healthy"
    glob = seeded.get("admin", "/v1/usage", scope="global").json()
    globex = cost(pricer, "claude-sonnet-4-5", "anthropic", input_tokens=3000, output_tokens=400)
    assert glob["total_cost_today_exact"] == money(acme_today(pricer) + globex)
    assert glob["request_count"] == 3
    assert glob["active_tenants"] == 2 and glob["active_services"] == 1


@pytest.mark.parametrize(
    ("params", "status", "fragment"),
    [
        ({"scope": "everything"}, 422, "scope"),
        ({"scope": "tenant", "currency": "XXX"}, 400, "unknown currency"),
        ({"scope": "tenant", "currency": "euro"}, 422, "currency"),
        ({"scope": "tenant", "period": "yearly"}, 422, "period"),
    ],
)
def test_v1_usage_bad_input(seeded: Api, params: dict[str, str], status: int, fragment: str) -> None:
    r = seeded.get("acme", "/v1/usage", **params)
    assert r.status_code == status, r.text
    assert fragment in r.text


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/usage/metrics/aggregates", {"days": "-1"}),
        ("/api/usage/metrics/aggregates", {"days": "0"}),
        ("/api/usage/metrics/aggregates", {"interval": "week"}),
        ("/api/usage/costs/by-provider", {"days": "abc"}),
        ("/api/usage/performance/latency", {"days": "-3"}),
        ("/api/v2/costs", {"period_days": "-1"}),
        ("/api/v2/costs/estimate", {"complexity": "huge"}),
        ("/api/usage/export", {"format": "xml"}),
    ],
)
def test_bad_parameters_are_422(seeded: Api, path: str, params: dict[str, str]) -> None:
    r = seeded.get("admin", path, **params)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["loc"][-1] in params


def test_export_from_after_to_is_400(seeded: Api) -> None:
    r = seeded.get("admin", "/api/usage/export", **{"from": "2026-02-01", "to": "2026-01-01"})
    assert r.status_code == 400 and "after" in r.json()["detail"]


def test_v2_costs(seeded: Api, pricer: Pricer) -> None:
    r = seeded.get("acme", "/api/v2/costs", period_days=7).json()
    assert r["success"] is True
    data = r["data"]
    total = acme_today(pricer) + acme_two_days_ago(pricer)
    assert data["tenant_id"] == "acme" and data["period_days"] == 7 and data["total_requests"] == 5
    assert data["total_cost_usd_exact"] == money(total) and data["total_cost_usd"] == float(total)
    assert Decimal(data["average_daily_cost_exact"]) == (total / 7).quantize(Decimal("0.00000001"))
    assert sorted(data["daily_breakdown"]) == sorted({two_days_ago_noon().date().isoformat(), date.today().isoformat()})
    wf = seeded.get("acme", "/api/v2/costs", workflow_id="acme-wf-2", period_days=7).json()["data"]
    assert wf["total_requests"] == 3 and wf["total_cost_usd_exact"] == money(acme_two_days_ago(pricer))
    eur = seeded.get("acme", "/api/v2/costs", period_days=7, currency="EUR").json()["data"]
    assert eur["currency"] == "EUR" and Decimal(eur["total_cost"]) != total


def test_v2_estimate_defaults_then_ledger(seeded: Api) -> None:
    data = seeded.get("acme", "/api/v2/costs/estimate", complexity="simple", tech_stack="python").json()["data"]
    assert data["calibration"]["source"] == "defaults"
    assert data["estimated_input_tokens"] == 3000 and data["estimated_output_tokens"] == 800
    assert data["recommended_model"] in data["model_estimates"]
    assert set(data["model_estimates"]["gpt-4o"]) == {
        "provider",
        "estimated_cost_usd",
        "estimated_cost_usd_exact",
        "estimated_cost",
        "estimated_tokens",
    }
    for i in range(50):
        seeded.post_call(
            "ingest",
            tenant_id="acme",
            provider="openai",
            model="gpt-4o",
            prompt_tokens=6000,
            completion_tokens=1600,
            call_id=f"cal-{i}",
        )
    data = seeded.get("acme", "/api/v2/costs/estimate", complexity="moderate").json()["data"]
    assert data["calibration"]["source"] == "ledger"
    assert data["estimated_input_tokens"] > 4 * 3000  # the history's calls are larger than the defaults


def test_v2_metrics(seeded: Api, pricer: Pricer) -> None:
    data = seeded.get("acme", "/api/v2/metrics").json()["data"]
    assert data["costs"]["today"] == money(acme_today(pricer))
    assert data["costs"]["last_30_days"] == money(acme_today(pricer) + acme_two_days_ago(pricer))
    assert data["requests"]["errors_30d"] == 1


def test_realtime_and_aggregates(seeded: Api, pricer: Pricer) -> None:
    rt = seeded.get("acme", "/api/usage/metrics/realtime").json()["data"]
    assert rt["totals"]["request_count"] == 2 and rt["totals"]["cost"] == money(acme_today(pricer))
    agg = seeded.get("acme", "/api/usage/metrics/aggregates", days=7, interval="day").json()["data"]["aggregates"]
    assert [row["request_count"] for row in agg] == [3, 2]
    assert agg[0]["error_count"] == 1
    hourly = seeded.get("acme", "/api/usage/metrics/aggregates", days=3, interval="hour").json()["data"]["aggregates"]
    assert sum(row["request_count"] for row in hourly) == 5
    none = seeded.get("acme", "/api/usage/metrics/aggregates", days=7, provider="anthropic").json()["data"]
    none = none["aggregates"]
    assert none == []


def test_by_provider_latency_errors_top(seeded: Api, pricer: Pricer) -> None:
    bp = seeded.get("admin", "/api/usage/costs/by-provider", days=7).json()["data"]
    assert [p["provider"] for p in bp["providers"]] == ["anthropic", "openai"] or [
        p["provider"] for p in bp["providers"]
    ] == ["openai", "anthropic"]
    assert sum(p["request_count"] for p in bp["providers"]) == 7
    lat = seeded.get("acme", "/api/usage/performance/latency", days=7, provider="openai").json()["data"]
    assert lat["request_count"] == 5
    assert lat["success_rate_percent"] == 80.0
    assert lat["p99_ms"] is not None and 700 <= lat["p99_ms"] <= 800  # the 750 ms call, 5 % buckets
    err = seeded.get("acme", "/api/usage/errors/by-provider", days=7).json()["providers"]
    assert err == [{"provider": "openai", "request_count": 5, "error_count": 1, "error_rate_percent": 20.0}]
    top = seeded.get("acme", "/api/usage/operations/top", days=7, limit=1).json()["operations"]
    assert len(top) == 1
    trend = seeded.get("acme", "/api/usage/costs/trend", days=7).json()["daily"]
    assert trend[date.today().isoformat()] == {"openai": money(acme_today(pricer))}


def test_post_call_dedupes_by_call_id(seeded: Api) -> None:
    r = seeded.post_call(
        "ingest",
        tenant_id="acme",
        provider="openai",
        model="gpt-4o-mini",
        prompt_tokens=1,
        completion_tokens=1,
        call_id="acme-call-0",
        timestamp=two_days_ago_noon().isoformat(),
    )
    assert r.status_code == 201 and r.json()["duplicate"] is True
    bad = seeded.post_call(
        "ingest", tenant_id="acme", provider="openai", model="gpt-4o", prompt_tokens=-1, completion_tokens=1
    )
    assert bad.status_code == 422
    unpriced = seeded.post_call(
        "ingest", tenant_id="acme", provider="openai", model="no-such-model", prompt_tokens=1, completion_tokens=1
    )
    assert unpriced.json()["cost_status"] == "unpriced" and unpriced.json()["cost_usd"] is None


def test_export_csv_and_json(seeded: Api) -> None:
    today = date.today()
    params = {"from": (today - timedelta(days=3)).isoformat(), "to": today.isoformat()}
    r = seeded.get("acme", "/api/usage/export", format="csv", **params)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 5 and {row["tenant_id"] for row in rows} == {"acme"}
    j = seeded.get("admin", "/api/usage/export", format="json", user="globex-user-1", **params)
    records = json.loads(j.text)
    assert [(x["tenant_id"], x["model"]) for x in records] == [("globex", "claude-sonnet-4-5")]
    assert Decimal(records[0]["cost_usd"]) > 0


def test_workspaces_executions_resources(seeded: Api, pricer: Pricer) -> None:
    with seeded.client("ingest") as c:
        r = c.post(
            "/api/resources/usage",
            json={
                "workspace_id": "acme",
                "execution_id": "acme-wf-2",
                "resource_type": "cpu",
                "amount": "2",
                "duration_seconds": "1800",
            },
        )
    assert r.status_code == 201, r.text
    cpu = pricer.price_resource("cpu_core_hour", 1).total
    assert r.json()["cost_usd_exact"] == format(cpu, "f") and r.json()["cost_usd"] == float(cpu)
    ws = seeded.get("acme", "/api/workspaces/acme/costs", period="week").json()
    assert ws["compute_cost_exact"] == money(cpu) and ws["compute_cost"] == float(cpu)
    assert ws["llm_cost_exact"] == money(acme_today(pricer) + acme_two_days_ago(pricer))
    assert {m["model"] for m in ws["by_model"]} == {"gpt-4o", "gpt-4o-mini"}
    assert [(r["resource_type"], r["usage"], r["count"]) for r in ws["by_resource"]] == [("cpu", 2.0, 1)]
    assert len(ws["daily_trend"]) == 7 and isinstance(ws["forecast_eom"], float)
    ex = seeded.get("acme", "/api/executions/acme-wf-2/costs").json()
    assert ex["request_count"] == 3 and ex["compute_cost_exact"] == money(cpu)
    assert seeded.get("acme", "/api/executions/nothing-here/costs").status_code == 404
    fc = seeded.get("acme", "/api/workspaces/acme/cost-forecast").json()
    assert fc["confidence"] in ("low", "medium", "high") and fc["days_of_data"] == 3
    stats = seeded.get("acme", "/api/workspaces/acme/cost-stats").json()
    assert stats["request_count"] == 5 and stats["error_count"] == 1


def test_cost_optimization_recommends_downgrade_and_caching(seeded: Api) -> None:
    for i in range(20):
        seeded.post_call(
            "ingest",
            tenant_id="acme",
            provider="openai",
            model="gpt-4o",
            prompt_tokens=8000,
            completion_tokens=500,
            call_id=f"opt-{i}",
        )
    recs = seeded.get("acme", "/api/workspaces/acme/cost-optimization").json()
    kinds = {(r["type"], r["model"]) for r in recs}
    assert ("model_downgrade", "gpt-4o") in kinds and ("prompt_caching", "gpt-4o") in kinds
    assert all(r["estimated_savings"] > 0 and Decimal(r["estimated_monthly_savings"]) > 0 for r in recs)


def test_analytics(seeded: Api) -> None:
    users = seeded.get("acme", "/api/analytics/top-users").json()["users"]
    assert [u["user_id"] for u in users] == ["acme-user-1", "acme-user-2"] or len(users) == 2
    prov = seeded.get("acme", "/api/analytics/providers", currency="EUR").json()
    assert prov["currency"] == "EUR" and prov["providers"][0]["provider"] == "openai"
    eff = seeded.get("acme", "/api/analytics/token-efficiency").json()
    assert eff["overall"]["output_input_ratio"] == round((400 + 1500) / (2000 + 6000), 4)
    sessions = seeded.get("acme", "/api/analytics/sessions").json()
    assert sessions["session_count"] == 2


def test_docs_and_openapi(api: Api) -> None:
    spec = api.get(None, "/openapi.json").json()
    assert "/v1/usage" in spec["paths"] and "/api/usage/export" in spec["paths"]
    assert "swagger" in api.get(None, "/docs").text.lower()
