"""The seeds' documented examples that the per-seed replays did not send, sent as documented to a
real ``costspan serve`` app on 127.0.0.1 (with keys, as every costspan route needs).

- Calls the seeds' own guides show without a key (the Quantum Layer's ``curl`` lines, Phase 17's
  ``httpx`` client, the UsageTracker's dashboard routes) stay refused with 401 and change nothing;
  the same call with a key answers the documented fields.
- Phase 17: the minimal project budget body, the documented workspace body with ``hard_limit: false``
  and its documented status example, the service layer's ``log_llm_call`` example.
- UsageTracker: the documented failed call (``success=False``, ``error_message``, no tokens) counts
  against the success rate.
See docs/compatibility.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from prometheus_client import CollectorRegistry

from costspan.pricing import Pricer
from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.api import KeyStore
from costspan.processor.serve._server import build_server_app
from costspan.processor.serve._settings import Settings
from costspan.processor.store._store import Store
from tests.support.seed_shapes import assert_shape

#: Phase 17's documented status example.
STATUS_EXAMPLE: Final = {
    "has_budget": True,
    "budget": 5000.0,
    "spent": 3500.0,
    "remaining": 1500.0,
    "usage_percent": 70.0,
    "alert_needed": False,
    "is_over_budget": False,
    "hard_limit": False,
}
WORKSPACE_BODY: Final = {
    "monthly_budget_usd": 5000.0,
    "alert_threshold_percent": 80,
    "alert_emails": ["admin@example.com"],
    "hard_limit": False,
}
#: Phase 17's service-layer ``log_llm_call`` example.
LLM_CALL: Final = {
    "workspace_id": "ws_123",
    "execution_id": "exec_456",
    "provider": "openai",
    "model": "gpt-4",
    "tokens_prompt": 1000,
    "tokens_completion": 500,
    "latency_ms": 1500,
    "metadata": {"temperature": 0.7},
}
#: The documented GET requests, exactly as the seeds' guides write them (path and query).
DOCUMENTED_GETS: Final = (
    "/api/v2/costs/estimate?complexity=medium&tech_stack=Python&tech_stack=FastAPI",
    "/api/v2/costs?workflow_id=qlp-execution-xyz",
    "/api/v2/costs?period_days=30",
    "/api/v2/metrics",
    "/v1/usage?scope=tenant&period=daily",
    "/v1/usage?scope=tenant",
    "/v1/usage?scope=summary",
    "/api/usage/metrics/realtime",
    "/api/usage/metrics/aggregates?days=7&interval=day",
    "/api/usage/costs/by-provider?days=30",
    "/api/usage/performance/latency?days=7",
    "/api/workspaces/ws_123/costs?period=month",
    "/api/workspaces/ws_123/budget",
    "/api/workspaces/ws_123/budget/status",
    "/api/workspaces/ws_123/cost-optimization?period=month",
    "/api/workspaces/ws_123/cost-forecast",
    "/api/workspaces/ws_123/cost-stats",
    "/api/executions/exec_456/costs",
)
#: The documented writes, as the seeds' guides send them.
DOCUMENTED_POSTS: Final = (
    ("/api/workspaces/ws_123/budget", WORKSPACE_BODY),
    ("/api/projects/proj_1/budget?workspace_id=ws_123", {"monthly_budget_usd": 1000.0}),
    ("/api/llm-calls", LLM_CALL),
)


@dataclass
class Served:
    url: str
    keys: dict[str, str]
    store: Store

    def get(self, who: str | None, path: str) -> httpx.Response:
        headers = {} if who is None else {"X-API-Key": self.keys[who]}
        return httpx.get(self.url + path, headers=headers, timeout=30)

    def post(self, who: str | None, path: str, body: Any) -> httpx.Response:
        headers = {} if who is None else {"X-API-Key": self.keys[who]}
        return httpx.post(self.url + path, json=body, headers=headers, timeout=30)


@pytest.fixture
def served(tmp_path: Path, pricer: Pricer) -> Iterator[Served]:
    settings = Settings(data_dir=tmp_path / "data", port=0, grpc_port=0, snapshot_interval_seconds=3600)
    keystore = KeyStore(settings.data_dir)
    keys = {role: keystore.create(role)[1] for role in ("admin", "ingest")}
    keys["ws_123"] = keystore.create("tenant", "ws_123")[1]
    store = Store(settings.store_config())
    app = build_server_app(settings, store, keys=keystore, pricer=pricer, registry=CollectorRegistry())
    with ServerThread(app) as server:
        yield Served(server.url, keys, store)


def test_documented_calls_without_a_key_are_refused_and_change_nothing(served: Served) -> None:
    for path in DOCUMENTED_GETS:
        r = served.get(None, path)
        assert r.status_code == 401, path
        assert r.json()["success"] is False, path
    for path, body in DOCUMENTED_POSTS:
        assert served.post(None, path, body).status_code == 401, path
    assert served.store.read_records() == []
    status = served.get("ws_123", "/api/workspaces/ws_123/budget/status").json()
    assert status["has_budget"] is False  # the refused budget writes stored nothing


def test_the_same_documented_calls_with_a_key_are_answered(served: Served) -> None:
    writers = {"/api/llm-calls": "ingest"}
    for path, body in DOCUMENTED_POSTS:
        r = served.post(writers.get(path, "admin"), path, body)
        assert r.status_code in (200, 201), (path, r.text)
    for path in DOCUMENTED_GETS:
        who = "admin" if path.startswith("/v1/usage?scope=summary") else "ws_123"
        r = served.get(who, path)
        assert r.status_code == 200, (path, r.text)


def test_phase17_documented_status_example(served: Served) -> None:
    assert served.post("admin", "/api/workspaces/ws_123/budget", WORKSPACE_BODY).status_code == 200
    assert served.post("ingest", "/api/llm-calls", LLM_CALL).status_code == 201
    status = served.get("ws_123", "/api/workspaces/ws_123/budget/status").json()
    assert_shape(STATUS_EXAMPLE, status)
    assert (status["budget"], status["hard_limit"], status["alert_needed"], status["is_over_budget"]) == (
        5000.0,
        False,
        False,
        False,
    )
    assert status["spent"] > 0 and status["remaining"] == pytest.approx(5000.0 - status["spent"])


def test_phase17_minimal_project_body(served: Served) -> None:
    r = served.post("admin", "/api/projects/proj_1/budget?workspace_id=ws_123", {"monthly_budget_usd": 1000.0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["project_id"], body["monthly_budget_usd"]) == ("proj_1", 1000.0)
    assert body["alert_threshold_percent"] == 80 and body["hard_limit"] is False  # the seed's defaults


def test_usagetracker_documented_failed_call_counts_against_the_success_rate(served: Served) -> None:
    base = {"provider": "cerebras", "model": "llama3.1-8b", "endpoint": "/chat/completions"}
    base |= {"operation_type": "qualification", "user_id": "user_123", "tenant_id": "ws_123"}
    ok = base | {"prompt_tokens": 120, "completion_tokens": 40, "latency_ms": 200, "cache_hit": False, "success": True}
    failed = base | {"prompt_tokens": 0, "completion_tokens": 0, "latency_ms": 1200, "success": False}
    failed["error_message"] = "upstream timeout"
    for body in (ok, failed):
        r = served.post("ingest", "/api/usage/calls", body)
        assert r.status_code == 201, r.text
    latency = served.get("ws_123", "/api/usage/performance/latency?days=7&provider=cerebras").json()["data"]
    assert latency["success_rate_percent"] == 50.0 and latency["provider"] == "cerebras"
    realtime = served.get("ws_123", "/api/usage/metrics/realtime").json()["data"]
    assert realtime["total_requests"] == 2 and realtime["by_provider"]["cerebras"]["requests"] == 2
