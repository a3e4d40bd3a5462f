"""Corrections in the ledger: a repriced call's cost delta, the same after any replay, never a new call."""

from __future__ import annotations

import io
import os
from decimal import Decimal
from pathlib import Path

from costspan.processor.api._index import ALL, DAY_S, UsageIndex
from costspan.processor.serve._reprice import Progress
from costspan.processor.store._corrections import Correction
from costspan.processor.store._ledger import Position
from costspan.processor.store._records import CallRecord
from costspan.processor.store._store import Store, StoreConfig
from tests.support.records import call_record

START_NS = 1_772_000_000 * 10**9


def _records() -> list[CallRecord]:
    return [
        call_record(0, cost="0.5", workflow="wf", user="ann", start_ns=START_NS),
        call_record(1, cost="0.25", tenant="globex", start_ns=START_NS + 3600 * 10**9),
        call_record(2, cost=None, start_ns=START_NS + 2 * DAY_S * 10**9),  # unpriced
    ]


def _corrections() -> list[Correction]:
    first, _, unpriced = _records()
    priced = unpriced._replace(cost_status="priced", cost_total=Decimal("0.75"), pricing_version="v2")
    return [
        Correction(first, first._replace(cost_total=Decimal("2"), cost_input=Decimal("2"), pricing_version="v2"), 1.0),
        Correction(unpriced, priced, 1.0),
    ]


def _view(store: Store) -> tuple[object, ...]:
    with store.lock:
        total = store.rollups.grand_total()
        parts = total.parts()
        wf = store.rollups.by_workflow[("acme", "wf")]
        return (total.requests, total.unpriced, total.cost, parts.cost_input, total.input_tokens, wf.cost, wf.requests)


def test_a_correction_changes_the_cost_not_the_calls_and_survives_every_replay(tmp_path: Path) -> None:
    store = Store(StoreConfig(data_dir=tmp_path))
    store.start()
    store.ingest(_records())
    assert _view(store) == (3, 1, Decimal("0.75"), Decimal(0), 300, Decimal("0.5"), 1)
    store.snapshot()  # the originals are in the snapshot, the corrections after it
    heard: list[tuple[int, Position]] = []
    store.add_correction_listener(lambda corrections, end: heard.append((len(corrections), end)))
    end = store.correct(_corrections())
    expected = (3, 0, Decimal("3.00"), Decimal("2"), 300, Decimal("2"), 1)
    assert _view(store) == expected
    assert heard == [(2, end)]
    records = {r.span_id: r for r in store.read_records()}
    assert len(records) == 3
    assert [(r.cost_total, r.pricing_version) for r in records.values()] == [
        (Decimal("2"), "v2"),
        (Decimal("0.25"), "v1"),
        (Decimal("0.75"), "v2"),
    ]
    store.close()  # its final snapshot includes the corrections

    again = Store(StoreConfig(data_dir=tmp_path))
    again.start()
    assert _view(again) == expected
    again.close()
    for snapshot in (tmp_path / "snapshots").iterdir():  # a full replay of the ledger
        snapshot.unlink()
    full = Store(StoreConfig(data_dir=tmp_path))
    full.start()
    assert _view(full) == expected
    counters, errors = full.counts()
    assert (counters["replayed_records"], counters["ledger_duplicates_skipped"], errors) == (3, 0, {})
    full.close()


def test_the_usage_index_fed_live_equals_the_index_read_from_the_ledger(tmp_path: Path) -> None:
    store = Store(StoreConfig(data_dir=tmp_path))
    live = UsageIndex(store.ledger.directory)
    store.add_sums_listener(live.on_committed)
    store.add_correction_listener(live.on_corrected)
    store.start()
    store.ingest(_records())
    generation = live.generation
    store.correct(_corrections())
    assert live.generation > generation  # folded windows are recomputed
    replayed = UsageIndex(store.ledger.directory)
    replayed.catch_up()
    day = START_NS // 10**9 - START_NS // 10**9 % DAY_S
    for index in (live, replayed):
        with index.read():
            acme = index.days["acme"][day].total
            assert (acme.requests, acme.cost) == (1, Decimal("2"))
            later = index.days["acme"][day + 2 * DAY_S].total
            assert (later.requests, later.unpriced, later.cost) == (1, 0, Decimal("0.75"))
            assert index.days[ALL][day].total.cost == Decimal("2.25")
            assert index.names("acme", "user")["ann"].cost_between(day, day) == (1, Decimal("2"))
            assert index.records == 3
    store.close()


def test_the_progress_bar_draws_on_a_terminal_only() -> None:
    quiet = io.StringIO()
    bar = Progress(quiet, 10)
    bar.update(5, 1, force=True)
    bar.finish(10, 2)
    assert quiet.getvalue() == ""
    main, side = os.openpty()
    with os.fdopen(side, "w") as terminal:
        bar = Progress(terminal, 10, width=10)
        bar.update(5, 1, force=True)
        bar.finish(10, 2)
    drawn = os.read(main, 4096).decode()
    os.close(main)
    assert "[#####.....]  50% 5/10 calls, 1 changed" in drawn
    assert "[##########] 100% 10/10 calls, 2 changed" in drawn
