"""The commit listeners fold a batch's calls summed by dimensions (prepared in the ingest workers) and
must end exactly where folding the calls one by one ends: the usage index, and the budgets' settling."""

from __future__ import annotations

import random
from concurrent.futures import Future
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from costspan.processor.api import UsageIndex
from costspan.processor.api._index import DAY_S
from costspan.processor.budgets import BudgetBook, Call, SpikeDetector, settle_committed, settle_records
from costspan.processor.store._batch import Committed, PreparedBatch, prepare
from costspan.processor.store._ledger import Position
from costspan.processor.store._records import API_SOURCE, CallRecord
from costspan.processor.store._store import IngestResult, Store, StoreConfig
from tests.component.budgets.conftest import FakeClock
from tests.support.records import call_record

NOW = int(datetime(2026, 3, 10, 12, 0, tzinfo=UTC).timestamp())


def make_record(rng: random.Random, i: int, *, parent: str = "", trace: str | None = None) -> CallRecord:
    start_s = NOW - rng.choice([0, 0, 0, 3600, 7200, DAY_S, 3 * DAY_S]) - rng.randrange(3600)
    start_ns = start_s * 10**9
    priced = rng.random() > 0.1
    cost = Decimal(rng.randrange(1, 10_000)) / 100_000 if priced else None
    provider, model = rng.choice([("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-6")])
    return call_record(
        i,
        trace_id=trace or f"{i:032x}",
        parent_span_id=parent,
        start_ns=start_ns,
        latency_ms=rng.randrange(1, 5000),  # whole milliseconds: the latency sums are exact floats
        service=rng.choice(["api", "worker", ""]),
        tenant=rng.choice(["acme", "globex", "initech"]),
        workflow=rng.choice(["", "wf-1", "wf-2"]),
        user=rng.choice(["", "u1", "u2", "u3"]),
        session=rng.choice(["", f"s{rng.randrange(12)}"]),
        provider=provider,
        model=model,
        operation=rng.choice(["chat", "embeddings"]),
        source=rng.choice(["costspan", "openai-v2", API_SOURCE]),
        tokens=(rng.randrange(1000), rng.randrange(500), rng.choice([0, 0, 50])),
        cost=cost,
        unpriced_reason="" if priced else "unknown model",
        error_type=rng.choice(["", "", "", "RateLimitError"]),
        project=rng.choice(["", "p1", "p2"]),
    )


def same_index(a: UsageIndex, b: UsageIndex) -> None:
    assert a.records == b.records
    assert a.days == b.days  # dataclass equality: every Sums, histogram, session and service set
    assert a.hours == b.hours
    assert a.session_last == b.session_last
    assert a.multi_day == b.multi_day
    assert {k: {n: s.to_json() for n, s in v.items()} for k, v in a.series.items()} == {
        k: {n: s.to_json() for n, s in v.items()} for k, v in b.series.items()
    }


def committed(batch: PreparedBatch, kept: list[int], n: int) -> Committed:
    return Committed([(batch, kept)], Position(1, n))


def test_the_index_folded_from_sums_equals_the_index_fed_call_by_call() -> None:
    rng = random.Random(3)
    records = [make_record(rng, i) for i in range(1500)]
    by_call = UsageIndex(max_sessions_per_day=8)  # the bound on a day's sessions is reached too
    for r in records:
        by_call.add(r)  # each call summed alone
    by_sums = UsageIndex(max_sessions_per_day=8)
    for n, start in enumerate(range(0, len(records), 256), 1):
        batch = prepare(records[start : start + 256], keep_records=False)
        assert batch.sums is not None and batch.records is None  # prepared where the worker is
        assert sum(s.sums.requests for s in batch.sums.values()) == len(batch)
        by_sums.on_committed(committed(batch, list(range(len(batch))), n))
    same_index(by_call, by_sums)
    assert by_sums.records == 1500


