"""The store: durable ledger, torn-tail and corruption handling, snapshots + replay, dedupe, retention."""

from __future__ import annotations

import json
import os
import shutil
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from costspan.processor.serve._metrics import StoreCollector
from costspan.processor.store._batch import call_key, prepare
from costspan.processor.store._dedupe import Deduplicator
from costspan.processor.store._ledger import Ledger
from costspan.processor.store._records import CallRecord
from costspan.processor.store._rollups import Rollups
from costspan.processor.store._snapshots import SNAPSHOT_FORMAT, read_checked, write_checked
from costspan.processor.store._store import QueueFullError, Store, StoreConfig
from costspan.processor.store._sums import Sums
from tests.support.records import call_record

BASE_NS = (time.time_ns() // 10**9 - 7200) * 10**9  # recent: retention keeps it


def make_record(
    i: int,
    *,
    start_ns: int | None = None,
    parent: str = "",
    tokens: tuple[int, int] | None = None,
    source: str = "scope",
    tenant: str = "acme",
    cost: str | None = "0.0123",
) -> CallRecord:
    start = start_ns if start_ns is not None else BASE_NS + i * 1_000_000_000
    money = None if cost is None else Decimal(cost)
    zero = Decimal(0) if money is not None else None
    return call_record(
        i,
        trace_id=f"{i // 4:032x}",
        parent_span_id=parent,
        start_ns=start,
        end_ns=start + 250_000_000 + i,
        tenant=tenant,
        workflow="wf-1" if i % 2 else "",
        user=f"u{i % 3}",
        source=source,
        tokens=tokens or (100 + i, 10 + i),
        cost=money,
        unpriced_reason="" if money is not None else "unknown model",
        cost_input=money,
        cost_output=zero,
        cost_cache_read=zero,
        cost_cache_write=zero,
        cost_other=zero,
        pricing_version="2026.11.25",
    )


def canonical(rollups: Rollups) -> Any:
    """Rollups as a comparable structure (float sums rounded: summation order differs on replay)."""

    def totals(entries: list[Any]) -> list[Any]:
        out = []
        for key, raw in entries:
            t = [round(x, 6) if isinstance(x, float) else x for x in raw]  # the latency and duration sums
            out.append((tuple(key), tuple(tuple(x) if isinstance(x, list) else x for x in t)))
        return sorted(out)

    data = rollups.to_json()
    return (
        data["records"],
        totals(data["totals"]),
        {g: sorted((start, tuple(totals(e))) for start, e in b) for g, b in data["buckets"].items()},
        totals(data["by_workflow"]),
        totals(data["by_user"]),
    )


def recompute(store: Store) -> Rollups:
    rollups = Rollups()
    rollups.add_all(store.read_records())
    return rollups


@pytest.fixture
def config(tmp_path: Path) -> StoreConfig:
    return StoreConfig(data_dir=tmp_path / "data", snapshot_interval_s=3600)


def test_records_round_trip_and_a_resent_span_is_counted_once(config: StoreConfig) -> None:
    store = Store(config)
    store.start()
    records = [make_record(i) for i in range(10)]
    first = store.ingest(records)
    again = store.ingest(records[:3])
    assert (first.stored, again.stored, again.duplicate_spans) == (10, 0, 3)
    assert store.read_records() == records
    assert store.grand_total().cost == Decimal("0.1230")
    store.close()
    store.close()  # safe twice

    reopened = Store(config)
    reopened.start()
    assert reopened.ingest(records[5:]).duplicate_spans == 5
    assert canonical(reopened.rollups) == canonical(recompute(reopened))
    reopened.close()


def test_a_torn_last_record_is_detected_cut_and_survived(config: StoreConfig) -> None:
    store = Store(config)
    store.start()
    store.ingest([make_record(i) for i in range(5)])
    store.close()
    segment = config.data_dir / "ledger" / "segment-00000001.log"
    whole = segment.read_bytes()
    segment.write_bytes(whole + whole.splitlines(keepends=True)[0][:40])  # a crash mid-write

    store = Store(config)
    store.start()
    assert store.ledger.torn_tail_bytes == 40
    assert store.errors["ledger"] == 1
    assert segment.read_bytes() == whole
    assert store.ingest([make_record(7)]).stored == 1
    assert len(store.read_records()) == 6
    store.close()


def test_a_corrupt_record_in_the_middle_is_reported_and_skipped(config: StoreConfig) -> None:
    store = Store(config)
    store.start()
    store.ingest([make_record(i) for i in range(3)])
    store.close()
    segment = config.data_dir / "ledger" / "segment-00000001.log"
    lines = segment.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b"gpt-4o", b"gpt-4x")  # checksum no longer matches
    segment.write_bytes(b"".join(lines))
    for snapshot in (config.data_dir / "snapshots").iterdir():
        snapshot.unlink()

    store = Store(config)
    store.start()
    assert [r.span_id for r in store.read_records()] == [make_record(0).span_id, make_record(2).span_id]
    assert store.rollups.records == 2
    assert store.errors["ledger"] >= 1
    store.close()


