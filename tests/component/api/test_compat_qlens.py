"""QLens' documented usage API, replayed against ``costspan serve``: each request of QLens' "Usage
Analytics & Cost Management" page as QLens' clients send it (``X-API-Key`` + ``X-Tenant-ID``), and
its documented response's field names and JSON types (money is a number). Also its environment:
``GLOBAL_DAILY_LIMIT`` / ``TENANT_*_LIMIT`` budgets, a bad limit stopping start-up, and
``COST_TRACKING_ENABLED=false``. See docs/compatibility.md, "QLens"."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from prometheus_client import CollectorRegistry

from costspan.pricing import Pricer, Usage
from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.api import KeyStore
from costspan.processor.serve._server import build_server_app
from costspan.processor.serve._settings import Settings
from costspan.processor.store._store import Store
from tests.support.seed_shapes import assert_shape

#: QLens' documented responses (the example values only show each field's JSON type).
TENANT_EXAMPLE: Final = {
    "tenant_id": "your-tenant-id",
    "daily_cost": 5.67,
    "monthly_cost": 156.78,
    "request_count": 234,
    "model_usage": {
        "claude-3-sonnet": {"request_count": 45, "tokens_used": 12450, "cost": 2.34, "avg_latency_ms": 850.5},
        "gpt-4": {"request_count": 30, "tokens_used": 8900, "cost": 3.33, "avg_latency_ms": 1200.2},
    },
    "budget_limit": 50.0,
    "last_updated": "2025-09-07T17:15:00Z",
}
SUMMARY_EXAMPLE: Final = {
    "daily_cost": 12.45,
    "request_count": 1247,
    "active_tenants": 42,
    "active_services": 8,
    "budget_utilization_percent": 62.3,
    "status": "healthy",
    "last_updated": "2025-09-07T17:15:00Z",
}
GLOBAL_EXAMPLE: Final = {
    "total_cost_today": 12.45,
    "request_count": 1247,
    "active_tenants": 42,
    "active_services": 8,
    "budget_utilization_percent": 62.3,
    "last_updated": "2025-09-07T17:15:00Z",
}
#: the calls of the replay: (tenant, provider, model, input tokens, output tokens, latency ms)
CALLS: Final = (
    ("acme", "aws.bedrock", "claude-3-sonnet", 1000, 500, 850.5),
    ("acme", "aws.bedrock", "claude-3-sonnet", 2000, 300, 900.0),
    ("acme", "azure", "gpt-4", 1000, 200, 1200.2),
    ("globex", "aws.bedrock", "claude-3-haiku", 4000, 1000, 400.0),
)


class Qlens:
    def __init__(self, url: str, keys: dict[str, str]) -> None:
        self.url = url
        self.keys = keys

    def get(self, key: str, path: str, tenant_header: str | None = None, **params: str) -> httpx.Response:
        headers = {"X-API-Key": self.keys[key]}
        if tenant_header is not None:
            headers["X-Tenant-ID"] = tenant_header
        return httpx.get(self.url + path, params=params, headers=headers, timeout=30)

    def post(self, key: str, path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(self.url + path, json=body, headers={"X-API-Key": self.keys[key]}, timeout=30)

    def log_calls(self) -> None:
        for n, (tenant, provider, model, inp, out, latency) in enumerate(CALLS):
            call = {"tenant_id": tenant, "provider": provider, "model": model, "prompt_tokens": inp}
            call |= {"completion_tokens": out, "latency_ms": latency, "call_id": f"qlens-{n}", "service": "router"}
            r = self.post("ingest", "/api/usage/calls", call)
            assert r.status_code == 201, r.text


@contextmanager
def serve(data: Path, pricer: Pricer, **settings: Any) -> Iterator[Qlens]:
    config = Settings(data_dir=data, port=0, **settings)
    keystore = KeyStore(data)
    keys = {role: keystore.create(role)[1] for role in ("admin", "ingest")}
    keys |= {tenant: keystore.create("tenant", tenant)[1] for tenant in ("acme", "globex")}
    app = build_server_app(
        config, Store(config.store_config()), keys=keystore, pricer=pricer, registry=CollectorRegistry()
    )
    with ServerThread(app) as running:
        yield Qlens(running.url, keys)


def _qlens_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """QLens' documented default limits."""
    for name, value in (
        ("GLOBAL_DAILY_LIMIT", "1000"),
        ("GLOBAL_MONTHLY_LIMIT", "20000"),
        ("TENANT_DAILY_LIMIT", "50"),
        ("TENANT_MONTHLY_LIMIT", "1000"),
    ):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("COST_TRACKING_ENABLED", raising=False)


