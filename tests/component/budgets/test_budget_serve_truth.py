"""Budget truth through ``costspan serve``: calls over ``POST /api/usage/calls`` and OTLP, budgets from
the environment and the API, and every route that shows a budget status telling the same one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

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

DAY = 86400
SPAN: dict[str, str | int] = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.usage.input_tokens": 1000,
    "gen_ai.usage.output_tokens": 200,
    "costspan.tenant.id": "acme",
}


class Server:
    def __init__(self, url: str, keys: dict[str, str]) -> None:
        self.url = url
        self.keys = keys

    def call(self, who: str, method: str, path: str, body: Any = None, **params: str) -> Any:
        r = httpx.request(method, self.url + path, json=body, params=params, headers={"X-API-Key": self.keys[who]})
        assert r.status_code < 300, (r.status_code, r.text)
        return r.json()

    def post_call(self, prompt_tokens: int, **fields: Any) -> None:
        body = {"tenant_id": "acme", "provider": "openai", "model": "gpt-4o", "completion_tokens": 0, **fields}
        self.call("ingest", "POST", "/api/usage/calls", {**body, "prompt_tokens": prompt_tokens})

    def export(self, starts_s: list[float]) -> None:
        """Spans through the real SDK's OTLP/HTTP exporter, each started at the given time."""
        provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
        exporter = OTLPSpanExporter(endpoint=self.url + "/v1/traces", headers={"x-api-key": self.keys["ingest"]})
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("test")
        for start in starts_s:
            span = tracer.start_span("chat gpt-4o", start_time=int(start * 1e9), attributes=SPAN)
            span.end(end_time=int(start * 1e9) + 100_000_000)
        provider.shutdown()

    def budget_rows(self) -> dict[tuple[str, str], tuple[Decimal, str]]:
        rows = self.call("admin", "GET", "/v1/budgets/status")
        return {(r["budget_id"], r["scope"].get("tenant", "")): (Decimal(r["spent"]), r["status"]) for r in rows}


@contextmanager
def serve(data: Path, pricer: Pricer) -> Iterator[Server]:
    settings = Settings(data_dir=data, port=0)
    keystore = KeyStore(data)
    keys = {role: keystore.create(role)[1] for role in ("admin", "ingest")}
    keys["acme"] = keystore.create("tenant", "acme")[1]
    app = build_server_app(
        settings, Store(settings.store_config()), keys=keystore, pricer=pricer, registry=CollectorRegistry()
    )
    with ServerThread(app) as running:
        yield Server(running.url, keys)


def _price(pricer: Pricer, input_tokens: int, output_tokens: int = 0) -> Decimal:
    total = pricer.price_call(
        "gpt-4o", Usage(input_tokens=input_tokens, output_tokens=output_tokens), provider="openai"
    )
    assert total.total is not None
    return total.total