def test_snapshot_then_replay_equals_a_recomputation_from_the_ledger(config: StoreConfig) -> None:
    store = Store(config)
    store.start()
    store.ingest([make_record(i) for i in range(20)])
    position = store.snapshot()
    store.ingest([make_record(i, cost=None if i % 5 == 0 else "0.5") for i in range(20, 45)])
    # no close(): the process "dies" after the snapshot; the ledger after it must be replayed
    reopened = Store(config)
    reopened.start()
    assert reopened.counters["replayed_records"] == 25
    assert position.offset > 0
    assert canonical(reopened.rollups) == canonical(recompute(reopened))
    assert reopened.grand_total().unpriced == 5
    reopened.close()
    store.close()


def test_a_corrupt_snapshot_is_reported_and_the_ledger_replayed(config: StoreConfig) -> None:
    store = Store(config)
    store.start()
    store.ingest([make_record(i) for i in range(8)])
    store.close()
    (snapshot,) = (config.data_dir / "snapshots").iterdir()
    snapshot.write_bytes(snapshot.read_bytes()[:-10] + b"corrupted!")

    reopened = Store(config)
    reopened.start()
    assert reopened.errors["snapshot"] == 1
    assert reopened.counters["replayed_records"] == 8
    assert canonical(reopened.rollups) == canonical(recompute(reopened))
    reopened.close()


def _as_totals_json(raw: list[Any]) -> list[Any]:
    """Sums in the 21-item list snapshots held before the one fold type (the rollups' ``Totals``)."""
    s = Sums.from_json(raw)
    p = s.parts()
    costs = (p.cost_input, p.cost_output, p.cost_cache_read, p.cost_cache_write, p.cost_other)
    return [
        *(s.requests, s.errors, s.unpriced, p.estimated, str(s.cost), *(str(c) for c in costs)),
        *(s.input_tokens, s.output_tokens, s.cache_read_tokens, p.cache_write_tokens, p.reasoning_tokens),
        *(p.duration_sum, p.duration_counts, p.input_token_counts, p.output_token_counts),
        *(p.ttfc_sum, p.ttfc_counts or [0] * len(p.duration_counts or ())),
    ]


def _metrics(store: Store) -> bytes:
    registry = CollectorRegistry()
    registry.register(StoreCollector(store))
    return generate_latest(registry)


def test_a_snapshot_written_before_the_one_fold_type_still_loads(config: StoreConfig) -> None:
    """Rollups snapshots hold each sums as the old ``Totals`` list: they load, and /metrics is the same."""
    store = Store(config)
    store.start()
    store.ingest([make_record(i, cost=None if i % 4 == 0 else "0.25") for i in range(12)])
    store.close()
    before = _metrics(store)
    (snapshot,) = (config.data_dir / "snapshots").iterdir()
    data = json.loads(read_checked(snapshot, SNAPSHOT_FORMAT))
    rollups = data["rollups"]
    for key in ("totals", "by_workflow", "by_user"):
        rollups[key] = [[k, _as_totals_json(v)] for k, v in rollups[key]]
    for g, buckets in rollups["buckets"].items():
        rollups["buckets"][g] = [[start, [[k, _as_totals_json(v)] for k, v in e]] for start, e in buckets]
    write_checked(snapshot, SNAPSHOT_FORMAT, json.dumps(data).encode())

    reopened = Store(config)
    reopened.start()
    assert not reopened.errors["snapshot"]
    assert reopened.counters["replayed_records"] == 0  # the rollups came from the old snapshot
    assert _metrics(reopened) == before
    assert reopened.grand_total().unpriced == 3 and reopened.grand_total().cost == Decimal("2.25")
    reopened.close()