def _cost(pricer: Pricer, provider: str, model: str, inp: int, out: int) -> Decimal:
    total = pricer.price_call(model, Usage(input_tokens=inp, output_tokens=out), provider=provider).total
    assert total is not None, model
    return total


@pytest.fixture(scope="module")
def qlens(tmp_path_factory: pytest.TempPathFactory, pricer: Pricer) -> Iterator[Qlens]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        _qlens_env(monkeypatch)
        with serve(tmp_path_factory.mktemp("qlens") / "data", pricer) as server:
            server.log_calls()
            yield server


def test_tenant_usage_answers_the_documented_fields_and_types(qlens: Qlens, pricer: Pricer) -> None:
    r = qlens.get("acme", "/v1/usage", "acme", scope="tenant", period="daily")
    assert r.status_code == 200, r.text
    body = r.json()
    assert_shape(TENANT_EXAMPLE, body, dynamic={"model_usage"})
    acme = [c for c in CALLS if c[0] == "acme"]
    total = sum((_cost(pricer, p, m, i, o) for _, p, m, i, o, _ in acme), Decimal(0))
    assert body["tenant_id"] == "acme" and body["request_count"] == 3
    assert body["daily_cost"] == float(total) and Decimal(body["daily_cost_exact"]) == total
    assert body["monthly_cost"] == float(total)
    assert body["budget_limit"] == 50.0  # TENANT_DAILY_LIMIT
    sonnet = body["model_usage"]["claude-3-sonnet"]
    assert (sonnet["request_count"], sonnet["tokens_used"]) == (2, 3800)
    assert sonnet["cost"] == float(Decimal("0.003") * 3 + Decimal("0.015") * Decimal("0.8"))  # QLens' price table
    assert sonnet["avg_latency_ms"] == pytest.approx((850.5 + 900.0) / 2)
    assert set(body["model_usage"]) == {"claude-3-sonnet", "gpt-4"}
    assert body["last_updated"].endswith("Z")


def test_the_check_current_usage_example_defaults_to_today(qlens: Qlens) -> None:
    daily = qlens.get("acme", "/v1/usage", "acme", scope="tenant").json()
    assert daily["period"] == "daily" and daily["request_count"] == 3
    assert_shape(TENANT_EXAMPLE, daily, dynamic={"model_usage"})


def test_an_admin_key_reads_a_tenant_named_by_x_tenant_id(qlens: Qlens) -> None:
    body = qlens.get("admin", "/v1/usage", "globex", scope="tenant").json()
    assert (body["tenant_id"], body["request_count"], set(body["model_usage"])) == ("globex", 1, {"claude-3-haiku"})


def test_summary_answers_the_documented_fields_and_types(qlens: Qlens) -> None:
    r = qlens.get("acme", "/v1/usage", "acme", scope="summary")
    assert r.status_code == 200, r.text
    body = r.json()
    assert_shape(SUMMARY_EXAMPLE, body)
    assert (body["request_count"], body["active_tenants"], body["active_services"]) == (3, 1, 1)
    assert body["status"] == "healthy"
    expected = round(body["daily_cost"] / 50 * 100, 2)  # of TENANT_DAILY_LIMIT
    assert body["budget_utilization_percent"] == pytest.approx(expected, abs=0.01)


def test_the_documented_global_request_answers_every_tenant(qlens: Qlens, pricer: Pricer) -> None:
    r = qlens.get("admin", "/v1/usage", "admin-tenant", scope="global")  # QLens' own example, headers and all
    assert r.status_code == 200, r.text
    body = r.json()
    assert_shape(GLOBAL_EXAMPLE, body)
    total = sum((_cost(pricer, p, m, i, o) for _, p, m, i, o, _ in CALLS), Decimal(0))
    assert body["total_cost_today"] == float(total) and Decimal(body["total_cost_today_exact"]) == total
    assert (body["request_count"], body["active_tenants"], body["active_services"]) == (4, 2, 1)
    assert body["budget_utilization_percent"] == pytest.approx(round(float(total) / 1000 * 100, 2))
    # the same without the header, and with the header naming a tenant: still every tenant
    assert qlens.get("admin", "/v1/usage", scope="global").json()["request_count"] == 4
    assert qlens.get("admin", "/v1/usage", "acme", scope="global").json()["request_count"] == 4


