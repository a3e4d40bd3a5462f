"""Columnar history: closed segments compacted to Parquet by a child process; exports read them via DuckDB."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import time
from decimal import Decimal
from pathlib import Path

import pytest

from costspan.processor.api._routes_calls import _export_body
from costspan.processor.store._compact import EXPORT_COLUMNS, EXTRA_COLUMNS, parquet_path
from costspan.processor.store._history import History
from costspan.processor.store._store import Store, StoreConfig
from tests.support.records import call_record

_BASE_NS = 1_772_000_000 * 10**9
_WINDOW = (_BASE_NS - 10**12, _BASE_NS + 10**15)


def _records(n: int, first: int = 0) -> list:  # type: ignore[type-arg]
    return [
        call_record(
            i,
            start_ns=_BASE_NS + i * 10**9,
            tenant=("acme", "beta")[i % 2],
            user=f'user "{i % 3}", with a comma',
            cost=None if i % 5 == 0 else f"0.00{i % 9 + 1}",
            tokens_estimated=i % 4 == 0,
        )
        for i in range(first, first + n)
    ]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    config = StoreConfig(data_dir=tmp_path / "data", snapshot_interval_s=3600, segment_bytes=16 * 1024)
    s = Store(config)
    s.start()
    for chunk in range(6):
        s.ingest(_records(50, chunk * 50))
    return s


def _compact(store: Store) -> None:
    failures = store.history.failures
    store.history.poll(store.ledger.segments(), store.ledger.position.segment)
    assert store.history.wait(60)
    assert store.history.failures == failures


def _body(store: Store, fmt: str, history: History | None = None, **scope: str) -> str:
    chunks = _export_body(
        fmt,  # type: ignore[arg-type]
        store.ledger.directory,
        history or store.history,
        *_WINDOW,
        (scope.get("tenant"), scope.get("user"), scope.get("project")),
    )
    return "".join(chunks)


def test_closed_segments_are_compacted_by_a_child_and_exports_read_the_same_rows(store: Store) -> None:
    segments = store.ledger.segments()
    assert len(segments) > 3
    no_parquet = History(store.ledger.directory, store.config.data_dir / "nothing-here")
    before_csv, before_json = _body(store, "csv", no_parquet), _body(store, "json", no_parquet)

    _compact(store)
    closed = segments[:-1]
    assert store.history.compacted() == set(closed)  # the open segment stays JSON only
    for segment in closed:
        assert oct(parquet_path(store.history.directory, segment).stat().st_mode & 0o777) == "0o600"
        assert (store.ledger.directory / f"segment-{segment:08d}.log").exists()  # still the write-ahead truth

    after_csv = _body(store, "csv")
    rows = list(csv.reader(io.StringIO(after_csv)))
    assert rows[0] == list(EXPORT_COLUMNS)
    assert len(rows) == 301
    assert rows == list(csv.reader(io.StringIO(before_csv)))
    assert json.loads(_body(store, "json")) == json.loads(before_json)
    assert len({row[0] for row in rows[1:]}) == 300  # no duplicates

    cost = sum((Decimal(row[EXPORT_COLUMNS.index("cost_usd")] or 0) for row in rows[1:]), Decimal(0))
    assert cost == store.grand_total().cost

    beta = json.loads(_body(store, "json", tenant="beta"))
    assert len(beta) == 150 and {r["tenant_id"] for r in beta} == {"beta"}
    one_user = list(csv.reader(io.StringIO(_body(store, "csv", user='user "1", with a comma'))))
    assert len(one_user) == 101
    store.close()


def test_the_parquet_files_hold_every_column_for_any_reader(store: Store) -> None:
    import duckdb

    _compact(store)
    files = sorted(str(p) for p in store.history.directory.glob("*.parquet"))
    con = duckdb.connect()
    names = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet({files})").fetchall()]
    assert tuple(names) == EXPORT_COLUMNS + EXTRA_COLUMNS
    (total,) = con.execute(f"SELECT count(*) FROM read_parquet({files})").fetchone() or (0,)
    lines = sum(1 for line in store.ledger.read() if line.end.segment < store.ledger.position.segment)
    assert total == lines
    store.close()


def test_a_killed_child_leaves_no_parquet_file_and_the_next_one_compacts(store: Store) -> None:
    store.history.poll(store.ledger.segments(), store.ledger.position.segment)
    child = store.history._child
    assert child is not None
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    for path in store.history.directory.glob("*.parquet"):
        assert path.stat().st_size > 0  # a file is whole or absent (written as .tmp, renamed)
    store.history.poll(store.ledger.segments(), store.ledger.position.segment)  # reaps the failure
    assert store.history.failures == 1
    _compact(store)
    assert store.history.compacted() == set(store.ledger.segments()[:-1])
    assert not list(store.history.directory.glob("*.tmp"))
    assert len(list(csv.reader(io.StringIO(_body(store, "csv"))))) == 301
    store.close()


def test_compaction_runs_from_the_periodic_work_and_close_stops_it(tmp_path: Path) -> None:
    config = StoreConfig(data_dir=tmp_path / "data", snapshot_interval_s=0.2, segment_bytes=8 * 1024)
    store = Store(config)
    store.start()
    for chunk in range(10):
        store.ingest(_records(10, chunk * 10))
    deadline = time.monotonic() + 30
    while not store.history.compacted() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert store.history.compacted()
    store.close()
    assert not store.history.running


def test_history_can_be_turned_off(tmp_path: Path) -> None:
    config = StoreConfig(data_dir=tmp_path / "data", snapshot_interval_s=3600, segment_bytes=8 * 1024, history=False)
    store = Store(config)
    store.start()
    for chunk in range(10):
        store.ingest(_records(10, chunk * 10))
    assert len(store.ledger.segments()) > 1
    store.history.poll(store.ledger.segments(), store.ledger.position.segment)
    assert not store.history.running and not store.history.compacted()
    assert len(json.loads(_body(store, "json"))) == 100
    store.close()


def test_a_segment_also_closes_after_segment_seconds(tmp_path: Path) -> None:
    """The open segment (read from its JSON lines by an export) holds at most ``segment_seconds`` of calls."""
    config = StoreConfig(data_dir=tmp_path / "data", snapshot_interval_s=3600, segment_seconds=1.0)
    store = Store(config)
    store.start()
    store.ingest(_records(5))
    store.ingest(_records(5, 5))
    assert store.ledger.segments() == [1]  # well under segment_bytes, not yet old
    time.sleep(1.1)
    store.ingest(_records(5, 10))
    assert store.ledger.segments() == [1, 2]
    store.close()
    with pytest.raises(ValueError, match="segment_seconds"):
        Store(StoreConfig(data_dir=tmp_path / "other", segment_seconds=0))


def test_the_server_does_not_load_pyarrow_or_duckdb_until_it_needs_them() -> None:
    import subprocess
    import sys

    code = (
        "import sys, costspan.processor.serve, costspan.processor.api._routes_calls, "
        "costspan.processor.store._history; print('pyarrow' in sys.modules, 'duckdb' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    assert out.stdout.split() == ["False", "False"]
