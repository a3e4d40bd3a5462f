"""Time to first chunk and service tiers travel from the span to the record, rollups and /metrics."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from costspan.pricing import Usage, default_pricer
from costspan.processor.ingest._normalize import Normalizer, SpanView
from costspan.processor.serve._metrics import StoreCollector
from costspan.processor.store._records import record_from_json, record_to_json
from costspan.processor.store._sums import Sums

START_NS = 1_764_000_000_000_000_000  # 2025-11-24


def _view(attrs: dict[str, Any]) -> SpanView:
    return SpanView(
        trace_id="ab" * 16,
        span_id="cd" * 8,
        parent_span_id="",
        start_ns=START_NS,
        end_ns=START_NS + 2_000_000_000,
        attributes=attrs,
        resource={"service.name": "svc"},
        scope_name="scope",
    )


BASE = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.usage.input_tokens": 1_000_000,
    "gen_ai.usage.output_tokens": 0,
}


def test_time_to_first_chunk_round_trips_and_old_records_still_read() -> None:
    record = Normalizer(default_pricer()).normalize(_view({**BASE, "gen_ai.response.time_to_first_chunk": 0.25}))
    assert record is not None and record.ttfc_s == 0.25
    assert record_from_json(record_to_json(record)) == record
    old = record_to_json(record._replace(ttfc_s=None)).removesuffix(',"ok"]') + "]"  # before outcomes existed
    assert record_from_json(old) == record._replace(ttfc_s=None)  # its outcome derived: ok
    assert old.endswith(',null,"",""]')
    before_project = old.removesuffix(',"",""]') + "]"  # written before project and reservation id existed
    assert record_from_json(before_project) == record._replace(ttfc_s=None)
    legacy = old.removesuffix(',null,"",""]') + "]"  # a record written before ttfc existed
    assert record_from_json(legacy).ttfc_s is None
    totals = Sums()
    totals.add(record, record.duration_s)
    p = totals.parts()
    assert p.ttfc_sum == 0.25 and sum(p.ttfc_counts or []) == 1
    assert Sums.from_json(totals.to_json()) == totals
    written_before_ttfc = [  # a rollups snapshot's 19-item sums, as written before the ttfc histogram
        *(totals.requests, totals.errors, totals.unpriced, p.estimated, str(totals.cost)),
        *(str(c) for c in (p.cost_input, p.cost_output, p.cost_cache_read, p.cost_cache_write, p.cost_other)),
        *(totals.input_tokens, totals.output_tokens, totals.cache_read_tokens),
        *(p.cache_write_tokens, p.reasoning_tokens),
        *(p.duration_sum, p.duration_counts, p.input_token_counts, p.output_token_counts),
    ]
    assert not any(Sums.from_json(written_before_ttfc).parts().ttfc_counts or [])


def test_project_and_reservation_id_come_from_span_or_resource() -> None:
    attrs = {**BASE, "costspan.budget.reservation_id": "r-1"}
    view = _view(attrs)._replace(resource={"service.name": "svc", "costspan.project.id": "proj-r"})
    record = Normalizer(default_pricer()).normalize(view)
    assert record is not None and (record.project, record.reservation_id) == ("proj-r", "r-1")
    record = Normalizer(default_pricer()).normalize(_view({**BASE, "costspan.project.id": "proj-s"}))
    assert record is not None and (record.project, record.reservation_id) == ("proj-s", "")
    assert record_from_json(record_to_json(record)) == record


def test_nonsense_time_to_first_chunk_is_dropped() -> None:
    for value in (-1, "soon", True, 10**9):
        record = Normalizer(default_pricer()).normalize(_view({**BASE, "gen_ai.response.time_to_first_chunk": value}))
        assert record is not None and record.ttfc_s is None


def test_openai_service_tier_prices_the_call() -> None:
    normalizer = Normalizer(default_pricer())
    at = START_NS / 1e9
    usage = Usage(input_tokens=1_000_000)
    for tier_attr, tier in (("default", "standard"), ("flex", "flex"), ("priority", "priority")):
        record = normalizer.normalize(_view({**BASE, "openai.response.service_tier": tier_attr}))
        assert record is not None
        expected = default_pricer().price_call("gpt-4o-mini", usage, provider="openai", at=at, tier=tier)
        assert record.cost_total == expected.total, tier_attr
    standard = default_pricer().price_call("gpt-4o-mini", usage, provider="openai", at=at)
    assert standard.total == Decimal("0.15")


def test_ttfc_histogram_is_exposed(tmp_path: Any) -> None:
    from costspan.processor.store._store import Store, StoreConfig

    store = Store(StoreConfig(data_dir=tmp_path))
    store.start()
    try:
        record = Normalizer(default_pricer()).normalize(_view({**BASE, "gen_ai.response.time_to_first_chunk": 0.3}))
        assert record is not None
        store.ingest([record])
        registry = CollectorRegistry(auto_describe=False)
        registry.register(StoreCollector(store))
        text = generate_latest(registry).decode()
    finally:
        store.close()
    labels = 'model="gpt-4o-mini",operation="chat",provider="openai",service="svc",tenant=""'
    assert f'costspan_time_to_first_chunk_seconds_bucket{{le="0.16",{labels}}} 0.0' in text
    assert f'costspan_time_to_first_chunk_seconds_bucket{{le="0.32",{labels}}} 1.0' in text
    assert f"costspan_time_to_first_chunk_seconds_count{{{labels}}} 1.0" in text
    assert f"costspan_time_to_first_chunk_seconds_sum{{{labels}}} 0.3" in text