@pytest.mark.parametrize(
    ("key", "header", "params", "status"),
    [
        ("acme", "acme", {"scope": "global"}, 403),  # global statistics need admin permissions
        ("acme", None, {"scope": "global"}, 403),
        ("acme", "globex", {"scope": "tenant"}, 403),  # tenant isolation
        ("acme", "globex", {"scope": "summary"}, 403),
        ("admin", None, {"scope": "global", "tenant_id": "acme"}, 400),  # global covers every tenant
        ("admin", "acme", {"scope": "tenant", "tenant_id": "globex"}, 400),  # header and parameter disagree
        ("admin", None, {"scope": "tenant"}, 400),  # which tenant?
    ],
)
def test_the_walls_around_the_scopes(
    qlens: Qlens, key: str, header: str | None, params: dict[str, str], status: int
) -> None:
    r = qlens.get(key, "/v1/usage", header, **params)
    assert r.status_code == status, r.text
    assert "globex" not in r.text or key == "admin"


def test_health_answers_status_and_timestamp(qlens: Qlens) -> None:
    body = httpx.get(qlens.url + "/health").json()
    assert_shape({"status": "healthy", "timestamp": "2025-09-07T17:15:00Z"}, body)


def test_tracking_off_prices_records_and_enforces_nothing(
    tmp_path: Path, pricer: Pricer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _qlens_env(monkeypatch)
    monkeypatch.setenv("TENANT_DAILY_LIMIT", "0")  # would block every call while tracking is on
    monkeypatch.setenv("COST_TRACKING_ENABLED", "false")
    with serve(tmp_path / "data", pricer) as server:
        _assert_untracked(server)


def test_tracking_off_is_a_serve_setting_too(tmp_path: Path, pricer: Pricer, monkeypatch: pytest.MonkeyPatch) -> None:
    _qlens_env(monkeypatch)
    monkeypatch.setenv("TENANT_DAILY_LIMIT", "0")
    with serve(tmp_path / "data", pricer, cost_tracking_enabled=False) as server:
        _assert_untracked(server)
    monkeypatch.setenv("COSTSPAN_COST_TRACKING_ENABLED", "false")
    assert Settings().cost_tracking_enabled is False


def _assert_untracked(server: Qlens) -> None:
    call = {"tenant_id": "acme", "provider": "aws.bedrock", "model": "claude-3-sonnet", "prompt_tokens": 10}
    r = server.post("ingest", "/api/usage/calls", call | {"completion_tokens": 5})
    assert r.status_code == 201 and r.json()["stored"] is False and r.json()["cost_status"] == "untracked", r.text
    _export_span(server)
    check = {"tenant": "acme", "provider": "openai", "model": "gpt-4o", "input_tokens": 10, "max_tokens": 10}
    r = server.post("ingest", "/v1/budgets/check", check)
    assert r.status_code == 200 and r.json()["allowed"] is True, r.text
    usage = server.get("acme", "/v1/usage", "acme", scope="tenant").json()
    assert (usage["request_count"], usage["daily_cost"], usage["model_usage"]) == (0, 0.0, {})
    assert server.get("admin", "/v1/usage", "admin-tenant", scope="global").json()["request_count"] == 0
    compute = {"workspace_id": "acme", "resource_type": "cpu", "amount": "1", "duration_seconds": "3600"}
    r = server.post("ingest", "/api/resources/usage", compute)
    assert r.status_code == 201 and r.json()["stored"] is False, r.text
    assert server.get("acme", "/api/v2/metrics").json()["data"]["costs"]["compute_hours"] == 0.0


def _export_span(server: Qlens) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "router"}))
    exporter = OTLPSpanExporter(endpoint=server.url + "/v1/traces", headers={"x-api-key": server.keys["ingest"]})
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    attributes = {"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o", "costspan.tenant.id": "acme"}
    with provider.get_tracer("qlens").start_as_current_span(
        "chat", attributes=attributes | {"gen_ai.usage.input_tokens": 9}
    ):
        pass
    provider.shutdown()


@pytest.mark.parametrize(
    ("name", "value"),
    [("GLOBAL_DAILY_LIMIT", "1k"), ("TENANT_DAILY_LIMIT", "-5"), ("TENANT_MONTHLY_LIMIT", "NaN")],
)
def test_a_bad_limit_stops_costspan_serve_naming_the_variable_and_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, value: str
) -> None:
    import argparse

    from costspan.processor.serve._serve_cli import add_serve_command, run_serve

    _qlens_env(monkeypatch)
    monkeypatch.setenv(name, value)
    monkeypatch.setenv("COSTSPAN_ADMIN_KEY", "qlens-admin-key-0123456789")
    parser = argparse.ArgumentParser(prog="costspan")
    add_serve_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", "--data-dir", str(tmp_path / "data"), "--port", "0", "--grpc-port", "0"])
    assert run_serve(args) == 2
    err = capsys.readouterr().err
    assert f"{name}={value!r} is not a limit: expected an amount in USD" in err, err
    assert "decimal" not in err.lower() and "<class" not in err
