"""A call a budget refuses is its own outcome, end to end: the real openai and anthropic SDKs against the
fake provider, an in-app hard budget, costspan's spans exported over OTLP to the server, then the
ledger, the usage API's aggregates, the call export and /metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from costspan.instrumentation import BudgetExceededError, CostspanInstrumentor, attribute
from costspan.instrumentation import attributes as attr
from costspan.instrumentation._tokens import TokenCounter
from costspan.pricing import Pricer
from costspan.processor.budgets import BudgetBook, CostEstimator, budget_guard
from costspan.processor.store import CallRecord
from costspan.processor.store._records import record_from_json, record_to_json
from tests.component.api.conftest import Api
from tests.support.fake_provider import FakeProvider, FakeUsage
from tests.support.records import call_record

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> TokenCounter:
    counter = TokenCounter("o200k_base", directory=tmp_path_factory.mktemp("tiktoken"))
    counter.start_loading()
    assert counter.loaded.wait(60)
    return counter


@dataclass
class App:
    """An app instrumented by costspan with an enforcing in-app budget, exporting to the server."""

    tracer_provider: TracerProvider
    spans: InMemorySpanExporter
    fake: FakeProvider

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.fake.url("/v1"), api_key="k", max_retries=0)

    def anthropic(self) -> anthropic.Anthropic:  # with the SDK's own spans: costspan enriches them
        return anthropic.Anthropic(
            base_url=self.fake.url(),
            api_key="k",
            max_retries=0,
            open_telemetry={"tracer_provider": self.tracer_provider},
        )


@pytest.fixture
def app(api: Api, pricer: Pricer, tokens: TokenCounter, tmp_path: Path) -> Iterator[App]:
    book = BudgetBook(estimator=CostEstimator(pricer), data_dir=tmp_path / "budgets", fsync="never")
    book.put_budget({"id": "acme-stop", "scope": {"tenant": "acme"}, "period": "day", "limit": "0"})  # hard
    spans = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    tp.add_span_processor(SimpleSpanProcessor(spans))
    exporter = OTLPSpanExporter(endpoint=api.url + "/v1/traces", headers={"x-api-key": api.keys["ingest"]})
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    inst = CostspanInstrumentor()
    inst.instrument(
        tracer_provider=tp, pricer=pricer, token_counter=tokens, pre_send_hooks=[budget_guard(book, service="checkout")]
    )
    try:
        with FakeProvider(FakeUsage(input=1000, output=50)) as fake:
            yield App(tp, spans, fake)
    finally:
        inst.uninstrument()
        tp.shutdown()
        book.close()


def _calls(app: App) -> None:
    """One allowed and one blocked call on each path (openai: costspan's span; anthropic: the SDK's span)."""
    with app.openai() as oc, app.anthropic() as ac:
        for tenant in ("beta", "acme"):
            with attribute(tenant=tenant):
                if tenant == "acme":
                    with pytest.raises(BudgetExceededError) as refused:
                        oc.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=50)
                    assert refused.value.budget_id == "acme-stop"
                    with pytest.raises(BudgetExceededError):
                        ac.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=MESSAGES)
                else:
                    oc.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=50)
                    ac.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=MESSAGES)


def _call_spans(app: App) -> list[ReadableSpan]:
    return [s for s in app.spans.get_finished_spans() if attr.GEN_AI_OPERATION_NAME in (s.attributes or {})]


def _records(api: Api) -> dict[tuple[str, str], CallRecord]:
    out: dict[tuple[str, str], CallRecord] = {}
    for r in api.store.read_records():
        assert (r.tenant, r.provider) not in out, "two records of one call"
        out[r.tenant, r.provider] = r
    return out


def test_blocked_calls_are_their_own_outcome_from_span_to_aggregates(api: Api, app: App) -> None:
    _calls(app)
    assert len(app.fake.requests) == 2  # the blocked calls never left the app

    # the spans: one per call (anthropic's own span enriched, not doubled), blocked ones say so
    spans = _call_spans(app)
    assert sorted(s.name for s in spans) == sorted(["chat gpt-4o-mini", "anthropic.messages.create"] * 2)
    outcome = {((s.attributes or {})[attr.TENANT_ID], s.name): (s.attributes or {})[attr.CALL_OUTCOME] for s in spans}
    assert outcome == {
        ("beta", "chat gpt-4o-mini"): "ok",
        ("beta", "anthropic.messages.create"): "ok",
        ("acme", "chat gpt-4o-mini"): "blocked",
        ("acme", "anthropic.messages.create"): "blocked",
    }
    (ours,) = [s for s in spans if s.name == "chat gpt-4o-mini" and (s.attributes or {})[attr.TENANT_ID] == "acme"]
    a = ours.attributes or {}
    assert a[attr.ERROR_TYPE] == "costspan.BudgetExceeded" and attr.COST_USD not in a
    assert attr.COST_STATUS not in a  # no price and no made-up 0: nothing was sent

    # the ledger: exactly one record per call; blocked ones never priced
    records = _records(api)
    assert sorted(records) == [("acme", "anthropic"), ("acme", "openai"), ("beta", "anthropic"), ("beta", "openai")]
    for provider in ("openai", "anthropic"):
        blocked, sent = records["acme", provider], records["beta", provider]
        assert (blocked.outcome, blocked.error_type) == ("blocked", "costspan.BudgetExceeded")
        assert (blocked.cost_status, blocked.cost_total) == ("unpriced", None)
        assert (sent.outcome, sent.cost_status, sent.error_type) == ("ok", "priced", "")
        assert sent.cost_total is not None and sent.cost_total > 0

    # the aggregates: blocked calls counted as blocked, never as requests or priced (or unpriced) calls
    top = api.get("admin", "/api/usage/operations/top", days=1).json()["operations"]
    by_provider = {(row["provider"], row["model"]): row for row in top}
    for key in (("openai", "gpt-4o-mini"), ("anthropic", "claude-haiku-4-5")):
        row = by_provider[key]
        assert (row["request_count"], row["ok_count"], row["blocked_count"]) == (1, 1, 1), row
        assert (row["unpriced_calls"], row["error_count"], row["degraded_count"]) == (0, 0, 0), row
    acme = api.get("acme", "/v1/usage", scope="tenant").json()
    assert (acme["request_count"], acme["blocked_count"], acme["unpriced_calls"]) == (0, 2, 0)
    assert acme["daily_cost_exact"] == "0.00000000"  # nothing was sent, nothing was spent
    assert {m: (u["request_count"], u["blocked_count"]) for m, u in acme["model_usage"].items()} == {
        "gpt-4o-mini": (0, 1),
        "claude-haiku-4-5": (0, 1),
    }
    realtime = api.get("admin", "/api/usage/metrics/realtime").json()["data"]["totals"]
    assert (realtime["request_count"], realtime["blocked_count"], realtime["error_count"]) == (2, 2, 0)

    # the call export names each call's outcome
    with api.client("admin") as c:
        exported = c.get("/api/usage/export", params={"format": "json"}).json()
    assert sorted((row["tenant_id"], row["provider"], row["outcome"]) for row in exported) == [
        ("acme", "anthropic", "blocked"),
        ("acme", "openai", "blocked"),
        ("beta", "anthropic", "ok"),
        ("beta", "openai", "ok"),
    ]

    # Prometheus: blocked calls by their outcome, never among the requests
    with api.client("admin") as c:
        families = {f.name: f for f in text_string_to_metric_families(c.get("/metrics").text)}
    calls = {
        (s.labels["tenant"], s.labels["provider"], s.labels["outcome"]): s.value
        for s in families["costspan_calls"].samples
        if s.name == "costspan_calls_total" and s.value
    }
    assert calls == {
        ("acme", "openai", "blocked"): 1,
        ("acme", "anthropic", "blocked"): 1,
        ("beta", "openai", "ok"): 1,
        ("beta", "anthropic", "ok"): 1,
    }
    requests = sum(s.value for s in families["costspan_requests"].samples if s.name == "costspan_requests_total")
    assert requests == 2


def test_an_old_ledger_records_a_block_as_blocked(api: Api) -> None:
    """A record written before outcomes (a block stored as a priced call of 0 with the class name as its
    error type) reads back as blocked, and the index counts it so."""
    old = call_record(7, start_ns=time.time_ns(), cost=Decimal(0), tokens=(0, 0), error_type="BudgetExceededError")
    line = json.loads(record_to_json(old))
    assert line[-1] == ""  # built without an outcome
    read = record_from_json(json.dumps(line[:-1]))  # the layout written before outcomes existed
    assert read.outcome == "blocked"
    api.index.add(read)
    row = api.get("admin", "/api/usage/metrics/realtime").json()["data"]["totals"]
    assert (row["request_count"], row["blocked_count"], row["error_count"], row["cost"]) == (0, 1, 0, "0.00000000")
