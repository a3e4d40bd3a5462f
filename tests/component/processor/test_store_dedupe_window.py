"""The dedupe window: span ids remembered for N hours of arrival, 8-byte keys, carried across restarts."""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from costspan.processor.serve._metrics import StoreCollector
from costspan.processor.store import _store
from costspan.processor.store._ledger import Position
from costspan.processor.store._store import Store, StoreConfig
from costspan.processor.store._window import DedupeWindow, compact_key
from tests.support.records import call_record

HOUR = 490_000  # an arbitrary arrival hour (2025-11-24)


@pytest.fixture
def hour(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The arrival hour the store sees: ``hour[0] += 1`` moves it on."""
    now = [HOUR]
    monkeypatch.setattr(_store, "_arrival_hour", lambda: now[0])
    return now


def _config(tmp_path: Path, hours: int = 3) -> StoreConfig:
    return StoreConfig(data_dir=tmp_path / "data", snapshot_interval_s=3600, dedupe_window_hours=hours, history=False)


def test_keys_are_64_bit_and_ids_made_of_one_counter_do_not_collide() -> None:
    keys = {compact_key(f"{i:032x}{i:016x}") for i in range(100_000)}
    keys |= {compact_key(f"{i:032x}{i + 1:016x}") for i in range(100_000)}
    assert len(keys) == 200_000
    assert max(keys) < 2**64
    window = DedupeWindow(2)
    window.roll(HOUR)
    for key in list(keys)[:1000]:
        window.add(key)
    assert window._open.itemsize == 8 and len(window._open) == 1000  # 8 bytes a key in the bucket arrays
    assert sys.getsizeof(next(iter(window.keys))) <= 36  # an int of at most 64 bits, not a str


def test_a_retry_within_the_window_is_dropped(tmp_path: Path, hour: list[int]) -> None:
    store = Store(_config(tmp_path))
    store.start()
    try:
        records = [call_record(i) for i in range(10)]
        assert store.ingest(records).stored == 10
        hour[0] += 2  # still inside a 3-hour window
        result = store.ingest(records)
        assert (result.stored, result.duplicate_spans) == (0, 10)
        assert store.counters["dedupe_evicted"] == 0
    finally:
        store.close()


def test_a_span_resent_after_the_window_is_stored_again_and_the_eviction_is_counted(
    tmp_path: Path, hour: list[int]
) -> None:
    """The documented bound: an exporter retries for minutes; a span id sent again hours after the
    window has passed is not recognised (it is counted twice). Evictions are counted."""
    store = Store(_config(tmp_path))
    store.start()
    try:
        records = [call_record(i) for i in range(10)]
        store.ingest(records)
        hour[0] += 3  # the first hour has left the window
        result = store.ingest([*records[:4], call_record(99)])
        assert (result.stored, result.duplicate_spans) == (5, 0)
        assert store.counters["dedupe_evicted"] == 10
        assert store.dedupe_window_size() == 5
        text = generate_latest(_registry(store)).decode()
        assert "costspan_dedupe_evicted_total 10.0" in text
        assert "costspan_dedupe_window_span_ids 5.0" in text
    finally:
        store.close()


def _registry(store: Store) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(StoreCollector(store))
    return registry


def test_a_restart_keeps_the_window_without_reading_the_ledger(tmp_path: Path, hour: list[int]) -> None:
    config = _config(tmp_path)
    store = Store(config)
    store.start()
    store.ingest([call_record(i) for i in range(5)])
    hour[0] += 1
    store.ingest([call_record(i) for i in range(5, 10)])  # the first hour closes: written once, to its file
    store.close()
    assert (config.data_dir / "dedupe" / f"dedupe-hour-{HOUR}.keys").is_file()

    hour[0] += 1
    reopened = Store(config)
    reopened.start()
    try:
        assert reopened.counters["replayed_records"] == 0
        assert reopened.dedupe_window_size() == 10
        result = reopened.ingest([call_record(i) for i in range(12)])
        assert (result.stored, result.duplicate_spans) == (2, 10)
    finally:
        reopened.close()


def test_keys_stored_after_the_snapshot_are_replayed_into_the_window(tmp_path: Path, hour: list[int]) -> None:
    """A crash (no close) after a snapshot: the calls after it are replayed, their ids join the window."""
    config = _config(tmp_path)
    store = Store(config)
    store.start()
    store.ingest([call_record(i) for i in range(5)])
    store.snapshot()
    hour[0] += 1
    store.ingest([call_record(i) for i in range(5, 9)])
    # no close: the process "dies"
    reopened = Store(config)
    reopened.start()
    try:
        assert reopened.counters["replayed_records"] == 4
        result = reopened.ingest([call_record(i) for i in range(10)])
        assert (result.stored, result.duplicate_spans) == (1, 9)
        assert reopened.grand_total().requests == 10
        assert reopened.grand_total().cost == Decimal("0.010")
    finally:
        reopened.close()
        store.close()


def test_a_lost_dedupe_snapshot_falls_back_to_reading_the_ledger(tmp_path: Path, hour: list[int]) -> None:
    config = _config(tmp_path)
    store = Store(config)
    store.start()
    store.ingest([call_record(i) for i in range(6)])
    position = store.snapshot()
    store.close()
    for path in (config.data_dir / "dedupe").glob("dedupe-0*.json"):
        path.write_bytes(b"garbage")
    reopened = Store(config)
    reopened.start()
    try:
        assert position != Position(0, 0)
        assert reopened.ingest([call_record(i) for i in range(6)]).stored == 0
    finally:
        reopened.close()


def test_window_hours_must_not_be_negative(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dedupe_window_hours"):
        StoreConfig(data_dir=tmp_path, dedupe_window_hours=-1)