def test_through_the_store_duplicates_are_left_out_of_the_sums(tmp_path: Path) -> None:
    rng = random.Random(5)
    records = [make_record(rng, i) for i in range(600)]
    # a wrapper's span around call 10 with the same usage (a duplicate call), and repeated spans
    wrapper = records[10]._replace(span_id="f" * 16, parent_span_id="")
    records[10] = records[10]._replace(parent_span_id=wrapper.span_id)
    store = Store(StoreConfig(tmp_path / "data", fsync="never"))
    index = UsageIndex()
    store.add_sums_listener(index.on_committed)
    store.start()
    try:
        results: list[Future[IngestResult]] = [
            store.submit(prepare(records[:300], keep_records=False)),
            store.submit(prepare([*records[250:600], wrapper], keep_records=False)),
            store.submit(prepare(records[:100], keep_records=False)),
        ]
        stored = [f.result(30) for f in results]
    finally:
        store.close()
    assert sum(r.stored for r in stored) == 600
    assert sum(r.duplicate_spans + r.duplicate_calls for r in stored) == 151
    replayed = UsageIndex()
    replayed.add_many(Store(StoreConfig(tmp_path / "data")).read_records())
    same_index(replayed, index)


def of_held_scope(r: CallRecord) -> CallRecord:
    """``r`` as a call of the scope and model the test's reservations hold."""
    return r._replace(
        tenant="acme",
        service="api",
        provider="openai",
        model="gpt-4o",
        source="costspan",
        workflow="",
        user="",
        project="",
    )


def books(clock: FakeClock) -> tuple[BudgetBook, BudgetBook]:
    out = []
    for _ in range(2):
        book = BudgetBook(clock=clock)
        book.spike_detector = SpikeDetector(factor=Decimal(2), baseline_hours=3, min_spend_usd=Decimal("0.01"))
        book.put_budget({"id": "acme-usd", "scope": {"tenant": "acme"}, "period": "day", "limit": "5"})
        book.put_budget(
            {"id": "acme-tok", "scope": {"tenant": "acme"}, "period": "day", "limit": "100000", "unit": "tokens"}
        )
        book.put_budget({"id": "all-req", "scope": {}, "period": "day", "limit": "1000", "unit": "requests"})
        book.put_budget({"id": "api-gpt", "scope": {"service": "api"}, "period": "day", "limit": "1"})
        out.append(book)
    return out[0], out[1]


def test_settling_from_sums_equals_settling_call_by_call() -> None:
    clock = FakeClock(NOW)
    one_by_one, summed = books(clock)
    rng = random.Random(11)
    records = [make_record(rng, i)._replace(start_ns=NOW * 10**9) for i in range(400)]
    # open reservations for one scope and model: those calls settle them oldest first, one by one
    held = Call(tenant="acme", service="api", provider="openai", model="gpt-4o")
    for i in (5, 6, 7):  # calls of that scope and model without an id: they settle the oldest holds
        records[i] = of_held_scope(records[i])
    for book, settle in ((one_by_one, settle_records), (summed, None)):
        first, second, _third = (book.check(held).reservation_id for _ in range(3))
        assert first and second
        mine = list(records)
        mine[0] = of_held_scope(mine[0])._replace(reservation_id=second)  # names its own reservation
        if settle is not None:
            settle(book, mine)
        else:
            batch = prepare(mine, keep_records=False)
            settle_committed(book, committed(batch, list(range(len(batch))), 1))
        assert book.open_reservations() == 0
    assert one_by_one.open_reservations() == summed.open_reservations()
    for a, b in zip(one_by_one.status(), summed.status(), strict=True):
        assert (a.budget.id, a.scope, a.spent, a.reserved) == (b.budget.id, b.scope, b.spent, b.reserved)
    assert any(a.spent for a in summed.status())
    alerts = [sorted((x.kind, x.budget_id, x.threshold or 0) for x in b.board.recent) for b in (one_by_one, summed)]
    assert alerts[0] == alerts[1] and alerts[0]  # the same thresholds crossed
