"""Prometheus exposition: a custom collector over the store's rollups (one source of truth).

Every scrape yields fresh metric families from the all-time totals by (tenant, service, provider,
model, operation[, status]); label sets are bounded by the rollups' series cap. A scrape never fails:
an error while collecting is logged, counted and the scrape answers with what it has.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from costspan.processor.store._rollups import Dims
from costspan.processor.store._store import Store
from costspan.processor.store._sums import DURATION_BUCKETS, TOKEN_BUCKETS, Sums
from costspan.processor.store._validate import REASONS, REJECTED_PREFIX

__all__ = ["StoreCollector"]

logger = logging.getLogger(__name__)

_LABELS: Final = ["tenant", "service", "provider", "model", "operation"]


def _buckets(bounds: tuple[float, ...], counts: list[int], sum_value: float) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    cumulative = 0
    for bound, count in zip(bounds, counts, strict=False):
        cumulative += count
        out.append((str(float(bound)), cumulative))
    cumulative += counts[-1]
    out.append(("+Inf", cumulative))
    return out


def _merge_status(totals: dict[Dims, Sums]) -> dict[tuple[str, ...], list[Sums]]:
    out: dict[tuple[str, ...], list[Sums]] = {}
    for dims, t in totals.items():
        out.setdefault(dims[:5], []).append(t)
    return out


class StoreCollector(Collector):
    """Register on a ``CollectorRegistry``; reads the store's rollups under its lock on each scrape."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: families depend on the data

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._collect()
        except Exception:
            logger.exception("collecting metrics failed")
            self._store.count("metrics", error=True)
            yield from self._internal_errors()

    def _internal_errors(self) -> Iterator[Metric]:
        counters, errors = self._store.counts()
        family = CounterMetricFamily(
            "costspan_internal_errors", "Internal errors, by component, that costspan survived.", labels=["component"]
        )
        for component in sorted({"ledger", "snapshot", "metrics", "receiver", "normalize", "forward", *errors}):
            family.add_metric([component], errors.get(component, 0))
        yield family
        dup = CounterMetricFamily("costspan_duplicate_spans", "Spans dropped as duplicates, by kind.", labels=["kind"])
        dup.add_metric(["span_id"], counters.get("duplicate_spans", 0))
        dup.add_metric(["same_call"], counters.get("duplicate_calls", 0))
        yield dup
        evicted = CounterMetricFamily(
            "costspan_dedupe_evicted", "Span ids dropped from the dedupe window as their arrival hour aged out."
        )
        evicted.add_metric([], counters.get("dedupe_evicted", 0))
        yield evicted
        window = GaugeMetricFamily("costspan_dedupe_window_span_ids", "Span ids in the dedupe window now.")
        window.add_metric([], self._store.dedupe_window_size())
        yield window
        rejected = CounterMetricFamily(
            "costspan_ingest_rejected_spans", "Spans refused at ingest, by reason.", labels=["reason"]
        )
        for reason in ("queue_full", "bad_request", "too_large", "invalid_span", "tenant"):
            rejected.add_metric([reason], counters.get(f"rejected_{reason}", 0))
        yield rejected
        edge = CounterMetricFamily(
            "costspan_rejected",
            "Values refused, changed or folded by the edge's validation and cardinality bounds, by reason.",
            labels=["reason"],
        )
        for reason in REASONS:
            edge.add_metric([reason], counters.get(REJECTED_PREFIX + reason, 0))
        yield edge
        forward = CounterMetricFamily(
            "costspan_forward_dropped_exports", "Exports that could not be forwarded and were dropped."
        )
        forward.add_metric([], counters.get("forward_dropped", 0))
        yield forward
        with self._store.lock:
            compacted_minutes = self._store.rollups.compacted
        compacted = CounterMetricFamily(
            "costspan_rollup_compacted",
            "Per-minute rollup buckets dropped after the minute detail window, or never made for older calls "
            "(their calls stay in their hour and day).",
        )
        compacted.add_metric([], compacted_minutes)
        yield compacted

    def _collect(self) -> Iterator[Metric]:
        with self._store.lock:
            snapshot = {dims: t.copy() for dims, t in self._store.rollups.totals.items()}
        cost = CounterMetricFamily(
            "costspan_cost_usd", "Cost of LLM calls in USD (priced and estimated).", labels=_LABELS
        )
        tokens = CounterMetricFamily("costspan_tokens", "Tokens of LLM calls by type.", labels=[*_LABELS, "token_type"])
        requests = CounterMetricFamily("costspan_requests", "LLM calls by outcome.", labels=[*_LABELS, "status"])
        unpriced = CounterMetricFamily("costspan_unpriced_requests", "LLM calls with no known price.", labels=_LABELS)
        calls = CounterMetricFamily(
            "costspan_calls",
            "LLM calls by outcome: ok, degraded, error (sent) and blocked (refused by a budget, never sent).",
            labels=[*_LABELS, "outcome"],
        )
        duration = HistogramMetricFamily("costspan_request_duration_seconds", "Duration of LLM calls.", labels=_LABELS)
        ttfc = HistogramMetricFamily(
            "costspan_time_to_first_chunk_seconds", "Time to the first chunk of streamed LLM calls.", labels=_LABELS
        )
        semconv_duration = HistogramMetricFamily(
            "gen_ai_client_operation_duration_seconds",
            "GenAI operation duration.",
            labels=["gen_ai_provider_name", "gen_ai_request_model", "gen_ai_operation_name"],
        )
        semconv_tokens = HistogramMetricFamily(
            "gen_ai_client_token_usage",
            "Number of input and output tokens used.",
            labels=["gen_ai_provider_name", "gen_ai_request_model", "gen_ai_operation_name", "gen_ai_token_type"],
        )
        for dims, t in snapshot.items():
            if t.requests or not t.blocked:  # blocked calls are no requests: see costspan_calls_total
                requests.add_metric([*dims[:5], dims[5]], t.requests)
        semconv: dict[tuple[str, str, str], Sums] = {}
        for labels, parts in _merge_status(snapshot).items():
            t = parts[0] if len(parts) == 1 else _sum(parts)
            values = list(labels)
            cost.add_metric(values, float(t.cost))
            tokens.add_metric([*values, "input"], t.input_tokens)
            tokens.add_metric([*values, "output"], t.output_tokens)
            tokens.add_metric([*values, "cache_read"], t.cache_read_tokens)
            p = t.parts()
            tokens.add_metric([*values, "cache_write"], p.cache_write_tokens)
            tokens.add_metric([*values, "reasoning"], p.reasoning_tokens)
            unpriced.add_metric(values, t.unpriced)
            for outcome, n in (("ok", t.ok), ("degraded", t.degraded), ("error", t.errors), ("blocked", t.blocked)):
                calls.add_metric([*values, outcome], n)
            duration.add_metric(
                values, _buckets(DURATION_BUCKETS, _counts(p.duration_counts), p.duration_sum), p.duration_sum
            )
            if p.ttfc_counts is not None and any(p.ttfc_counts):
                ttfc.add_metric(values, _buckets(DURATION_BUCKETS, p.ttfc_counts, p.ttfc_sum), p.ttfc_sum)
            key = (labels[2], labels[3], labels[4])
            semconv[key] = _sum([semconv[key], t]) if key in semconv else t
        for (provider, model, operation), t in semconv.items():
            p = t.parts()
            semconv_duration.add_metric(
                [provider, model, operation],
                _buckets(DURATION_BUCKETS, _counts(p.duration_counts), p.duration_sum),
                p.duration_sum,
            )
            for token_type, counts, total in (
                ("input", _counts(p.input_token_counts), t.input_tokens),
                ("output", _counts(p.output_token_counts), t.output_tokens),
            ):
                semconv_tokens.add_metric(
                    [provider, model, operation, token_type],
                    _buckets(tuple(float(b) for b in TOKEN_BUCKETS), counts, float(total)),
                    float(total),
                )
        yield cost
        yield tokens
        yield requests
        yield unpriced
        yield calls
        yield duration
        yield ttfc
        yield semconv_duration
        yield semconv_tokens
        yield from self._internal_errors()


def _counts(counts: list[int] | None) -> list[int]:
    """A histogram's counts (``parts()`` always has them: this only narrows the type)."""
    assert counts is not None
    return counts


def _sum(parts: list[Sums]) -> Sums:
    out = Sums.with_parts()
    for p in parts:
        out.merge(p)
    return out
