"""The Phase 17 seed's documented requests (workspace/project costs, compute usage, LLM calls,
forecast, optimization, stats), replayed against costspan: names, JSON types, bare lists."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from costspan.pricing import Pricer, Usage
from costspan.processor.api._resources import ResourceEntry, ResourceLog
from tests.component.api.conftest import Api

#: The seed's ``log_llm_call`` example, sent to the call-recording route.
LLM_CALL: dict[str, Any] = {
    "workspace_id": "acme",
    "execution_id": "exec_456",
    "provider": "openai",
    "model": "gpt-4",
    "tokens_prompt": 1000,
    "tokens_completion": 500,
    "latency_ms": 1500,
    "metadata": {"temperature": 0.7},
}
#: What the seed's ``track_sandbox_execution(cpu_cores=2.0, memory_mb=1024, duration_seconds=120)`` records.
SANDBOX: list[dict[str, Any]] = [
    {"resource_type": "cpu", "usage_value": 2.0, "unit": "cores", "duration_seconds": 120},
    {"resource_type": "memory", "usage_value": 1.0, "unit": "gb", "duration_seconds": 120},
    {"resource_type": "sandbox", "usage_value": 1, "unit": "execution", "duration_seconds": 120},
]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _post(api: Api, who: str, path: str, body: dict[str, Any]) -> Any:
    with api.client(who) as c:
        return c.post(path, json=body)


@pytest.fixture
def workspace(api: Api) -> Api:
    r = _post(api, "ingest", "/api/llm-calls", LLM_CALL)
    assert r.status_code == 201, r.text
    for usage in SANDBOX:
        r = _post(api, "ingest", "/api/resources/usage", {"workspace_id": "acme", "execution_id": "exec_456", **usage})
        assert r.status_code == 201, r.text
    return api


def _llm(pricer: Pricer) -> Decimal:
    total = pricer.price_call("gpt-4", Usage(input_tokens=1000, output_tokens=500), provider="openai").total
    assert total is not None
    return total


def _compute(pricer: Pricer) -> Decimal:
    hours = Decimal(120) / 3600
    return (
        pricer.price_resource("cpu_core_hour", 2 * hours).total
        + pricer.price_resource("memory_gb_hour", hours).total
        + pricer.price_resource("sandbox_minute", Decimal(2)).total
    )


def test_llm_call_is_recorded_under_the_seed_names(api: Api, pricer: Pricer) -> None:
    r = _post(api, "ingest", "/api/llm-calls", {**LLM_CALL, "tokens_total": 1500, "id": "call-1"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["workspace_id"], body["execution_id"], body["tokens_total"]) == ("acme", "exec_456", 1500)
    assert _number(body["cost_usd"]) and Decimal(body["cost_usd_exact"]) == _llm(pricer)
    assert body["stored"] is True
    again = _post(api, "ingest", "/api/llm-calls", {**LLM_CALL, "id": "call-1"})
    assert again.status_code == 201 and again.json()["duplicate"] is True
    (record,) = api.store.read_records()  # one call, in the same ledger as every other call
    assert (record.tenant, record.workflow, record.tokens.input, record.tokens.output) == (
        "acme",
        "exec_456",
        1000,
        500,
    )


@pytest.mark.parametrize(
    ("who", "change", "status"),
    [
        ("ingest", {"tokens_total": 1499}, 422),
        ("ingest", {"tokens_prompt": -1}, 422),
        ("ingest", {"prompt_tokens": 1000}, 422),  # one naming scheme per body
        ("ingest", {"metadata": {"nested": {"a": 1}}}, 422),
        ("ingest", {"model": ""}, 422),
        ("ingest_acme", {"workspace_id": "globex"}, 403),  # a bound key writes only its own workspace
        ("acme", {}, 403),  # a tenant (read) key writes nothing
    ],
)
def test_bad_llm_calls_are_refused_and_nothing_is_stored(
    api: Api, who: str, change: dict[str, Any], status: int
) -> None:
    r = _post(api, who, "/api/llm-calls", {**LLM_CALL, **change})
    assert r.status_code == status, r.text
    assert r.json()["success"] is False and r.json()["detail"]
    assert api.store.read_records() == []


def test_compute_usage_takes_usage_value_and_unit(api: Api, pricer: Pricer) -> None:
    r = _post(api, "ingest", "/api/resources/usage", {"workspace_id": "acme", **SANDBOX[0]})
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["usage_value"], body["unit"], body["resource_type"]) == (2.0, "cores", "cpu")
    assert Decimal(body["cost_usd_exact"]) == pricer.price_resource("cpu_core_hour", Decimal(240) / 3600).total
    # no duration: the value is already in the catalog unit (storage: GB-months), as the seed priced it
    stored = _post(
        api, "ingest", "/api/resources/usage", {"workspace_id": "acme", "resource_type": "storage", "usage_value": 10}
    )
    assert Decimal(stored.json()["cost_usd_exact"]) == pricer.price_resource("storage_gb_month", 10).total


@pytest.mark.parametrize(
    "bad",
    [
        {"resource_type": "cpu", "usage_value": 1, "amount": 2, "duration_seconds": 60},  # disagree
        {"resource_type": "cpu", "duration_seconds": 60},  # no amount at all
        {"resource_type": "cpu", "usage_value": -1},
        {"resource_type": "cpu", "usage_value": 1, "unit": "cores\n"},
        {"resource_type": "quantum", "usage_value": 1},
    ],
)
def test_bad_compute_usage_is_refused_and_nothing_is_stored(api: Api, bad: dict[str, Any]) -> None:
    r = _post(api, "ingest", "/api/resources/usage", {"workspace_id": "acme", **bad})
    assert r.status_code == 422 and r.json()["success"] is False
    costs = api.get("acme", "/api/workspaces/acme/costs").json()
    assert costs["breakdown"]["compute"]["records"] == 0 and costs["compute_cost"] == 0.0


def test_workspace_costs(workspace: Api, pricer: Pricer) -> None:
    body = workspace.get("acme", "/api/workspaces/acme/costs", period="month").json()
    llm, compute = _llm(pricer), _compute(pricer)
    assert body["period"] == "month"
    for key in ("total_cost", "llm_cost", "compute_cost"):
        assert _number(body[key]), key
    assert body["llm_cost"] == pytest.approx(float(llm)) and body["compute_cost"] == pytest.approx(float(compute))
    assert body["total_cost"] == pytest.approx(float(llm + compute))
    assert Decimal(body["total_cost_exact"]) == (llm + compute).quantize(Decimal("0.00000001"))
    breakdown = body["breakdown"]
    assert (breakdown["llm"]["tokens"], breakdown["llm"]["calls"]) == (1500, 1)
    assert _number(breakdown["llm"]["total"]) and breakdown["compute"]["records"] == 3
    (model,) = body["by_model"]
    assert (model["provider"], model["model"], model["tokens"], model["calls"]) == ("openai", "gpt-4", 1500, 1)
    assert model["cost"] == pytest.approx(float(llm))
    resources = {r["resource_type"]: (r["usage"], r["count"]) for r in body["by_resource"]}
    assert resources == {"cpu": (2.0, 1), "memory": (1.0, 1), "sandbox": (1.0, 1)}
    assert all(_number(r["cost"]) for r in body["by_resource"])
    trends = body["trends"]
    assert isinstance(trends["daily"], list) and _number(trends["forecast_eom"])
    assert trends["forecast_confidence"] in ("high", "medium", "low")


def test_execution_costs(workspace: Api, pricer: Pricer) -> None:
    body = workspace.get("acme", "/api/executions/exec_456/costs").json()
    assert body["execution_id"] == "exec_456"
    assert body["total_cost"] == pytest.approx(float(_llm(pricer) + _compute(pricer)))
    assert body["breakdown"]["llm"] == {"cost": pytest.approx(float(_llm(pricer))), "tokens": 1500, "calls": 1}
    by_type = body["breakdown"]["compute"]["by_type"]
    assert {k: v["usage"] for k, v in by_type.items()} == {"cpu": 2.0, "memory": 1.0, "sandbox": 1.0}
    assert all(_number(v["cost"]) for v in by_type.values())


def test_cost_forecast(workspace: Api) -> None:
    body = workspace.get("acme", "/api/workspaces/acme/cost-forecast").json()
    for key in (
        "current_month_spent",
        "llm_cost",
        "compute_cost",
        "daily_average",
        "forecast_end_of_month",
        "forecast_confidence",
    ):
        assert _number(body[key]), key
    assert isinstance(body["days_elapsed"], int) and 28 <= body["total_days"] <= 31
    assert body["current_month_spent"] == pytest.approx(body["llm_cost"] + body["compute_cost"])
    assert 0 <= body["forecast_confidence"] <= 1 and body["projection_accuracy"] in ("high", "medium", "low")


#: Calls on Azure OpenAI, Bedrock and Vertex: each gets the cheaper model of its family on its own cloud.
CLOUDS = [
    ("azure.ai.openai", "gpt-4o", "gpt-4o-mini"),
    ("aws.bedrock", "anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic.claude-haiku-4-5-20251001-v1:0"),
    ("gcp.vertex_ai", "gemini-2.5-pro", "gemini-2.5-flash"),
    ("openai", "gpt-4", "gpt-4o-mini"),
]


def test_optimization_is_a_bare_list_and_covers_the_clouds(api: Api) -> None:
    for provider, model, _ in CLOUDS:
        for i in range(5):
            call = {**LLM_CALL, "provider": provider, "model": model, "id": f"{provider}-{i}"}
            assert _post(api, "ingest", "/api/llm-calls", call).status_code == 201
    recs = api.get("acme", "/api/workspaces/acme/cost-optimization", period="month").json()
    assert isinstance(recs, list)
    downgrades = {r["current_model"]: r for r in recs if r["type"] == "model_downgrade"}
    assert {m: r["recommended_model"] for m, r in downgrades.items()} == {m: s for _, m, s in CLOUDS}
    for r in recs:
        assert r["priority"] in ("high", "medium", "low") and r["title"] and r["description"]
        assert _number(r["estimated_savings"]) and r["estimated_savings"] > 0
        assert r["impact"].startswith("$") and r["impact"].endswith("/month")
    savings = [r["estimated_savings"] for r in recs]
    assert savings == sorted(savings, reverse=True)


def test_stats_include_compute(workspace: Api, pricer: Pricer) -> None:
    stats = workspace.get("acme", "/api/workspaces/acme/cost-stats").json()
    llm, compute = _llm(pricer), _compute(pricer)
    assert Decimal(stats["compute_cost"]) == compute.quantize(Decimal("0.00000001"))
    assert Decimal(stats["llm_cost"]) == llm.quantize(Decimal("0.00000001"))
    assert Decimal(stats["total_cost"]) == (llm + compute).quantize(Decimal("0.00000001"))
    assert stats["compute_records"] == 3 and set(stats["by_resource"]) == {"cpu", "memory", "sandbox"}


def test_another_tenant_sees_none_of_it(workspace: Api) -> None:
    assert workspace.get("globex", "/api/workspaces/acme/costs").status_code == 403
    assert workspace.get("globex", "/api/executions/exec_456/costs").status_code == 404
    assert workspace.get("globex", "/api/workspaces/globex/cost-optimization").json() == []


def test_a_resource_log_written_before_usage_values_still_loads(tmp_path: Path) -> None:
    """Lines written before ``amount``/``unit`` were kept load with the catalog quantity as the usage."""
    old = {
        "id": "r1",
        "at": 1_764_000_000.0,
        "tenant": "acme",
        "workflow": "wf",
        "project": "",
        "kind": "cpu",
        "resource": "cpu_core_hour",
        "quantity": "0.5",
        "cost_usd": "0.02",
    }
    (tmp_path / "usage.jsonl").write_text(json.dumps(old) + "\n")
    log = ResourceLog(tmp_path)
    sums = log.workflow_kinds("acme", "wf")["cpu"]
    assert (sums.cost, sums.usage, sums.count) == (Decimal("0.02"), Decimal("0.5"), 1)
    new = ResourceEntry(
        "r2",
        1_764_000_000.0,
        "acme",
        "wf",
        "",
        "cpu",
        "cpu_core_hour",
        Decimal(1),
        Decimal("0.04"),
        Decimal(2),
        "cores",
    )
    assert log.append(new) and not log.append(new)
    again = ResourceLog(tmp_path).workflow_kinds("acme", "wf")["cpu"]  # read back from disk
    assert (again.cost, again.usage, again.count) == (Decimal("0.06"), Decimal("2.5"), 2)


def test_the_call_logging_route_takes_the_llm_call_names_too(api: Api, pricer: Pricer) -> None:
    body = {k: v for k, v in LLM_CALL.items() if k != "metadata"}
    r = api.post_call("ingest", **body, tokens_total=1500)
    assert r.status_code == 201, r.text
    assert Decimal(r.json()["cost_usd"]) == _llm(pricer)
    (record,) = api.store.read_records()
    assert (record.tenant, record.workflow, record.tokens.input) == ("acme", "exec_456", 1000)
    for bad in ({"tokens_total": 7}, {"prompt_tokens": 999}, {"tenant_id": "globex"}):
        refused = api.post_call("ingest", **body, **bad)
        assert refused.status_code == 422 and refused.json()["success"] is False, bad
    assert api.post_call("ingest_acme", **{**body, "workspace_id": "globex"}).status_code == 403
    assert len(api.store.read_records()) == 1


def test_compute_is_on_metrics(workspace: Api, pricer: Pricer) -> None:
    with workspace.client("admin") as c:
        families = {f.name: f for f in text_string_to_metric_families(c.get("/metrics").text)}
    cost = {
        (s.labels["tenant"], s.labels["resource_type"]): s.value
        for s in families["costspan_compute_cost_usd"].samples
        if s.name == "costspan_compute_cost_usd_total"
    }
    assert set(cost) == {("acme", "cpu"), ("acme", "memory"), ("acme", "sandbox")}
    assert sum(cost.values()) == pytest.approx(float(_compute(pricer)))
    records = [s.value for s in families["costspan_compute_records"].samples if s.name.endswith("_total")]
    assert records == [1, 1, 1]
