"""The session index: totals per session and tenant kept as calls are stored, corrections as cost
deltas, bounded with a filter of dropped ids (a lookup of one of those falls back to the ledger)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from costspan.processor.store._corrections import Correction
from costspan.processor.store._ledger import Position
from costspan.processor.store._store import Store, StoreConfig
from costspan.track._sessions import SessionIndex, SessionTotals, scan
from tests.support.records import call_record

NS = 1_772_000_000 * 10**9


def test_totals_per_session_and_tenant() -> None:
    index = SessionIndex()
    records = [
        call_record(0, session="s-1", cost="0.25", tokens=(100, 10), start_ns=NS),
        call_record(1, session="s-1", cost=None, tokens=(50, 5), start_ns=NS + 10**9, model="mystery"),
        call_record(2, session="s-1", tenant="globex", cost="1", start_ns=NS + 2 * 10**9),
        call_record(3, session="", cost="9"),  # no session: not indexed
        call_record(4, session="s-2", cost="0.5"),
    ]
    index.add(records)
    both = index.lookup("s-1")
    assert both is not None
    assert (both.calls, both.cost_usd, both.unpriced, both.total_tokens) == (3, Decimal("1.25"), 1, 275)
    assert both.tenants == ("acme", "globex") and both.models == {"gpt-4o": 2, "mystery": 1}
    assert both.first_call is not None and both.last_call is not None
    assert both.last_call.timestamp() - both.first_call.timestamp() == 2
    acme = index.lookup("s-1", tenant="acme")
    assert acme is not None and (acme.calls, acme.cost_usd, acme.tenants) == (2, Decimal("0.25"), ("acme",))
    assert index.lookup("s-1", tenant="nobody") == SessionTotals(session_id="s-1")
    assert index.lookup("unknown") == SessionTotals(session_id="unknown")
    for tenant in (None, "acme", "globex"):  # the same answer as a read of every record
        assert index.lookup("s-1", tenant) == scan(records, "s-1", tenant)
    assert len(index) == 2


def test_a_repriced_call_changes_its_sessions_cost() -> None:
    index = SessionIndex()
    old = call_record(0, session="s-1", cost=None)
    index.add([old, call_record(1, session="s-1", cost="1")])
    index.correct([Correction(old, old._replace(cost_total=Decimal("0.4"), cost_status="priced"), 0.0)], Position(0, 0))
    found = index.lookup("s-1")
    assert found is not None and (found.cost_usd, found.unpriced) == (Decimal("1.4"), 0)


def test_past_max_sessions_the_oldest_are_dropped_and_looked_up_in_the_ledger() -> None:
    index = SessionIndex(max_sessions=10)
    records = [call_record(i, session=f"s-{i}", start_ns=NS + i * 10**9) for i in range(11)]
    index.add(records)
    assert len(index) == 9 and index.dropped == 2  # down to 90 %: the two oldest
    assert index.lookup("s-0") is None and index.lookup("s-1") is None  # maybe partial: the caller scans
    assert scan(records, "s-0", None).calls == 1
    kept = index.lookup("s-10")
    assert kept is not None and kept.calls == 1
    index.add([call_record(20, session="s-0")])  # a dropped session that goes on: still read from the ledger
    assert index.lookup("s-0") is None


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_max_sessions_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(ValueError, match="max_sessions"):
        SessionIndex(max_sessions=bad)  # type: ignore[arg-type]


def test_attached_to_a_store_it_counts_the_ledger_its_corrections_and_every_call_after(tmp_path: Path) -> None:
    store = Store(StoreConfig(data_dir=tmp_path))
    store.start()
    try:
        unpriced = call_record(0, session="s-1", cost=None, start_ns=NS)
        store.ingest([unpriced, call_record(1, session="s-1", cost="1", start_ns=NS + 1)])
        priced = unpriced._replace(cost_total=Decimal("0.4"), cost_status="priced", pricing_version="v2")
        store.correct([Correction(unpriced, priced, 1.0)])  # in the ledger before the index reads it
        index = SessionIndex()
        index.attach(store)
        store.ingest([call_record(2, session="s-1", cost="2", start_ns=NS + 2)])  # from the commit listener
        later = call_record(3, session="s-2", cost=None, start_ns=NS + 3)
        store.ingest([later])
        store.correct([Correction(later, later._replace(cost_total=Decimal("3"), cost_status="priced"), 2.0)])
        for sid in ("s-1", "s-2"):  # the same as a read of every record, corrections applied
            assert index.lookup(sid) == scan(store.read_records(), sid, None)
        found = index.lookup("s-1")
        assert found is not None and (found.calls, found.cost_usd, found.unpriced) == (3, Decimal("3.4"), 0)
    finally:
        store.close()
