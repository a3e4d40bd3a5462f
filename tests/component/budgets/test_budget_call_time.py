"""A budget counts a call in the period that contains the call's start, on every settling path.

Settling used to pass no call time, so a call from yesterday (or 2020) was charged to today's and
this month's budgets. These tests give the call's start the way each path has it: ``at`` on the
book, ``start_ns`` of stored calls (one by one and summed per group), and the journal replays it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from costspan.processor.budgets import BudgetBook, Call, settle_committed
from costspan.processor.store import CallRecord, Store, StoreConfig
from costspan.processor.store._records import API_SOURCE
from tests.component.budgets.conftest import FakeClock
from tests.support.records import call_record

ACME = Call(tenant="acme", provider="openai", model="gpt-4o")
NOON = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
Z = Decimal(0)


def _ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def _spent(book: BudgetBook) -> dict[str, Decimal]:
    return {row.budget.id: row.spent for row in book.status()}


def _usd_budgets(book: BudgetBook) -> None:
    for period in ("day", "month", "total"):
        book.put_budget({"id": period, "scope": {"tenant": "acme"}, "period": period, "limit": "1000"})


def test_each_call_counts_only_in_the_periods_that_contain_its_start(book: BudgetBook, clock: FakeClock) -> None:
    _usd_budgets(book)
    book.record(ACME, Decimal(1), at=clock() - 3600)  # an hour ago: today, this month
    book.record(ACME, Decimal(2), at=_ts(2026, 3, 9, 23, 59, 59))  # yesterday: this month only
    book.record(ACME, Decimal(4), at=_ts(2026, 2, 28, 12))  # last month
    book.record(ACME, Decimal(8), at=_ts(2020, 1, 1))  # 2020
    book.settle_call(ACME, Decimal(16), 10, at=_ts(2026, 3, 1))  # no reservation: recorded, this month
    book.settle_call(ACME, Decimal(32), 10, at=clock() + 5)  # a start a little ahead of this clock is now
    assert _spent(book) == {"day": Decimal(33), "month": Decimal(51), "total": Decimal(63)}


def test_a_reservation_settled_after_its_day_rolled_charges_the_day_it_started(
    book: BudgetBook, clock: FakeClock
) -> None:
    _usd_budgets(book)
    clock.set(datetime(2026, 3, 31, 23, 59, 50, tzinfo=UTC))
    started = clock()
    decision = book.check(Call(tenant="acme", provider="openai", model="gpt-4o", input_tokens=100, max_tokens=100))
    assert decision.reservation_id is not None
    clock.set(datetime(2026, 4, 1, 0, 0, 10, tzinfo=UTC))  # a new day and a new month
    assert book.settle(decision.reservation_id, Decimal("0.5"), 200, at=started)
    rows = {row.budget.id: (row.spent, row.reserved) for row in book.status()}
    assert rows == {"day": (Z, Z), "month": (Z, Z), "total": (Decimal("0.5"), Z)}  # the hold is released

    again = book.check(Call(tenant="acme", provider="openai", model="gpt-4o", input_tokens=100, max_tokens=100))
    assert again.reservation_id is not None
    assert book.settle_call(ACME, Decimal("0.25"), 200, reservation_id=again.reservation_id, at=clock())
    assert _spent(book) == {"day": Decimal("0.25"), "month": Decimal("0.25"), "total": Decimal("0.75")}


def _store(tmp_path: Path, book: BudgetBook) -> Store:
    store = Store(StoreConfig(data_dir=tmp_path / "store", fsync="never"))
    store.add_sums_listener(lambda committed: settle_committed(book, committed))
    store.start()
    return store


def _at(when: float, i: int, cost: str = "1", source: str = "test", reservation_id: str = "") -> CallRecord:
    return call_record(i, start_ns=int(when * 1e9), cost=cost, source=source, reservation_id=reservation_id)


def test_stored_calls_count_in_the_periods_of_their_start(book: BudgetBook, clock: FakeClock, tmp_path: Path) -> None:
    _usd_budgets(book)
    book.put_budget({"id": "calls", "scope": {"tenant": "acme"}, "period": "day", "limit": "1000", "unit": "requests"})
    store = _store(tmp_path, book)
    try:
        now = clock()
        store.ingest(
            [
                _at(now - 600, 1, "1"),  # today (summed with the next one: the same hour)
                _at(now - 300, 2, "2"),
                _at(now - 3 * 86400, 3, "4"),  # 3 days ago
                _at(now - 9 * 86400, 4, "8"),  # 9 days ago: still March
                _at(_ts(2026, 2, 27), 5, "16"),  # last month
                _at(_ts(2020, 6, 1), 6, "32"),  # 2020
                _at(now - 3 * 86400, 7, "64", source=API_SOURCE),  # logged over the API without a reservation id
                _at(now - 60, 8, "128", reservation_id="not-open"),  # names a reservation no longer open
            ]
        )
        assert _spent(book) == {
            "day": Decimal(131),
            "month": Decimal(207),
            "total": Decimal(255),
            "calls": Decimal(3),
        }
    finally:
        store.close()


def test_a_utc_hour_that_straddles_a_half_hour_zone_midnight_is_settled_call_by_call(
    book: BudgetBook, clock: FakeClock, tmp_path: Path
) -> None:
    clock.set(datetime(2026, 3, 10, 18, 50, tzinfo=UTC))  # 00:20 on March 11th in Kolkata (UTC+05:30)
    book.put_budget(
        {"id": "kolkata", "scope": {"tenant": "acme"}, "period": "day", "limit": "9", "timezone": "Asia/Kolkata"}
    )
    book.put_budget({"id": "utc", "scope": {"tenant": "acme"}, "period": "day", "limit": "9"})
    store = _store(tmp_path, book)
    try:
        # one UTC hour, one group of sums: 18:15 UTC is March 10th in Kolkata, 18:45 UTC March 11th
        store.ingest([_at(_ts(2026, 3, 10, 18, 15), 1, "1"), _at(_ts(2026, 3, 10, 18, 45), 2, "2")])
        assert _spent(book) == {"kolkata": Decimal(2), "utc": Decimal(3)}
    finally:
        store.close()


def test_charges_replay_with_their_call_time_and_old_journals_still_replay(clock: FakeClock, tmp_path: Path) -> None:
    book = BudgetBook(clock=clock, data_dir=tmp_path, fsync="never")
    _usd_budgets(book)
    book.record(ACME, Decimal(1), at=clock())
    book.record(ACME, Decimal(2), at=_ts(2026, 3, 1))
    decision = book.check(Call(tenant="acme", provider="openai", model="gpt-4o", input_tokens=10, max_tokens=10))
    assert decision.reservation_id is not None
    book.settle(decision.reservation_id, Decimal(4), at=_ts(2026, 2, 1))
    before = _spent(book)
    assert before == {"day": Decimal(1), "month": Decimal(3), "total": Decimal(7)}
    lines = (tmp_path / "budgets.journal.jsonl").read_text(encoding="utf-8").splitlines()
    charges = [json.loads(line) for line in lines if json.loads(line)[1] in ("c", "s")]
    assert [c[-1] for c in charges] == [clock(), _ts(2026, 3, 1), _ts(2026, 2, 1)]  # the call's start
    assert _spent(BudgetBook(clock=clock, data_dir=tmp_path, fsync="never")) == before  # no close: as after kill -9

    old = tmp_path / "old"
    old.mkdir()
    start, end = _ts(2026, 3, 10), _ts(2026, 3, 11)
    budget = {"id": "d", "scope": {"tenant": "acme"}, "period": "day", "limit": "10"}
    written_before_call_times = [
        [1, "b", budget],
        [2, "o", "d", "d", [], start, end],
        [3, "c", [["d", "1.5"]]],
        [4, "r", "rid-1", clock(), clock() + 300, ["acme", None, None, None, None, "openai", "gpt-4o"], [["d", "0.5"]]],
        [5, "s", "rid-1", [["d", "0.25"]]],
    ]
    (old / "budgets.journal.jsonl").write_text("".join(json.dumps(line) + "\n" for line in written_before_call_times))
    (row,) = BudgetBook(clock=clock, data_dir=old, fsync="never").status()
    assert (row.spent, row.reserved) == (Decimal("1.75"), Z)
