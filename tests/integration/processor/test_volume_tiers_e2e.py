"""Volume tiers end to end: a tenant whose month-to-date spend crosses a tier boundary gets the tier's
discount on the calls after the crossing — spans from the real OpenTelemetry SDK over OTLP/HTTP and
calls logged over the API, priced by the whole ``costspan serve`` app — and repricing agrees.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from costspan.pricing import Pricer, load_catalog
from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.serve._reprice import Window, reprice
from costspan.processor.serve._server import build_server_app
from costspan.processor.serve._settings import Settings
from costspan.processor.store._store import Store

#: bigco: 10 % off once the month's spend is above 10 USD, 20 % above 14 USD.
TERMS = {
    "tenants": {
        "bigco": {
            "volume_tiers": [
                {"above_usd": "10", "discount_percent": "10"},
                {"above_usd": "14", "discount_percent": "20"},
            ]
        }
    }
}
LIST = Decimal("2.5")  # gpt-4o, one million input tokens


@dataclass
class Running:
    url: str
    store: Store
    tracer: TracerProvider


@pytest.fixture
def pricer(tmp_path: Path) -> Pricer:
    path = tmp_path / "terms.json"
    path.write_text(json.dumps(TERMS))
    return Pricer(load_catalog([path]))


@pytest.fixture
def running(tmp_path: Path, pricer: Pricer) -> Iterator[Running]:
    settings = Settings(data_dir=tmp_path / "data", port=0, grpc_port=0, snapshot_interval_seconds=3600)
    store = Store(settings.store_config())
    app = build_server_app(settings, store, insecure_no_auth=True, pricer=pricer)
    with ServerThread(app) as server:
        tracer = TracerProvider(resource=Resource.create({"service.name": "volume-test"}))
        tracer.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{server.url}/v1/traces")))
        yield Running(server.url, store, tracer)
        tracer.shutdown()


def _span(running: Running, tenant: str) -> None:
    span = running.tracer.get_tracer("test").start_span("chat gpt-4o", kind=SpanKind.CLIENT)
    span.set_attributes(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 1_000_000,
            "gen_ai.usage.output_tokens": 0,
            "costspan.tenant.id": tenant,
        }
    )
    span.end()  # exported (and stored) before end() returns: the next call sees this one's spend


def _costs(store: Store, tenant: str) -> list[Decimal | None]:
    records = sorted((r for r in store.read_records() if r.tenant == tenant), key=lambda r: r.start_ns)
    return [r.cost_total for r in records]


def test_calls_after_the_crossing_get_the_tier_and_repricing_agrees(running: Running, pricer: Pricer) -> None:
    for _ in range(4):
        _span(running, "bigco")
        _span(running, "smallco")  # another tenant's spend never counts towards bigco's
    # bigco has spent 10 USD: not above the first tier yet
    _span(running, "bigco")  # 10 before it: list price; 12.5 after
    _span(running, "bigco")  # above 10: -10 % → 2.25; 14.75 after
    logged = httpx.post(
        f"{running.url}/api/usage/calls",
        json={
            "provider": "openai",
            "model": "gpt-4o",
            "prompt_tokens": 1_000_000,
            "completion_tokens": 0,
            "tenant_id": "bigco",
        },
        timeout=30,
    )
    assert logged.status_code in (200, 201), logged.text
    tiered = [LIST] * 5 + [Decimal("2.25"), Decimal("2.0")]  # the logged call: above 14 → -20 %
    assert _costs(running.store, "bigco") == tiered
    assert _costs(running.store, "smallco") == [LIST] * 4

    # repricing with the same catalog changes nothing; without the tiers it undoes them; with them
    # again it gives back exactly what ingest priced
    month = Window(time.time() - 40 * 86400, time.time() + 60)
    ledger = running.store.ledger.directory
    assert reprice(ledger, pricer, month, running.store.correct).changed == 0
    plain = Pricer(load_catalog())
    undone = reprice(ledger, plain, month, running.store.correct)
    assert (undone.changed, undone.new_total - undone.old_total) == (2, Decimal("0.75"))
    assert _costs(running.store, "bigco") == [LIST] * 7
    redone = reprice(ledger, pricer, month, running.store.correct)
    assert redone.changed == 2
    assert _costs(running.store, "bigco") == tiered
    assert reprice(ledger, pricer, month, running.store.correct).changed == 0


def test_ingest_workers_price_with_the_servers_month_to_date(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``ingest_workers``, spans are priced in other processes: the server hands each body the
    tiered tenants' month to date."""
    from costspan.pricing import default_pricer

    terms = tmp_path / "terms.json"
    terms.write_text(json.dumps(TERMS))
    monkeypatch.setenv("COSTSPAN_PRICING_FILE", str(terms))
    default_pricer.cache_clear()
    try:
        settings = Settings(
            data_dir=tmp_path / "data", port=0, grpc_port=0, snapshot_interval_seconds=3600, ingest_workers=1
        )
        store = Store(settings.store_config())
        app = build_server_app(settings, store, insecure_no_auth=True)
        with ServerThread(app) as server:
            tracer = TracerProvider(resource=Resource.create({"service.name": "volume-test"}))
            tracer.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{server.url}/v1/traces")))
            running = Running(server.url, store, tracer)
            for _ in range(7):
                _span(running, "bigco")
            tracer.shutdown()
            assert _costs(store, "bigco") == [LIST] * 5 + [Decimal("2.25"), Decimal("2.0")]
    finally:
        monkeypatch.delenv("COSTSPAN_PRICING_FILE")
        default_pricer.cache_clear()


def test_in_process_mode_prices_with_its_own_stores_month_to_date(tmp_path: Path, pricer: Pricer) -> None:
    from costspan.processor import track_in_process

    tracer = TracerProvider(resource=Resource.create({"service.name": "volume-test"}))
    handle = track_in_process(tracer, data_dir=tmp_path / "data", fsync="never", pricer=pricer, instrument=False)
    try:
        running = Running("", handle.store, tracer)
        for _ in range(7):
            _span(running, "bigco")
            assert tracer.force_flush()  # stored before the next call is priced
        assert _costs(handle.store, "bigco") == [LIST] * 5 + [Decimal("2.25"), Decimal("2.0")]
    finally:
        handle.shutdown()
        tracer.shutdown()
