"""Usage index snapshots: a restart loads the newest valid snapshot and replays only the ledger's tail,
and ends with the same index as a full replay; a corrupt snapshot is reported and survived."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from costspan.processor.api._index import DAY_S, UsageIndex
from costspan.processor.api._index_snapshot import IndexSnapshots
from costspan.processor.api._mount import start_index
from costspan.processor.store._ledger import Position
from costspan.processor.store._records import CallRecord
from costspan.processor.store._snapshots import SNAPSHOT_FORMAT, write_checked
from costspan.processor.store._store import Store, StoreConfig
from tests.support.records import call_record


def _record(i: int, *, tenant: str, day_offset: int, session: str = "", latency_ms: int = 100) -> CallRecord:
    now = int(time.time())
    start_ns = (now - now % DAY_S - day_offset * DAY_S + 3600 + i) * 10**9
    unpriced = i % 7 == 0
    return call_record(
        i,
        start_ns=start_ns,
        latency_ms=latency_ms,
        tenant=tenant,
        workflow=f"wf-{i % 3}",
        user=f"u-{i % 4}",
        session=session or f"s-{i // 5}",
        provider="openai" if i % 2 else "anthropic",
        model="gpt-4o" if i % 2 else "claude-haiku-4-5",
        tokens=(100 + i, 10, i % 3),
        cost=None if unpriced else Decimal("0.001") * (i + 1),
        error_type="timeout" if i % 11 == 0 else "",
        ttfc_s=None,
        project=f"p-{i % 2}" if i % 5 else "",
    )


def _batch(first: int, n: int) -> list[CallRecord]:
    return [
        _record(i, tenant=("acme", "globex")[i % 2], day_offset=i % 4, latency_ms=50 + i)
        for i in range(first, first + n)
    ]


def _state(index: UsageIndex, tmp: Path) -> dict[str, Any]:
    """The whole index as plain data (what a snapshot holds), in a canonical order."""
    _, body = IndexSnapshots(tmp)._encode(index)
    data: dict[str, Any] = json.loads(body)
    data.pop("position")
    for key in ("days", "hours", "series"):
        data[key] = sorted(data[key], key=lambda e: json.dumps(e[:-1]))
    for d in data["days"]:
        for key in ("calls", "providers", "projects", "sessions"):
            d[2][key] = sorted(d[2][key], key=json.dumps)
    return data


def _attached(store: Store, snapshots: IndexSnapshots) -> UsageIndex:
    index = UsageIndex(store.ledger.directory)
    store.add_commit_listener(lambda records: index.on_commit(records, store.ledger.position))
    start_index(index, snapshots, store)
    return index


def test_restart_from_snapshot_and_tail_equals_a_full_replay(tmp_path: Path) -> None:
    data = tmp_path / "data"
    snapshots = IndexSnapshots(data / "usage-index")
    store = Store(StoreConfig(data, snapshot_interval_s=3600))
    store.start()
    index = _attached(store, snapshots)
    store.ingest(_batch(0, 120))
    # a session on two days, and a late call for an old day
    store.ingest(
        [
            _record(500, tenant="acme", day_offset=1, session="long"),
            _record(501, tenant="acme", day_offset=0, session="long"),
        ]
    )
    assert index.live and index.records == 122
    assert snapshots.save(index) is not None
    store.ingest(_batch(1000, 80))  # the tail after the snapshot
    store.ingest(_batch(0, 10))  # duplicates: not stored, not counted
    store.ingest([_record(2000, tenant="acme", day_offset=9)])
    assert index.records == 203
    live_state = _state(index, tmp_path / "scratch")
    store.close()  # a kill: the index writes no snapshot of its own

    store = Store(StoreConfig(data, snapshot_interval_s=3600))
    store.start()
    restarted = _attached(store, snapshots)
    assert restarted.records == 203
    full = UsageIndex(store.ledger.directory)
    assert full.catch_up() == 203
    assert _state(restarted, tmp_path / "s1") == _state(full, tmp_path / "s2") == live_state
    assert restarted.multi_day["acme"]["long"] == restarted.session_last["acme"]["long"]
    # the restarted index goes on with new records
    store.ingest(_batch(3000, 5))
    assert restarted.records == 208
    store.close()


def test_a_corrupt_snapshot_is_reported_and_survived(tmp_path: Path) -> None:
    data = tmp_path / "data"
    snapshots = IndexSnapshots(data / "usage-index")
    store = Store(StoreConfig(data, snapshot_interval_s=3600))
    store.start()
    index = _attached(store, snapshots)
    store.ingest(_batch(0, 50))
    older = snapshots.save(index)
    store.ingest(_batch(100, 50))
    newest = snapshots.save(index)
    assert older is not None and newest is not None and older != newest
    store.close()
    raw = bytearray(newest.read_bytes())
    raw[-10] ^= 0x55  # a flipped byte: the checksum no longer matches
    newest.write_bytes(bytes(raw))

    store = Store(StoreConfig(data, snapshot_interval_s=3600))
    store.start()
    fresh = IndexSnapshots(data / "usage-index")
    restarted = _attached(store, fresh)
    assert fresh.corrupt == 1 and store.errors["usage_index"] == 1  # counted in costspan_internal_errors
    assert restarted.records == 100  # the older snapshot + the tail
    full = UsageIndex(store.ledger.directory)
    full.catch_up()
    assert _state(restarted, tmp_path / "a") == _state(full, tmp_path / "b")
    # every snapshot broken: a full replay
    older.write_bytes(b"not a snapshot")
    newest.unlink()
    again = IndexSnapshots(data / "usage-index")
    replayed = UsageIndex(store.ledger.directory)
    start_index(replayed, again, store)
    assert again.corrupt == 1 and replayed.records == 100
    store.close()


def test_a_snapshot_ahead_of_the_ledger_is_not_used(tmp_path: Path) -> None:
    data = tmp_path / "data"
    snapshots = IndexSnapshots(data / "usage-index")
    store = Store(StoreConfig(data, snapshot_interval_s=3600))
    store.start()
    index = _attached(store, snapshots)
    store.ingest(_batch(0, 30))
    path = snapshots.save(index)
    store.close()
    assert path is not None
    (segment,) = (data / "ledger").glob("segment-*.log")
    with segment.open("r+b") as fh:  # the ledger lost its tail (fsync "never" and a power cut)
        fh.truncate(segment.stat().st_size // 2)
    store = Store(StoreConfig(data, snapshot_interval_s=3600))
    store.start()
    fresh = IndexSnapshots(data / "usage-index")
    restarted = _attached(store, fresh)
    assert fresh.corrupt == 1
    full = UsageIndex(store.ledger.directory)
    assert restarted.records == full.catch_up() < 30
    store.close()


def test_a_second_snapshot_reencodes_only_what_changed_and_still_loads_whole(tmp_path: Path) -> None:
    """Snapshots cache each day's, hour's and name's encoding; after new calls (a late one for an old
    day among them) and a prune, the next snapshot still holds exactly the live index."""
    snapshots = IndexSnapshots(tmp_path / "usage-index")
    index = UsageIndex()
    index.add_many(_batch(0, 150))
    index.position = Position(1, 100)
    assert snapshots.save(index) is not None
    cached = dict(snapshots._days), dict(snapshots._hours), dict(snapshots._series)
    index.add_many([*_batch(150, 3), _record(900, tenant="acme", day_offset=3, session="late")])
    index.prune(time.time(), day_retention_days=2, hour_retention_days=1)
    index.position = Position(1, 200)
    assert snapshots.save(index) is not None
    # unchanged entries kept their encoding; pruned ones left the cache
    assert any(snapshots._days.get(k) == v for k, v in cached[0].items())
    assert len(snapshots._hours) < len(cached[1])
    loaded = UsageIndex()
    assert snapshots.load(loaded).position == Position(1, 200)
    assert _state(loaded, tmp_path / "a") == _state(index, tmp_path / "b")


def test_a_snapshot_with_names_grouped_per_tenant_still_loads(tmp_path: Path) -> None:
    """Snapshots written before 26 Nov 2026 hold each tenant's users (or workflows) in one entry."""
    index = UsageIndex()
    index.add_many(_batch(0, 60))
    index.position = Position(1, 100)
    _, body = IndexSnapshots(tmp_path / "new")._encode(index)
    data = json.loads(body)
    grouped: dict[tuple[str, str], list[Any]] = {}
    for tenant, dim, name, series in data["series"]:
        grouped.setdefault((tenant, dim), []).append([name, series])
    data["series"] = [[tenant, dim, names] for (tenant, dim), names in grouped.items()]
    (tmp_path / "old").mkdir()
    write_checked(tmp_path / "old" / "index-00000001-000000000100.json", SNAPSHOT_FORMAT, json.dumps(data).encode())
    loaded = UsageIndex()
    assert IndexSnapshots(tmp_path / "old").load(loaded).position == Position(1, 100)
    assert _state(loaded, tmp_path / "a") == _state(index, tmp_path / "b")
