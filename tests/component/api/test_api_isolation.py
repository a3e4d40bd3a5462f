"""A tenant key never sees another tenant's data: route by route, list, total and export.

Every id of tenant globex contains "globex" (see ``seed.py``); for every GET route of the OpenAPI
spec an acme key must get an answer without it, and naming globex (parameter, path or
``X-Tenant-ID``) must be refused. The table must cover every route, so a new route fails this
test until it is added here.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.component.api.conftest import Api
from tests.component.api.seed import ingest

#: path -> (query for the acme key, the query parameter that names a tenant, or "path" / None)
ROUTES: dict[str, tuple[dict[str, Any], str | None]] = {
    "/v1/usage": ({"scope": "tenant"}, "tenant_id"),
    "/api/usage/metrics/realtime": ({}, "tenant"),
    "/api/usage/metrics/aggregates": ({"days": 7}, "tenant"),
    "/api/usage/costs/by-provider": ({"days": 7}, "tenant"),
    "/api/usage/performance/latency": ({"days": 7}, "tenant"),
    "/api/usage/operations/top": ({"days": 7}, "tenant"),
    "/api/usage/costs/trend": ({"days": 7}, "tenant"),
    "/api/usage/errors/by-provider": ({"days": 7}, "tenant"),
    "/api/usage/export": ({"format": "json"}, "tenant"),
    "/api/v2/costs": ({"period_days": 7}, "tenant_id"),
    "/api/v2/costs/estimate": ({"complexity": "simple"}, "tenant_id"),
    "/api/v2/metrics": ({}, "tenant_id"),
    "/api/workspaces/{workspace_id}/costs": ({}, "path"),
    "/api/workspaces/{workspace_id}/cost-forecast": ({}, "path"),
    "/api/workspaces/{workspace_id}/cost-optimization": ({}, "path"),
    "/api/workspaces/{workspace_id}/cost-stats": ({}, "path"),
    "/api/executions/{execution_id}/costs": ({}, "tenant"),
    "/api/analytics/top-users": ({}, "tenant"),
    "/api/analytics/providers": ({}, "tenant"),
    "/api/analytics/token-efficiency": ({}, "tenant"),
    "/api/analytics/sessions": ({}, "tenant"),
    "/v1/sessions/{session_id}": ({}, "tenant"),  # the tenant's own seeded session (see _url)
    "/health": ({}, None),
    "/healthz": ({}, None),  # the processor's
    "/readyz": ({}, None),  # the processor's
}


@pytest.fixture
def seeded(api: Api) -> Api:
    ingest(api)
    return api


def _paths(api: Api) -> list[str]:
    spec = api.get(None, "/openapi.json").json()
    return sorted(p for p, ops in spec["paths"].items() if "get" in ops)


def test_the_table_covers_every_read_route(api: Api) -> None:
    assert sorted(ROUTES) == _paths(api)


def _url(path: str, workspace: str, execution: str) -> str:
    path = path.replace("{session_id}", f"{workspace}-session-1")
    return path.replace("{workspace_id}", workspace).replace("{execution_id}", execution)


@pytest.mark.parametrize("path", sorted(ROUTES))
def test_tenant_key_sees_only_its_tenant(seeded: Api, path: str) -> None:
    params, tenant_param = ROUTES[path]
    with seeded.client("acme") as c:
        own = c.get(_url(path, "acme", "acme-wf-2"), params=params)
        assert own.status_code == 200, own.text
        assert "globex" not in own.text
        other_execution = c.get(_url(path, "acme", "globex-wf-1"), params=params)
        assert "globex-wf" not in other_execution.text or other_execution.status_code == 404
        if path.startswith("/api/executions/"):
            assert other_execution.status_code == 404
        if tenant_param is None:
            return
        if tenant_param == "path":
            assert c.get(_url(path, "globex", "x"), params=params).status_code == 403
        else:
            named = c.get(_url(path, "acme", "acme-wf-2"), params={**params, tenant_param: "globex"})
            assert named.status_code == 403, named.text
        header = c.get(_url(path, "acme", "acme-wf-2"), params=params, headers={"X-Tenant-ID": "globex"})
        assert header.status_code == 403
    with seeded.client("globex") as g:
        theirs = g.get(_url(path, "globex", "globex-wf-1"), params=params)
        assert theirs.status_code == 200, theirs.text
        assert "acme" not in theirs.text


def test_admin_sees_both_tenants_so_the_markers_can_show(seeded: Api) -> None:
    for path, params in [
        ("/api/analytics/top-users", {}),
        ("/api/usage/export", {"format": "csv"}),
        ("/api/analytics/sessions", {}),
    ]:
        text = seeded.get("admin", path, **params).text
        assert "globex" in text and "acme" in text, path
    assert "globex" in seeded.get("admin", "/api/executions/globex-wf-1/costs").text


def test_global_scope_is_admin_only(seeded: Api) -> None:
    assert seeded.get("acme", "/v1/usage", scope="global").status_code == 403
    assert seeded.get("globex", "/v1/usage", scope="global").status_code == 403
    summary = seeded.get("acme", "/v1/usage", scope="summary").json()
    assert summary["active_tenants"] == 1 and summary["request_count"] == 2