def test_retention_drops_old_segments_and_rollup_buckets(tmp_path: Path) -> None:
    config = StoreConfig(data_dir=tmp_path, segment_bytes=2048, ledger_retention_days=90, snapshot_interval_s=3600)
    store = Store(config)
    store.start()
    old = time.time_ns() - 200 * 86400 * 10**9
    store.ingest([make_record(i, start_ns=old + i) for i in range(12)])
    store.snapshot()
    store.ingest([make_record(i, start_ns=time.time_ns()) for i in range(100, 112)])
    store.snapshot()
    assert len(store.ledger.segments()) == 2
    store.close()

    reopened = Store(config)
    reopened.start()  # start-up applies retention
    kept = reopened.read_records()
    assert all(r.start_ns > old + 100 for r in kept)
    assert {r.span_id for r in kept} >= {make_record(i).span_id for i in range(100, 112)}
    assert all(start > time.time() - 3 * 86400 for start in reopened.rollups.buckets["minute"])
    reopened.close()


def test_submit_beyond_the_queue_bound_raises_queue_full(tmp_path: Path) -> None:
    store = Store(StoreConfig(data_dir=tmp_path, max_pending_records=3))
    store.start()
    with pytest.raises(QueueFullError):
        store.submit(prepare([make_record(i) for i in range(4)]))
    assert store.counters["rejected_queue_full"] == 4
    store.close()


def test_fsync_policy_is_applied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    ledger = Ledger(tmp_path, fsync="always")
    ledger.open()
    ledger.append([b"x\n"])
    assert len(calls) == 1
    ledger.close()


def test_two_spans_for_one_call_yield_one_record() -> None:
    parent = make_record(0, tokens=(500, 50), source="costspan")
    child = make_record(1, parent=parent.span_id, tokens=(500, 50), source="com.anthropic.sdk.python")
    other = make_record(2, parent=parent.span_id, tokens=(9, 9))  # a different call under it
    batch = [child, parent, other]
    dedupe = Deduplicator()
    result = dedupe.filter([call_key(r) for r in batch])
    assert [batch[i].source for i in result.kept] == ["costspan", "scope"]
    assert (result.dropped, result.duplicate_calls) == ([0], 1)

    # across batches: the child came first, the wrapper later -> the first one stays
    dedupe = Deduplicator()
    first = dedupe.filter([call_key(child)])
    dedupe.remember(call_key(child))
    later = dedupe.filter([call_key(parent)])
    assert (first.kept, later.kept, later.duplicate_calls) == ([0], [], 1)


def test_a_dropped_duplicate_is_taken_out_of_the_rollups(config: StoreConfig) -> None:
    store = Store(config)
    store.start()
    parent = make_record(0, tokens=(500, 50), source="costspan", cost="1.5")
    child = make_record(1, parent=parent.span_id, tokens=(500, 50), cost="1.5")
    batch = prepare([parent, child], keep_records=False)  # as an ingest worker prepares it
    result = store.submit(batch).result(5)
    assert (result.stored, result.duplicate_calls) == (1, 1)
    assert store.grand_total().cost == Decimal("1.5")
    assert store.grand_total().requests == 1
    assert canonical(store.rollups) == canonical(recompute(store))
    store.close()


def test_latency_quantiles_come_from_the_rollup_histograms(config: StoreConfig) -> None:
    store = Store(config)
    store.start()
    records = [make_record(i)._replace(end_ns=BASE_NS + i * 1_000_000_000 + 50_000_000) for i in range(90)]
    records += [make_record(i)._replace(end_ns=BASE_NS + i * 1_000_000_000 + 3_000_000_000) for i in range(90, 100)]
    store.ingest(records)
    totals = store.grand_total()
    p50, p99 = totals.quantile(0.5), totals.quantile(0.99)
    assert p50 is not None and 0.04 <= p50 <= 0.08  # the 50 ms calls' bucket
    assert p99 is not None and 2.56 <= p99 <= 5.12  # the 3 s calls' bucket
    store.close()


def test_a_record_written_twice_to_the_ledger_is_replayed_once(config: StoreConfig) -> None:
    store = Store(config)
    store.start()
    store.ingest([make_record(i) for i in range(3)])
    store.close()
    segment = config.data_dir / "ledger" / "segment-00000001.log"
    first_line = segment.read_bytes().splitlines(keepends=True)[0]
    with segment.open("ab") as fh:  # e.g. a commit whose fsync failed after its write, then a retry
        fh.write(first_line)
    for snapshot in (config.data_dir / "snapshots").iterdir():
        snapshot.unlink()

    reopened = Store(config)
    reopened.start()
    assert reopened.counters["ledger_duplicates_skipped"] == 1
    assert reopened.rollups.records == 3
    assert reopened.grand_total().cost == Decimal("0.0369")
    reopened.close()


