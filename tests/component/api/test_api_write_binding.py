"""A key's tenant binding on every write path of the whole ``costspan serve`` app.

An ingest key bound to acme may only write acme's data: OTLP spans naming another tenant (span or
resource attribute) are refused in the partial success and never stored, spans naming none are acme's;
JSON write routes naming another tenant answer 403 and write nothing. Ids made through the write
routes (resource usage entries, workspace budgets) are per tenant.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from costspan.pricing import Pricer
from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.api import KeyStore
from costspan.processor.api._keys import Principal
from costspan.processor.api._resources import ResourceLog
from costspan.processor.serve._server import build_server_app
from costspan.processor.serve._settings import Settings
from costspan.processor.store._store import Store
from tests.support.otlp_receiver import OtlpReceiver

CALL = {"provider": "openai", "model": "gpt-4o", "prompt_tokens": 1000, "completion_tokens": 100}
USAGE = {"resource_type": "cpu", "amount": "2", "duration_seconds": "3600"}
LLM_CALL = {"provider": "openai", "model": "gpt-4o", "tokens_prompt": 1000, "tokens_completion": 100}
SEED = {"daily_limit": "5"}
DEFAULT_TENANT = "default-co"


@dataclass
class Server:
    url: str
    store: Store
    keys: dict[str, str]  # admin, acme, globex, ingest, ingest_acme
    data_dir: Path

    def call(self, who: str | None, method: str, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        headers = {**kw.pop("headers", {}), **({} if who is None else {"X-API-Key": self.keys[who]})}
        return httpx.request(method, self.url + path, json=body, headers=headers, timeout=30, **kw)

    def stored(self) -> list[dict[str, Any]]:
        """Every stored call, read back through the API with the admin key."""
        r = self.call("admin", "GET", "/api/usage/export", params={"format": "json"})
        assert r.status_code == 200, r.text
        rows: list[dict[str, Any]] = r.json()
        return rows


ServerFactory = Callable[..., AbstractContextManager[Server]]


@pytest.fixture
def serve(tmp_path: Path, pricer: Pricer) -> ServerFactory:
    """``with serve(ingest_workers=1) as server``: the full app (budgets, usage API) with keys per role."""

    @contextmanager
    def factory(**overrides: Any) -> Iterator[Server]:
        data = tmp_path / "data"
        settings = Settings(data_dir=data, port=0, default_tenant=DEFAULT_TENANT, **overrides)
        keystore = KeyStore(data)
        keys = {
            "admin": keystore.create("admin")[1],
            "acme": keystore.create("tenant", "acme")[1],
            "globex": keystore.create("tenant", "globex")[1],
            "ingest": keystore.create("ingest")[1],
            "ingest_acme": keystore.create("ingest", "acme")[1],
        }
        store = Store(settings.store_config())
        # ingest worker processes price with the default pricer: a custom one keeps ingest inline
        chosen = None if settings.ingest_workers else pricer
        app = build_server_app(settings, store, keys=keystore, pricer=chosen, registry=CollectorRegistry())
        with ServerThread(app) as running:
            yield Server(running.url, store, keys, data)

    return factory


def _call_attrs(user: str, tenant: str | None = None) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 100,
        "costspan.user.id": user,
    }
    if tenant is not None:
        attrs["costspan.tenant.id"] = tenant
    return attrs


def _finished_spans() -> list[ReadableSpan]:
    """Spans of two services, made by the real SDK: each user id says whose call it is meant to be.

    checkout (no resource tenant): u-own (span: acme), u-other (span: globex), u-none (no tenant), and
    a plain span; billing (resource tenant globex): u-res (no span tenant), u-span-wins (span: acme).
    """
    spans: list[ReadableSpan] = []
    for resource, calls in (
        ({"service.name": "checkout"}, [("u-own", "acme"), ("u-other", "globex"), ("u-none", None)]),
        ({"service.name": "billing", "costspan.tenant.id": "globex"}, [("u-res", None), ("u-span-wins", "acme")]),
    ):
        memory = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create(resource))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        tracer = provider.get_tracer("test")
        for user, tenant in calls:
            with tracer.start_as_current_span("chat gpt-4o", attributes=_call_attrs(user, tenant)):
                pass
        with tracer.start_as_current_span("plain work"):
            pass
        spans += memory.get_finished_spans()
        provider.shutdown()
    return spans


def _export_once(url: str, key: str) -> ExportTraceServiceResponse:
    """All spans in ONE export through the real SDK's OTLP/HTTP exporter; returns the server's answer."""
    answers: list[requests.Response] = []
    session = requests.Session()
    session.hooks["response"].append(lambda response, *args, **kwargs: answers.append(response))
    exporter = OTLPSpanExporter(endpoint=url + "/v1/traces", headers={"x-api-key": key}, session=session)
    assert exporter.export(_finished_spans()) is SpanExportResult.SUCCESS
    session.close()
    (answer,) = answers
    assert answer.status_code == 200
    return ExportTraceServiceResponse.FromString(answer.content)


def _by_user(rows: list[dict[str, Any]]) -> dict[str, str]:
    return {row["user_id"]: row["tenant_id"] for row in rows}


@pytest.mark.parametrize("workers", [0, 1], ids=["inline", "ingest-worker"])
def test_a_bound_ingest_key_sends_only_its_tenants_spans(serve: ServerFactory, workers: int) -> None:
    with serve(ingest_workers=workers) as server:
        answer = _export_once(server.url, server.keys["ingest_acme"])
        assert answer.partial_success.rejected_spans == 2
        message = answer.partial_success.error_message
        assert "2 span(s) name a tenant other than 'acme'" in message
        # refused: globex named by the span, and by the resource; no tenant → the key's, not the default
        assert _by_user(server.stored()) == {"u-own": "acme", "u-none": "acme", "u-span-wins": "acme"}
        counters, _ = server.store.counts()
        assert counters.get("rejected_tenant") == 2
        assert counters.get("rejected_invalid_span", 0) == 0
        metrics = server.call("admin", "GET", "/metrics").text
        assert 'costspan_ingest_rejected_spans_total{reason="tenant"} 2.0' in metrics
        # globex has nothing, read with its own key
        usage = server.call("globex", "GET", "/v1/usage", params={"scope": "tenant"})
        assert usage.status_code == 200 and "u-other" not in usage.text
        assert server.call("admin", "GET", "/api/workspaces/globex/cost-stats").json()["request_count"] == 0


def test_unbound_ingest_keys_send_for_any_tenant(serve: ServerFactory) -> None:
    with serve() as server:
        answer = _export_once(server.url, server.keys["ingest"])
        assert answer.partial_success.rejected_spans == 0
        assert _by_user(server.stored()) == {
            "u-own": "acme",
            "u-other": "globex",
            "u-none": DEFAULT_TENANT,
            "u-res": "globex",
            "u-span-wins": "acme",
        }
        assert server.store.counts()[0].get("rejected_tenant", 0) == 0


def test_spans_refused_for_their_tenant_are_not_forwarded(serve: ServerFactory) -> None:
    with OtlpReceiver() as sink, serve(forward_endpoint=sink.endpoint + "/v1/traces") as server:
        _export_once(server.url, server.keys["ingest_acme"])
        deadline = time.monotonic() + 10
        while len(sink.spans) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # anything more that was wrongly forwarded has arrived by now
        # billing's plain span names globex through its resource: not acme's to send either
        forwarded = sorted(
            (span.resource["service.name"], span.name, span.attributes.get("costspan.user.id", ""))
            for span in sink.spans
        )
        assert forwarded == [
            ("billing", "chat gpt-4o", "u-span-wins"),
            ("checkout", "chat gpt-4o", "u-none"),
            ("checkout", "chat gpt-4o", "u-own"),
            ("checkout", "plain work", ""),
        ]
        tenants = {span.attributes.get("costspan.tenant.id") for span in sink.spans if span.name != "plain work"}
        assert tenants == {"acme"}


#: Every write route of the spec but the reservation routes (check, settle, release: bound to the
#: reservation's tenant elsewhere) → the request a key bound to acme makes when it names globex.
WRITES: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
    ("post", "/api/usage/calls"): ("/api/usage/calls", {"json": {**CALL, "tenant_id": "globex"}}),
    ("post", "/api/resources/usage"): ("/api/resources/usage", {"json": {**USAGE, "workspace_id": "globex"}}),
    ("post", "/api/llm-calls"): ("/api/llm-calls", {"json": {**LLM_CALL, "workspace_id": "globex"}}),
    ("post", "/v1/budgets"): (
        "/v1/budgets",
        {"json": {"id": "g-daily", "scope": {"tenant": "globex"}, "period": "day", "limit": "1"}},
    ),
    ("put", "/v1/budgets/{budget_id}"): (
        "/v1/budgets/g-daily",
        {"json": {"scope": {"tenant": "globex"}, "period": "day", "limit": "1"}},
    ),
    ("delete", "/v1/budgets/{budget_id}"): ("/v1/budgets/globex-kept", {}),
    ("post", "/api/workspaces/{workspace_id}/budget"): ("/api/workspaces/globex/budget", {"json": SEED}),
    ("post", "/api/projects/{project_id}/budget"): (
        "/api/projects/p1/budget",
        {"json": SEED, "params": {"workspace_id": "globex"}},
    ),
    # admin only: a bound key may neither reprice another tenant's calls nor reload the catalog
    ("post", "/v1/reprice"): ("/v1/reprice", {"json": {"since": "7d", "tenant": "globex"}}),
    ("post", "/v1/pricing/reload"): ("/v1/pricing/reload", {}),
    # admin (peer) only: a bound key may not ask for a spend lease, whatever the tenant
    ("post", "/v1/leases"): (
        "/v1/leases",
        {"json": {"budget_id": "g-daily", "key": "g-daily|globex", "start": 0, "shard": "http://x", "spent": "0"}},
    ),
}
RESERVATIONS = {"/v1/budgets/check", "/v1/budgets/settle", "/v1/budgets/reservations/{reservation_id}/release"}


def test_every_write_route_refuses_a_bound_key_naming_another_tenant(serve: ServerFactory) -> None:
    with serve() as server:
        spec = server.call("admin", "GET", "/openapi.json").json()
        writes = {
            (method, path)
            for path, item in spec["paths"].items()
            for method in item
            if method in ("post", "put", "patch", "delete") and path not in RESERVATIONS
        }
        assert writes == set(WRITES), "a write route without a tenant-binding case: add it to WRITES"
        kept = {"id": "globex-kept", "scope": {"tenant": "globex"}, "period": "month", "limit": "9"}
        assert server.call("admin", "POST", "/v1/budgets", kept).status_code == 201
        for who in ("ingest_acme", "acme"):
            for (method, _), (path, kw) in WRITES.items():
                r = server.call(who, method.upper(), path, kw.get("json"), params=kw.get("params"))
                assert r.status_code == 403, (who, method, path, r.text)
            # naming globex in X-Tenant-ID instead of the body is refused the same way
            r = server.call(who, "POST", "/api/usage/calls", CALL, headers={"X-Tenant-ID": "globex"})
            assert r.status_code == 403, r.text
        # nothing was written: no call, no compute, the budgets as they were
        assert server.stored() == []
        costs = server.call("admin", "GET", "/api/workspaces/globex/costs").json()
        assert costs["compute_cost_exact"] == "0.00000000" and costs["request_count"] == 0
        budgets = server.call("admin", "GET", "/v1/budgets").json()
        assert [(b["id"], b["limit"]) for b in budgets] == [("globex-kept", "9")]
        # the same writes for the key's own tenant go through
        assert server.call("ingest_acme", "POST", "/api/usage/calls", {**CALL, "tenant_id": "acme"}).status_code == 201
        r = server.call("ingest_acme", "POST", "/api/resources/usage", USAGE)
        assert r.status_code == 201 and r.json()["workspace_id"] == "acme"


def test_x_tenant_id_names_the_tenant_of_an_unbound_write(serve: ServerFactory) -> None:
    with serve() as server:
        r = server.call("ingest", "POST", "/api/usage/calls", CALL, headers={"X-Tenant-ID": "globex"})
        assert r.status_code == 201 and r.json()["tenant_id"] == "globex"
        r = server.call(
            "ingest", "POST", "/api/usage/calls", {**CALL, "tenant_id": "acme"}, headers={"X-Tenant-ID": "globex"}
        )
        assert r.status_code == 400 and r.json()["detail"] == "the body's tenant and X-Tenant-ID disagree"
        r = server.call("ingest", "POST", "/api/resources/usage", USAGE, headers={"X-Tenant-ID": "globex"})
        assert r.status_code == 201 and r.json()["workspace_id"] == "globex"
        assert [row["tenant_id"] for row in server.stored()] == ["globex"]


def test_resource_usage_ids_are_per_tenant(serve: ServerFactory) -> None:
    with serve() as server:
        first = server.call("ingest_acme", "POST", "/api/resources/usage", {**USAGE, "id": "job-1"})
        assert first.status_code == 201 and first.json()["stored"] is True
        # globex's job-1 is its own, not a duplicate of acme's
        other = server.call(
            "ingest", "POST", "/api/resources/usage", {**USAGE, "id": "job-1", "workspace_id": "globex"}
        )
        assert other.status_code == 201 and other.json()["stored"] is True
        again = server.call("ingest_acme", "POST", "/api/resources/usage", {**USAGE, "id": "job-1"})
        assert again.status_code == 201 and again.json()["stored"] is False
        expected = Decimal(first.json()["cost_usd_exact"]).quantize(Decimal("0.00000001"))
        assert expected > 0
        for tenant in ("acme", "globex"):
            costs = server.call(tenant, "GET", f"/api/workspaces/{tenant}/costs").json()
            assert Decimal(costs["compute_cost_exact"]) == expected, costs
        # an execution id is the tenant's too: globex's run-7 is not acme's to read
        run = {**USAGE, "execution_id": "run-7", "workspace_id": "globex"}
        assert server.call("ingest", "POST", "/api/resources/usage", run).status_code == 201
        assert server.call("acme", "GET", "/api/executions/run-7/costs").status_code == 404
        assert Decimal(server.call("globex", "GET", "/api/executions/run-7/costs").json()["compute_cost"]) > 0
    # read back from disk, each tenant keeps its own job-1
    log = ResourceLog(server.data_dir / "resources")
    log.load()
    assert {(tenant, entry) for tenant, entry in log.ids if entry == "job-1"} == {
        ("acme", "job-1"),
        ("globex", "job-1"),
    }


def test_workspace_budget_ids_are_per_workspace_and_project(serve: ServerFactory) -> None:
    with serve() as server:
        # project b of workspace a, and workspace "a-p-b": one id each (before, both were ws-a-p-b-daily)
        r = server.call("admin", "POST", "/api/projects/b/budget", {"daily_limit": "5"}, params={"workspace_id": "a"})
        assert r.status_code == 200 and r.json()["daily_limit"] == "5"
        r = server.call("admin", "POST", "/api/workspaces/a-p-b/budget", {"daily_limit": "7"})
        assert r.status_code == 200 and r.json()["daily_limit"] == "7"
        budgets = {b["id"]: (b["scope"], b["limit"]) for b in server.call("admin", "GET", "/v1/budgets").json()}
        assert budgets == {
            "ws-a-p-b-daily": ({"tenant": "a", "project": "b"}, "5"),
            "ws-a--p--b-daily": ({"tenant": "a-p-b"}, "7"),
        }
        # clearing the workspace's budget leaves the project's alone
        r = server.call("admin", "POST", "/api/workspaces/a-p-b/budget", {"daily_limit": None})
        assert r.status_code == 200 and r.json()["daily_limit"] is None
        assert [b["id"] for b in server.call("admin", "GET", "/v1/budgets").json()] == ["ws-a-p-b-daily"]


def test_a_budget_of_another_scope_under_a_workspace_id_is_not_the_workspaces(serve: ServerFactory) -> None:
    with serve() as server:
        claim = {"id": "ws-globex-daily", "scope": {"tenant": "acme"}, "period": "day", "limit": "10"}
        assert server.call("admin", "POST", "/v1/budgets", claim).status_code == 201
        # globex's key does not see acme's budget as its own
        view = server.call("globex", "GET", "/api/workspaces/globex/budget").json()
        assert view["daily_limit"] is None
        status = server.call("globex", "GET", "/api/workspaces/globex/budget/status").json()
        assert status["daily"] is None and status["status"] == "healthy"
        # the workspace route neither re-scopes nor deletes it
        r = server.call("admin", "POST", "/api/workspaces/globex/budget", {"daily_limit": "3"})
        assert r.status_code == 409 and "ws-globex-daily" in r.json()["detail"]
        r = server.call("admin", "POST", "/api/workspaces/globex/budget", {"daily_limit": None, "monthly_limit": None})
        assert r.status_code == 409
        kept = server.call("admin", "GET", "/v1/budgets/ws-globex-daily").json()
        assert (kept["scope"], kept["limit"]) == ({"tenant": "acme"}, "10")


def test_a_workspace_budget_stored_under_an_earlier_id_is_still_the_workspaces(serve: ServerFactory) -> None:
    """Budgets written before ids were escaped (``-`` not doubled) are found and updated in place."""
    with serve() as server:
        earlier = {"id": "ws-team-1-daily", "scope": {"tenant": "team-1"}, "period": "day", "limit": "4"}
        assert server.call("admin", "POST", "/v1/budgets", earlier).status_code == 201
        assert server.call("admin", "GET", "/api/workspaces/team-1/budget").json()["daily_limit"] == "4"
        r = server.call("admin", "POST", "/api/workspaces/team-1/budget", {"daily_limit": "6"})
        assert r.status_code == 200 and r.json()["daily_limit"] == "6"
        budgets = server.call("admin", "GET", "/v1/budgets").json()
        assert [(b["id"], b["limit"]) for b in budgets] == [("ws-team-1-daily", "6")]
        status = server.call("admin", "GET", "/api/workspaces/team-1/budget/status").json()
        assert status["daily"]["budget_id"] == "ws-team-1-daily", status


class _StashPrincipal:
    """An edge middleware that has already verified the caller: it leaves the principal in the scope."""

    def __init__(self, app: Any, principal: Principal) -> None:
        self.app = app
        self.principal = principal

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})["principal"] = self.principal
        await self.app(scope, receive, send)


def test_the_principal_left_in_the_scope_by_the_edge_binds_the_export(tmp_path: Path, pricer: Pricer) -> None:
    settings = Settings(data_dir=tmp_path / "data", port=0, default_tenant=DEFAULT_TENANT)
    store = Store(settings.store_config())
    app = build_server_app(settings, store, insecure_no_auth=True, pricer=pricer, registry=CollectorRegistry())
    app.add_middleware(_StashPrincipal, principal=Principal("edge-verified", "ingest", "acme"))
    with ServerThread(app) as running:
        answer = _export_once(running.url, "not-checked-again")
        assert answer.partial_success.rejected_spans == 2
        server = Server(running.url, store, {"admin": "unused"}, tmp_path)
        assert _by_user(server.stored()) == {"u-own": "acme", "u-none": "acme", "u-span-wins": "acme"}
