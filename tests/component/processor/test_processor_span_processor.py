"""In-process mode: costspan's SpanProcessor on the app's own TracerProvider (real SDK)."""

from __future__ import annotations

import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.util.types import AttributeValue

from costspan.pricing import PriceBreakdown, Pricer, Usage
from costspan.processor._span_processor import CostspanSpanProcessor
from costspan.processor.ingest._normalize import Normalizer
from costspan.processor.store._store import Store, StoreConfig

LLM: dict[str, AttributeValue] = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.usage.input_tokens": 2000,
    "gen_ai.usage.output_tokens": 100,
}


def test_in_process_spans_are_priced_into_the_store(tmp_path: Path, pricer: Pricer) -> None:
    store = Store(StoreConfig(data_dir=tmp_path))
    processor = CostspanSpanProcessor(store, Normalizer(pricer), owns_store=True)
    provider = TracerProvider(resource=Resource.create({"service.name": "app", "costspan.tenant.id": "acme"}))
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("request"), tracer.start_as_current_span("chat gpt-4o-mini", attributes=LLM):
        pass
    assert processor.force_flush(5000)
    (record,) = store.read_records()
    expected = pricer.price_call("gpt-4o-mini", Usage(input_tokens=2000, output_tokens=100), provider="openai")
    assert (record.tenant, record.service, record.cost_total) == ("acme", "app", expected.total)
    assert store.grand_total().cost == expected.total
    provider.shutdown()
    processor.shutdown()  # safe twice
    assert processor.force_flush(100)


class _BrokenPricer:
    def price_call(self, model: str, usage: Usage, **kwargs: Any) -> PriceBreakdown:
        raise RuntimeError("boom")


def test_errors_never_reach_the_host_and_are_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = Store(StoreConfig(data_dir=tmp_path, max_pending_records=1))
    processor = CostspanSpanProcessor(store, Normalizer(_BrokenPricer()))
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("app")
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            with tracer.start_as_current_span("chat", attributes=LLM):
                pass
    assert processor.force_flush(5000)
    records = store.read_records()
    assert records and all(r.cost_status == "unpriced" for r in records)
    assert all(r.unpriced_reason == "pricing error: RuntimeError" for r in records)
    assert store.grand_total().cost == Decimal(0)
    provider.shutdown()
    store.close()
