"""A budget created mid-period starts from what its scope already spent in the period (the store's
ledger), once: putting it again, changing its limit or restarting never counts that spend twice."""

from __future__ import annotations

import threading
from decimal import Decimal
from pathlib import Path

from costspan.pricing import Pricer
from costspan.processor.budgets import BudgetBook, CostEstimator, StoredSpend, settle_committed
from costspan.processor.store import Store, StoreConfig
from tests.component.budgets.conftest import FakeClock
from tests.support.records import call_record

DAY = 86400


def _book(clock: FakeClock, pricer: Pricer, data_dir: Path, store: Store) -> BudgetBook:
    book = BudgetBook(clock=clock, estimator=CostEstimator(pricer, clock=clock), data_dir=data_dir, fsync="never")
    book.spend_source = StoredSpend(store)
    return book


def _rows(book: BudgetBook) -> dict[tuple[str, str], Decimal]:
    return {(row.budget.id, row.scope.get("tenant", "")): row.spent for row in book.status()}


def test_a_budget_created_mid_period_starts_from_the_stored_spend_once(
    clock: FakeClock, pricer: Pricer, tmp_path: Path
) -> None:
    store = Store(StoreConfig(data_dir=tmp_path / "store", fsync="never"))
    store.start()
    now = clock()

    def at(seconds_ago: float) -> int:
        return int((now - seconds_ago) * 1e9)

    store.ingest(
        [
            call_record(1, start_ns=at(3600), cost="0.25", tokens=(100, 20)),
            call_record(2, start_ns=at(60), cost="0.5", tokens=(300, 80), tenant="globex", workflow="wf"),
            call_record(3, start_ns=at(2 * DAY), cost="4", tokens=(1, 1)),  # March 8th: this month, not today
            call_record(4, start_ns=at(40 * DAY), cost="8"),  # January
            call_record(5, start_ns=at(30), cost=None, tokens=(7, 3)),  # unpriced: tokens and a request, no cost
        ]
    )
    book = _book(clock, pricer, tmp_path / "budgets", store)
    store.add_sums_listener(lambda committed: settle_committed(book, committed))
    try:
        book.put_budget({"id": "acme-day", "scope": {"tenant": "acme"}, "period": "day", "limit": "10"})
        book.put_budget({"id": "each-month", "scope": {"tenant": "*"}, "period": "month", "limit": "10"})
        book.put_budget({"id": "all-tokens", "period": "day", "limit": "1000", "unit": "tokens"})
        book.put_budget(
            {"id": "wf-calls", "scope": {"workflow": "wf"}, "period": "day", "limit": "9", "unit": "requests"}
        )
        expected = {
            ("acme-day", "acme"): Decimal("0.25"),
            ("each-month", "acme"): Decimal("4.25"),
            ("each-month", "globex"): Decimal("0.5"),
            ("all-tokens", ""): Decimal(510),
            ("wf-calls", ""): Decimal(1),
        }
        assert _rows(book) == expected

        # put again unchanged, or with another limit: the counters carry on, nothing is added
        book.put_budget({"id": "acme-day", "scope": {"tenant": "acme"}, "period": "day", "limit": "10"})
        book.put_budget({"id": "each-month", "scope": {"tenant": "*"}, "period": "month", "limit": "20"})
        assert _rows(book) == expected

        # a call stored after the budget exists is settled into it once
        store.ingest([call_record(6, start_ns=at(10), cost="1", tokens=(10, 10))])
        expected[("acme-day", "acme")] += 1
        expected[("each-month", "acme")] += 1
        expected[("all-tokens", "")] += 20
        assert _rows(book) == expected

        # a restart re-applies the same budgets (as the environment's are): no double count
        book.close()
        book = _book(clock, pricer, tmp_path / "budgets", store)
        book.put_budget({"id": "acme-day", "scope": {"tenant": "acme"}, "period": "day", "limit": "10"})
        assert _rows(book) == expected

        # a new period for the same id starts over from the stored spend of that period
        book.put_budget({"id": "acme-day", "scope": {"tenant": "acme"}, "period": "month", "limit": "10"})
        assert _rows(book)[("acme-day", "acme")] == Decimal("5.25")
    finally:
        book.close()
        store.close()


def test_budgets_created_while_calls_are_stored_count_every_call_exactly_once(
    clock: FakeClock, pricer: Pricer, tmp_path: Path
) -> None:
    store = Store(StoreConfig(data_dir=tmp_path / "store", fsync="never"))
    store.start()
    book = _book(clock, pricer, tmp_path / "budgets", store)
    store.add_sums_listener(lambda committed: settle_committed(book, committed))
    start_ns = int((clock() - 60) * 1e9)
    batches = [[call_record(i * 5 + j, start_ns=start_ns, cost="0.001") for j in range(5)] for i in range(80)]

    def ingest() -> None:
        for batch in batches:
            store.ingest(batch)

    writer = threading.Thread(target=ingest)
    try:
        writer.start()
        for i in range(20):  # each put between (or during) the writer's commits
            book.put_budget({"id": f"b{i}", "scope": {"tenant": "acme"}, "period": "day", "limit": "100"})
        writer.join(60)
        assert not writer.is_alive()
        assert {row.budget.id: row.spent for row in book.status()} == {f"b{i}": Decimal("0.4") for i in range(20)}
    finally:
        writer.join(60)
        book.close()
        store.close()
