"""Helpers to assert on the spans costspan writes (shared by instrumentation and processor tests)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costspan.instrumentation import CostspanInstrumentor
from costspan.instrumentation import attributes as attr
from costspan.pricing import Pricer, Usage

__all__ = ["Otel", "cost_attrs", "plain"]


@dataclass
class Otel:
    exporter: InMemorySpanExporter
    tracer_provider: TracerProvider
    metrics: InMemoryMetricReader
    meter_provider: MeterProvider
    instrumentor: CostspanInstrumentor
    kwargs: dict[str, Any]

    def spans(self) -> tuple[ReadableSpan, ...]:
        return tuple(self.exporter.get_finished_spans())

    def span(self) -> ReadableSpan:
        (only,) = self.exporter.get_finished_spans()
        return only


def cost_attrs(
    pricer: Pricer, model: str, provider: str, usage: Usage, status: str = attr.STATUS_PRICED
) -> dict[str, Any]:
    """The cost attributes costspan must write for this call (from the same pricer), and the outcome they
    make (``ok`` when priced from reported usage, else ``degraded``); a zero part is absent."""
    b = pricer.price_call(model, usage, provider=provider)
    assert b.total is not None, b.reason
    out: dict[str, Any] = {
        attr.PRICING_VERSION: b.catalog_version,
        attr.COST_USD: float(b.total),
        attr.GEN_AI_USAGE_COST: float(b.total),
        attr.COST_STATUS: status,
        attr.PRICING_RULE: b.rule,
        attr.PRICING_MODEL: b.model,
        attr.CALL_OUTCOME: attr.OUTCOME_OK if status == attr.STATUS_PRICED else attr.OUTCOME_DEGRADED,
    }
    parts = (
        (attr.COST_INPUT_USD, b.input),
        (attr.COST_OUTPUT_USD, b.output),
        (attr.COST_CACHE_READ_USD, b.cache_read),
        (attr.COST_CACHE_WRITE_USD, b.cache_write),
        (attr.COST_OTHER_USD, b.other),
    )
    out.update((key, float(part)) for key, part in parts if part)  # a zero part is not written
    return out


def plain(span: ReadableSpan) -> dict[str, Any]:
    """A span's attributes with the time-to-first-chunk checked and replaced by a marker."""
    out = dict(span.attributes or {})
    ttfc = out.get(attr.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK)
    if ttfc is not None:
        assert isinstance(ttfc, float) and 0 <= ttfc < 10
        out[attr.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = "ttfc"
    return out
