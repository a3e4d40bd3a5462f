"""The Quantum Layer's documented ``/api/v2`` cost API, replayed against ``costspan serve``: each
request of its cost-tracking guide (and of its own test scripts) as its clients send it (a bearer
token), and its documented answers' field names and JSON types (money is a number) inside
``{"success": true, "data": {...}}``. See docs/compatibility.md, "Quantum Layer"."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

import httpx
import pytest
from prometheus_client import CollectorRegistry

from costspan.pricing import Pricer, Usage
from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.api import KeyStore
from costspan.processor.serve._server import build_server_app
from costspan.processor.serve._settings import Settings
from costspan.processor.store._store import Store
from tests.support.seed_shapes import assert_shape

ESTIMATE_EXAMPLE: Final = {
    "success": True,
    "data": {
        "complexity": "medium",
        "tech_stack": ["Python", "FastAPI"],
        "estimated_input_tokens": 10000,
        "estimated_output_tokens": 25000,
        "model_estimates": {
            "gpt-3.5-turbo": {"estimated_cost_usd": 0.0425, "estimated_tokens": 35000},
            "gpt-4-turbo": {"estimated_cost_usd": 0.85, "estimated_tokens": 35000},
        },
        "recommended_model": "gpt-4-turbo",
    },
}
COSTS_EXAMPLE: Final = {
    "success": True,
    "data": {
        "tenant_id": "org_123",
        "period_days": 30,
        "total_requests": 156,
        "total_cost_usd": 12.45,
        "average_daily_cost": 0.42,
        "daily_breakdown": {"2024-01-20": 0.85, "2024-01-21": 0.62},
        "projected_monthly_cost": 12.60,
    },
}
#: what the seed's own scripts read of a workflow's cost report beside the guide's fields
WORKFLOW_FIELDS: Final = {
    "workflow_id": "qlp-execution-xyz",
    "total_input_tokens": 1,
    "total_output_tokens": 1,
    "total_tokens": 2,
    "total_cost_usd": 0.5,
    "average_cost_per_request": 0.25,
}
METRICS_EXAMPLE: Final = {
    "success": True,
    "data": {
        "costs": {
            "llm_tokens": 1567890,
            "compute_hours": 45.2,
            "storage_gb": 128.5,
            "estimated_cost": 234.56,
            "total_llm_cost_usd": 15.67,
        }
    },
}
WORKFLOW: Final = "qlp-execution-xyz"
#: (model, input tokens, output tokens, workflow)
CALLS: Final = (("gpt-4o", 3000, 800, WORKFLOW), ("gpt-4o-mini", 5000, 1000, WORKFLOW), ("gpt-4o", 1000, 100, ""))
#: compute reported by the platform: (kind, amount, seconds) → cpu 2 core-hours, gpu 0.5 h, storage 128.5 GB-months
COMPUTE: Final = (("cpu", "2", "3600"), ("gpu", "1", "1800"), ("storage", "128.5", str(30 * 86400)))


class Quantum:
    def __init__(self, url: str, keys: dict[str, str]) -> None:
        self.url = url
        self.keys = keys

    def get(self, key: str, path: str, params: Any = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[key]}"}
        return httpx.get(self.url + path, params=params, headers=headers, timeout=30)

    def post(self, path: str, body: dict[str, Any]) -> None:
        r = httpx.post(self.url + path, json=body, headers={"X-API-Key": self.keys["ingest"]}, timeout=30)
        assert r.status_code == 201, r.text


@pytest.fixture(scope="module")
def quantum(tmp_path_factory: pytest.TempPathFactory, pricer: Pricer) -> Iterator[Quantum]:
    data = tmp_path_factory.mktemp("quantum") / "data"
    settings = Settings(data_dir=data, port=0)
    keystore = KeyStore(data)
    keys = {role: keystore.create(role)[1] for role in ("admin", "ingest")}
    keys |= {tenant: keystore.create("tenant", tenant)[1] for tenant in ("org_123", "globex")}
    app = build_server_app(
        settings, Store(settings.store_config()), keys=keystore, pricer=pricer, registry=CollectorRegistry()
    )
    with ServerThread(app) as running:
        server = Quantum(running.url, keys)
        for n, (model, inp, out, workflow) in enumerate(CALLS):
            call = {"tenant_id": "org_123", "provider": "openai", "model": model, "prompt_tokens": inp}
            server.post(
                "/api/usage/calls", call | {"completion_tokens": out, "workflow_id": workflow, "call_id": f"q{n}"}
            )
        server.post(
            "/api/usage/calls",
            {
                "tenant_id": "globex",
                "provider": "openai",
                "model": "gpt-4o",
                "prompt_tokens": 7,
                "completion_tokens": 0,
            },
        )
        for n, (kind, amount, seconds) in enumerate(COMPUTE):
            usage = {"workspace_id": "org_123", "resource_type": kind, "amount": amount, "duration_seconds": seconds}
            server.post("/api/resources/usage", usage | {"execution_id": WORKFLOW, "id": f"r{n}"})
        yield server


def _cost(pricer: Pricer, model: str, inp: int, out: int) -> Decimal:
    total = pricer.price_call(model, Usage(input_tokens=inp, output_tokens=out), provider="openai").total
    assert total is not None
    return total


def test_the_documented_estimate_request_answers_the_documented_fields(quantum: Quantum) -> None:
    # the guide's curl, its repeated tech_stack kept in full
    r = quantum.get("org_123", "/api/v2/costs/estimate", "complexity=medium&tech_stack=Python&tech_stack=FastAPI")
    assert r.status_code == 200, r.text
    body = r.json()
    assert_shape(ESTIMATE_EXAMPLE, body, dynamic={"model_estimates"})
    data = body["data"]
    assert (data["complexity"], data["tech_stack"]) == ("medium", ["Python", "FastAPI"])
    moderate = quantum.get(
        "org_123", "/api/v2/costs/estimate", {"complexity": "moderate", "tech_stack": "Python,FastAPI"}
    )
    same = moderate.json()["data"]
    assert (data["estimated_input_tokens"], data["estimated_output_tokens"]) == (
        same["estimated_input_tokens"],
        same["estimated_output_tokens"],
    )  # medium is moderate; two items add 10 %
    assert data["estimated_input_tokens"] == round(4 * 3000 * 1.1)
    assert data["recommended_model"] in data["model_estimates"]
    for estimate in data["model_estimates"].values():
        assert estimate["estimated_cost_usd"] == float(Decimal(estimate["estimated_cost_usd_exact"]))


@pytest.mark.parametrize("complexity", ["trivial", "simple", "medium", "moderate", "complex", "very_complex"])
def test_every_documented_complexity_is_accepted(quantum: Quantum, complexity: str) -> None:
    r = quantum.get("org_123", "/api/v2/costs/estimate", {"complexity": complexity})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["complexity"] == complexity


def test_the_scripts_three_item_stack_is_kept_whole(quantum: Quantum) -> None:
    params = [("complexity", "medium"), *(("tech_stack", t) for t in ("Python", "FastAPI", "PostgreSQL"))]
    data = quantum.get("org_123", "/api/v2/costs/estimate", params).json()["data"]
    assert data["tech_stack"] == ["Python", "FastAPI", "PostgreSQL"]
    assert data["estimated_input_tokens"] == round(4 * 3000 * 1.2)


@pytest.mark.parametrize(
    "params", [{"complexity": "huge"}, [("tech_stack", "x" * 201)], [("tech_stack", str(n)) for n in range(51)]]
)
def test_a_bad_estimate_request_is_422(quantum: Quantum, params: Any) -> None:
    assert quantum.get("org_123", "/api/v2/costs/estimate", params).status_code == 422


def test_the_tenant_cost_report_answers_the_documented_fields(quantum: Quantum, pricer: Pricer) -> None:
    r = quantum.get("org_123", "/api/v2/costs", {"period_days": 30})
    assert r.status_code == 200, r.text
    body = r.json()
    assert_shape(COSTS_EXAMPLE, body, dynamic={"daily_breakdown"})
    data = body["data"]
    total = sum((_cost(pricer, m, i, o) for m, i, o, _ in CALLS), Decimal(0))
    assert (data["tenant_id"], data["period_days"], data["total_requests"]) == ("org_123", 30, 3)
    assert data["total_cost_usd"] == float(total)
    assert data["average_daily_cost"] == float((total / 30).quantize(Decimal("0.00000001")))
    assert data["projected_monthly_cost"] == float((total / 30 * 30).quantize(Decimal("0.00000001")))
    today = datetime.now(UTC).date().isoformat()
    assert data["daily_breakdown"] == {today: float(total)}
    # the model breakdown the seed's scripts read: {model: {count, input_tokens, output_tokens, cost_usd}}
    four_o = _cost(pricer, "gpt-4o", 3000, 800) + _cost(pricer, "gpt-4o", 1000, 100)
    assert {
        m: (b["count"], b["input_tokens"], b["output_tokens"], b["cost_usd"])
        for m, b in data["model_breakdown"].items()
    } == {
        "gpt-4o": (2, 4000, 900, float(four_o)),
        "gpt-4o-mini": (1, 5000, 1000, float(_cost(pricer, "gpt-4o-mini", 5000, 1000))),
    }


def test_the_workflow_cost_report_answers_what_the_seeds_scripts_read(quantum: Quantum, pricer: Pricer) -> None:
    body = quantum.get("org_123", "/api/v2/costs", {"workflow_id": WORKFLOW}).json()
    assert_shape(COSTS_EXAMPLE, body, dynamic={"daily_breakdown"})
    assert_shape(WORKFLOW_FIELDS, body["data"])
    data = body["data"]
    mine = [c for c in CALLS if c[3] == WORKFLOW]
    total = sum((_cost(pricer, m, i, o) for m, i, o, _ in mine), Decimal(0))
    assert (data["workflow_id"], data["total_requests"], data["total_cost_usd"]) == (WORKFLOW, 2, float(total))
    assert (data["total_input_tokens"], data["total_output_tokens"], data["total_tokens"]) == (8000, 1800, 9800)
    assert data["average_cost_per_request"] == float((total / 2).quantize(Decimal("0.00000001")))


def test_metrics_carry_the_documented_cost_figures(quantum: Quantum, pricer: Pricer) -> None:
    r = quantum.get("org_123", "/api/v2/metrics")
    assert r.status_code == 200, r.text
    body = r.json()
    assert_shape(METRICS_EXAMPLE, body)
    example_data = METRICS_EXAMPLE["data"]
    assert isinstance(example_data, dict)
    assert_shape({"costs": example_data["costs"]}, body)  # the guide's own example: costs at the top
    assert body["costs"] == body["data"]["costs"]
    costs = body["data"]["costs"]
    llm = sum((_cost(pricer, m, i, o) for m, i, o, _ in CALLS), Decimal(0))
    compute = {
        "cpu_core_hour": pricer.price_resource("cpu_core_hour", Decimal(2)).total,
        "gpu_hour": pricer.price_resource("gpu_hour", Decimal("0.5")).total,
        "storage_gb_month": pricer.price_resource("storage_gb_month", Decimal("128.5")).total,
    }
    assert costs["llm_tokens"] == sum(i + o for _, i, o, _ in CALLS)
    assert (costs["compute_hours"], costs["storage_gb"]) == (2.5, 128.5)
    assert costs["total_llm_cost_usd"] == float(llm)
    assert costs["compute_costs_usd"] == {r: float(c) for r, c in compute.items()}
    assert costs["compute_cost_usd"] == float(sum(compute.values(), Decimal(0)))
    assert costs["estimated_cost"] == float(llm + sum(compute.values(), Decimal(0)))
    assert Decimal(costs["estimated_cost_exact"]) == llm + sum(compute.values(), Decimal(0))


def test_an_admin_reads_every_tenant_and_a_tenant_only_its_own(quantum: Quantum) -> None:
    everyone = quantum.get("admin", "/api/v2/metrics").json()["data"]["costs"]
    mine = quantum.get("org_123", "/api/v2/metrics").json()["data"]["costs"]
    assert everyone["llm_tokens"] == mine["llm_tokens"] + 7
    assert quantum.get("globex", "/api/v2/metrics").json()["data"]["costs"]["compute_hours"] == 0.0
    assert quantum.get("globex", "/api/v2/costs", {"tenant_id": "org_123"}).status_code == 403
    assert quantum.get("globex", "/api/v2/costs", {"workflow_id": WORKFLOW}).json()["data"]["total_requests"] == 0


def test_every_route_needs_a_key(quantum: Quantum) -> None:
    for path in ("/api/v2/costs", "/api/v2/costs/estimate", "/api/v2/metrics"):
        assert httpx.get(quantum.url + path).status_code == 401
