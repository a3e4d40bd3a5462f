"""Each read route's body is exactly what its documented ``response_model`` says (no key more or less),
and the OpenAPI document shows those schemas."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry
from pydantic import TypeAdapter

from costspan.pricing import Pricer
from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.api import KeyStore
from costspan.processor.api import _routes_analytics as routes_analytics
from costspan.processor.api import _routes_dashboard as routes_dashboard
from costspan.processor.api import _routes_monitoring as routes_monitoring
from costspan.processor.api import _routes_optimization as routes_optimization
from costspan.processor.api import _routes_qlens as routes_qlens
from costspan.processor.api import _routes_usage as routes_usage
from costspan.processor.api import _routes_v2 as routes_v2
from costspan.processor.api import _routes_workspaces as routes_workspaces
from costspan.processor.serve._server import build_server_app
from costspan.processor.serve._settings import Settings
from costspan.processor.store._store import Store
from tests.component.api.conftest import Api
from tests.component.api.seed import ingest

#: (key, path, query) of one request per documented read route and shape
REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("acme", "/health", {}),
    ("acme", "/v1/usage", {"scope": "tenant", "period": "monthly"}),
    ("acme", "/v1/usage", {"scope": "summary"}),
    ("admin", "/v1/usage", {"scope": "global"}),
    ("acme", "/api/v2/costs", {"period_days": 7}),
    ("acme", "/api/v2/costs/estimate", {"complexity": "complex", "tech_stack": "python,react"}),
    ("acme", "/api/v2/metrics", {}),
    ("acme", "/api/usage/metrics/realtime", {}),
    ("acme", "/api/usage/metrics/aggregates", {"days": 3, "interval": "hour"}),
    ("admin", "/api/usage/metrics/aggregates", {"days": 7, "interval": "month", "currency": "EUR"}),
    ("acme", "/api/usage/costs/by-provider", {"days": 7}),
    ("acme", "/api/usage/performance/latency", {"days": 7}),
    ("acme", "/api/usage/operations/top", {"days": 7}),
    ("acme", "/api/usage/costs/trend", {"days": 7}),
    ("acme", "/api/usage/errors/by-provider", {"days": 7}),
    ("acme", "/api/workspaces/acme/costs", {"period": "week"}),
    ("acme", "/api/workspaces/acme/cost-forecast", {}),
    ("acme", "/api/workspaces/acme/cost-optimization", {}),
    ("acme", "/api/workspaces/acme/cost-stats", {}),
    ("acme", "/api/executions/acme-wf-1/costs", {}),
    ("acme", "/api/analytics/top-users", {}),
    ("acme", "/api/analytics/providers", {"currency": "EUR"}),
    ("acme", "/api/analytics/token-efficiency", {}),
    ("acme", "/api/analytics/sessions", {}),
    ("acme", "/api/dashboard/summary", {}),
]


def _documented() -> dict[str, APIRoute]:
    routes = {}
    for module in (
        routes_usage,
        routes_qlens,
        routes_monitoring,
        routes_v2,
        routes_workspaces,
        routes_optimization,
        routes_analytics,
        routes_dashboard,
    ):
        for route in module.router.routes:
            if isinstance(route, APIRoute) and "GET" in (route.methods or ()) and route.response_model is not None:
                routes[route.path_format.replace("{workspace_id}", "acme").replace("{execution_id}", "acme-wf-1")] = (
                    route
                )
    return routes


def _keys(value: Any) -> Any:
    """The body with every leaf replaced by its type's name: a validated copy must keep the same shape."""
    if isinstance(value, dict):
        return {k: _keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_keys(v) for v in value]
    return type(value).__name__


@pytest.fixture
def seeded(tmp_path: Path, pricer: Pricer) -> Iterator[Api]:
    """The whole ``costspan serve`` app (the dashboard's summary included), seeded."""
    data = tmp_path / "data"
    settings = Settings(data_dir=data, port=0)
    keystore = KeyStore(data)
    keys = {"admin": keystore.create("admin")[1], "acme": keystore.create("tenant", "acme")[1]}
    keys["ingest"] = keystore.create("ingest")[1]
    store = Store(settings.store_config())
    registry = CollectorRegistry(auto_describe=False)
    app = build_server_app(settings, store, keys=keystore, pricer=pricer, registry=registry)
    with ServerThread(app) as server:
        api = Api(server.url, store, app.state.usage_index, keys, data)
        ingest(api)
        yield api


def test_every_read_route_answers_its_documented_schema(seeded: Api) -> None:
    documented = _documented()
    assert {path for _, path, _ in REQUESTS} == set(documented)
    for who, path, params in REQUESTS:
        response = seeded.get(who, path, **params)
        assert response.status_code == 200, (path, response.text)
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        validated = TypeAdapter(documented[path].response_model).validate_python(body, strict=False)
        # a TypedDict drops unknown keys and the union picks a member: the copy has the body's shape
        assert _keys(validated) == _keys(body), path


def test_openapi_shows_the_response_schemas(api: Api) -> None:
    spec = api.get(None, "/openapi.json").json()
    ok = spec["paths"]["/api/usage/metrics/aggregates"]["get"]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"] == {"$ref": "#/components/schemas/SeedAggregatesOk"}
    row = spec["components"]["schemas"]["SeedPeriodRow"]
    assert {"period", "cost", "request_count", "avg_latency_ms", "total_cost_usd"} <= set(row["properties"])
    # a decimal string, or null when none of the period's calls could be priced
    assert [t["type"] for t in row["properties"]["cost"]["anyOf"]] == ["string", "null"]
    outcomes = {"unpriced_calls", "unpriced_tokens", "blocked_count", "ok_count", "degraded_count"}
    assert outcomes <= set(row["properties"])
    usage = spec["paths"]["/v1/usage"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert len(usage["anyOf"]) == 3
