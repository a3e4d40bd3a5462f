"""The project dimension (``costspan.project.id``): filters on the usage routes and exports, and a
per-project breakdown in the workspace costs; a tenant key sees its own projects only."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

import pytest

from tests.component.api.conftest import Api

SPAN: dict[str, Any] = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.usage.input_tokens": 1000,
    "gen_ai.usage.output_tokens": 200,
    "costspan.tenant.id": "acme",
}


@pytest.fixture
def projects(api: Api) -> Api:
    api.export_spans(
        api.keys["ingest"],
        [
            {**SPAN, "costspan.project.id": "apollo"},
            {**SPAN, "costspan.project.id": "apollo", "gen_ai.usage.output_tokens": 900},
            {**SPAN, "costspan.project.id": "zeus"},
            SPAN,  # no project
            {**SPAN, "costspan.tenant.id": "globex", "costspan.project.id": "apollo"},
        ],
    )
    r = api.post_call(
        "ingest",
        tenant_id="acme",
        provider="anthropic",
        model="claude-haiku-4-5",
        prompt_tokens=500,
        completion_tokens=100,
        project_id="apollo",
        call_id="apollo-1",
    )
    assert r.status_code == 201, r.text
    return api


def _sum(rows: list[dict[str, Any]], key: str) -> Decimal:
    return sum((Decimal(r[key]) for r in rows), Decimal(0))


def test_project_filter_on_usage_routes(projects: Api) -> None:
    agg = projects.get("acme", "/api/usage/metrics/aggregates", days=7, project="apollo").json()["data"]
    assert agg["project"] == "apollo"
    assert sum(row["request_count"] for row in agg["aggregates"]) == 3
    by_provider = projects.get("acme", "/api/usage/costs/by-provider", days=7, project="apollo").json()["data"]
    assert {p["provider"]: p["request_count"] for p in by_provider["providers"]} == {"openai": 2, "anthropic": 1}
    assert Decimal(by_provider["total_cost"]) == _sum(agg["aggregates"], "cost") > 0
    only_openai = projects.get("acme", "/api/usage/metrics/aggregates", days=7, project="apollo", provider="openai")
    assert sum(row["request_count"] for row in only_openai.json()["data"]["aggregates"]) == 2
    # the admin without a tenant sums every tenant's calls of that project id
    everyone = projects.get("admin", "/api/usage/metrics/aggregates", days=7, project="apollo").json()["data"]
    assert sum(row["request_count"] for row in everyone["aggregates"]) == 4
    hourly = projects.get("acme", "/api/usage/metrics/aggregates", days=7, interval="hour", project="apollo")
    assert hourly.status_code == 400 and "project" in hourly.json()["detail"]


def test_workspace_costs_by_project(projects: Api) -> None:
    body = projects.get("acme", "/api/workspaces/acme/costs", period="week").json()
    assert set(body["by_project"]) == {"apollo", "zeus"}  # calls without a project are left out
    assert body["by_project"]["apollo"]["request_count"] == 3
    assert body["by_project"]["zeus"]["request_count"] == 1
    agg = projects.get("acme", "/api/usage/metrics/aggregates", days=7, project="apollo").json()["data"]
    assert Decimal(body["by_project"]["apollo"]["cost"]) == _sum(agg["aggregates"], "cost")


def test_export_project_filter_and_column(projects: Api) -> None:
    with projects.client("acme") as c:
        r = c.get("/api/usage/export", params={"format": "csv", "project": "apollo"})
    assert r.status_code == 200
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 3 and {row["project_id"] for row in rows} == {"apollo"}
    assert {row["tenant_id"] for row in rows} == {"acme"}


def test_a_tenant_sees_only_its_own_projects(projects: Api) -> None:
    globex = projects.get("globex", "/api/usage/metrics/aggregates", days=7, project="apollo").json()["data"]
    assert sum(row["request_count"] for row in globex["aggregates"]) == 1
    zeus = projects.get("globex", "/api/usage/costs/by-provider", days=7, project="zeus").json()["data"]
    assert zeus["providers"] == []
    assert projects.get("globex", "/api/workspaces/acme/costs").status_code == 403