def test_a_call_span_stored_before_a_snapshot_still_dedupes_its_parent_after_a_restart(
    config: StoreConfig,
) -> None:
    child = make_record(1, parent=f"{1:016x}", tokens=(500, 50), source="com.anthropic.sdk.python")
    parent = make_record(0, tokens=(500, 50), source="costspan")  # span id 1: the child's parent
    assert parent.span_id == child.parent_span_id and parent.trace_id == child.trace_id
    store = Store(config)
    store.start()
    store.ingest([make_record(i) for i in range(8, 12)] + [child])
    store.snapshot()  # the child is now before the snapshot: it is not replayed at start-up
    store.ingest([make_record(12)])
    store.close()

    reopened = Store(config)
    reopened.start()
    assert reopened.counters["replayed_records"] == 0  # close() snapshotted everything
    result = reopened.ingest([parent])
    assert (result.stored, result.duplicate_calls) == (0, 1)
    assert reopened.grand_total().requests == 6
    reopened.close()


def test_the_dedupe_window_read_back_at_start_up_is_bounded(tmp_path: Path) -> None:
    config = StoreConfig(data_dir=tmp_path / "data", snapshot_interval_s=3600, dedupe_recent=3)
    children = [make_record(4 * i + 1, parent=f"{4 * i + 1:016x}", tokens=(7, 7)) for i in range(5)]
    store = Store(config)
    store.start()
    store.ingest(children)
    store.close()

    reopened = Store(config)
    reopened.start()
    parents = [make_record(4 * i, tokens=(7, 7)) for i in range(5)]
    assert [p.span_id for p in parents] == [c.parent_span_id for c in children]
    result = reopened.ingest(parents)
    # only the newest three children are in the window: the two oldest children's parents are stored
    assert (result.stored, result.duplicate_calls) == (2, 3)
    assert {r.span_id for r in reopened.read_records()} >= {parents[0].span_id, parents[1].span_id}
    reopened.close()


def test_the_lines_a_snapshot_includes_are_scanned_for_their_ids_only(config: StoreConfig) -> None:
    """Without a dedupe snapshot (a data dir from before the dedupe window, or its file lost), start-up
    reads only the span ids of the lines the snapshot includes (a fast scan), with the same checks as
    a replay: a corrupt line is reported and skipped, a line written twice counts once."""
    store = Store(config)
    store.start()
    store.ingest([make_record(i) for i in (0, 2, 4)])
    store.close()  # the snapshot includes all three
    shutil.rmtree(config.data_dir / "dedupe")
    segment = config.data_dir / "ledger" / "segment-00000001.log"
    lines = segment.read_bytes().splitlines(keepends=True)
    assert len({len(line) for line in lines}) == 1  # rewritten in place, the snapshot's offset stays a line end
    lines[1] = lines[1].replace(b"gpt-4o", b"gpt-4x")  # checksum no longer matches
    lines[2] = lines[0]  # e.g. a commit whose fsync failed after its write, then a retry
    segment.write_bytes(b"".join(lines))

    reopened = Store(config)
    reopened.start()
    try:
        assert reopened.counters["replayed_records"] == 0
        assert reopened.counters["ledger_duplicates_skipped"] == 1
        assert reopened.errors["ledger"] == 1
        assert reopened.rollups.records == 3  # from the snapshot
        result = reopened.ingest([make_record(0), make_record(2)])
        # span 0's id was read back; span 2's line is unreadable, so a resend of it is stored again
        assert (result.stored, result.duplicate_spans) == (1, 1)
    finally:
        reopened.close()


def test_retention_keeps_a_segment_holding_one_recent_record(tmp_path: Path) -> None:
    """The start-up scan remembers each closed segment's newest record: one late, recent record among
    old ones keeps the segment, with or without a second read."""
    config = StoreConfig(data_dir=tmp_path, segment_bytes=2048, ledger_retention_days=90, snapshot_interval_s=3600)
    old = time.time_ns() - 200 * 86400 * 10**9
    store = Store(config)
    store.start()
    store.ingest([make_record(i, start_ns=old + i) for i in range(6)] + [make_record(6)])  # the last is recent
    store.ingest([make_record(i, start_ns=time.time_ns()) for i in range(100, 112)])
    store.close()
    assert len(store.ledger.segments()) == 2
    for rounds in range(2):
        reopened = Store(config)
        reopened.start()
        reopened._apply_retention()  # a second pass answers from what the scan remembered
        assert len(reopened.ledger.segments()) == 2, rounds
        assert len(reopened.read_records()) == 19
        reopened.close()