def test_every_route_shows_one_status_at_90_percent_and_past_the_limit(
    tmp_path: Path, pricer: Pricer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TENANT_DAILY_LIMIT", "0.01")
    assert _price(pricer, 3600) == Decimal("0.009")  # exactly 90 % of the limit
    with serve(tmp_path / "data", pricer) as server:
        server.post_call(3600)

        def statuses() -> list[str]:
            summary = server.call("acme", "GET", "/v1/usage", scope="summary")
            workspace = server.call("acme", "GET", "/api/workspaces/acme/budget/status")
            ((_, budgets),) = server.budget_rows().items()
            return [summary["status"], workspace["status"], workspace["daily"]["status"], budgets[1]]

        assert statuses() == ["warning"] * 4
        assert server.call("acme", "GET", "/v1/usage", scope="summary")["budget_utilization_percent"] == 90.0
        workspace = server.call("acme", "GET", "/api/workspaces/acme/budget/status")
        assert (workspace["budget_id"], workspace["daily"]["budget_id"], workspace["monthly"]) == (
            "env-tenant-daily",
            "env-tenant-daily",
            None,
        )
        assert Decimal(server.call("acme", "GET", "/v1/usage")["budget_limit_exact"]) == Decimal("0.01")

        server.post_call(480)  # 0.0012 more: 102 %
        assert statuses() == ["blocked"] * 4
        assert server.call("acme", "GET", "/v1/usage", scope="summary")["budget_utilization_percent"] == 102.0
        check = httpx.post(
            server.url + "/v1/budgets/check",
            json={"tenant": "acme", "provider": "openai", "model": "gpt-4o", "input_tokens": 10, "max_tokens": 10},
            headers={"X-API-Key": server.keys["ingest"]},
        )
        assert check.status_code == 429 and check.json()["budget_id"] == "env-tenant-daily"


def test_usage_shows_the_strictest_budget_of_the_period_asked_for(tmp_path: Path, pricer: Pricer) -> None:
    with serve(tmp_path / "data", pricer) as server:
        for budget in (
            {"id": "acme-day", "scope": {"tenant": "acme"}, "period": "day", "limit": "1"},
            {"id": "all-day", "period": "day", "limit": "0.0125"},
            {"id": "acme-month", "scope": {"tenant": "acme"}, "period": "month", "limit": "5"},
        ):
            server.call("admin", "POST", "/v1/budgets", budget)
        server.post_call(3600)  # 0.009: 0.9 % of acme-day, 72 % of all-day, 0.18 % of acme-month
        daily = server.call("acme", "GET", "/v1/usage")
        monthly = server.call("acme", "GET", "/v1/usage", period="monthly")
        assert (Decimal(daily["budget_limit_exact"]), Decimal(monthly["budget_limit_exact"])) == (
            Decimal("0.0125"),
            Decimal(5),
        )
        summary = server.call("acme", "GET", "/v1/usage", scope="summary")
        assert (summary["budget_utilization_percent"], summary["status"]) == (72.0, "healthy")
        summary = server.call("acme", "GET", "/v1/usage", scope="summary", period="monthly")
        assert (summary["budget_utilization_percent"], summary["status"]) == (0.18, "healthy")
        everyone = server.call("admin", "GET", "/v1/usage", scope="global")
        assert everyone["budget_utilization_percent"] == 72.0


def test_old_calls_miss_todays_budget_and_a_new_budget_starts_from_the_stored_spend_once(
    tmp_path: Path, pricer: Pricer, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    if time.time() % DAY > DAY - 60:  # "today" must hold for the whole test
        time.sleep(DAY - time.time() % DAY + 1)
    now = time.time()
    span_cost = _price(pricer, 1000, 200)
    with serve(data, pricer) as server:
        server.export([now - 5, now - 1, now - 2 * DAY])  # two today (OTLP), one two days ago
        server.post_call(100, timestamp="2020-06-01T12:00:00Z")
        server.post_call(100, call_id="yesterday", timestamp=_iso(now - DAY))
        server.call(
            "admin",
            "POST",
            "/v1/budgets",
            {"id": "acme-day", "scope": {"tenant": "acme"}, "period": "day", "limit": "10"},
        )
        assert server.budget_rows() == {("acme-day", "acme"): (2 * span_cost, "healthy")}
        server.post_call(100, call_id="two-days-ago", timestamp=_iso(now - 2 * DAY))  # settled after: not today
        assert server.budget_rows() == {("acme-day", "acme"): (2 * span_cost, "healthy")}

    monkeypatch.setenv("TENANT_DAILY_LIMIT", "10")
    expected = {
        ("acme-day", "acme"): (2 * span_cost, "healthy"),
        ("env-tenant-daily", "acme"): (2 * span_cost, "healthy"),
    }
    with serve(data, pricer) as server:  # the environment's budget is new: it starts from today's stored spend
        assert server.budget_rows() == expected
    with serve(data, pricer) as server:  # the same budgets again: nothing counted twice
        assert server.budget_rows() == expected
        server.export([time.time()])
        assert server.budget_rows() == {key: (spent + span_cost, state) for key, (spent, state) in expected.items()}


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()
