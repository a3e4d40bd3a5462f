"""Period rollover with an injected clock; thresholds fire once per period, also across restarts."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from costspan.pricing import Pricer
from costspan.processor.budgets import Alert, BudgetBook, Call, CostEstimator
from tests.component.budgets.conftest import FakeClock

ACME = Call(tenant="acme", provider="openai", model="gpt-4o")

Z = Decimal(0)


def make(clock: FakeClock, pricer: Pricer, data_dir: Path, sink: list[Alert]) -> BudgetBook:
    return BudgetBook(
        clock=clock,
        estimator=CostEstimator(pricer, clock=clock),
        data_dir=data_dir,
        fsync="never",
        alert_sinks=[sink.append],
    )


def fired(sink: list[Alert]) -> list[tuple[str, int | None, str]]:
    out = [(a.budget_id, a.threshold, a.period_start.isoformat() if a.period_start else "") for a in sink]
    sink.clear()
    return out


def test_day_thresholds_fire_once_reset_at_midnight_and_survive_restart(
    clock: FakeClock, pricer: Pricer, tmp_path: Path
) -> None:
    sink: list[Alert] = []
    book = make(clock, pricer, tmp_path, sink)
    book.put_budget({"id": "d", "scope": {"tenant": "acme"}, "period": "day", "limit": "1"})
    day1 = "2026-03-10T00:00:00+00:00"
    book.record(ACME, Decimal("0.5"))
    assert fired(sink) == [("d", 50, day1)]
    book.record(ACME, Decimal("0.1"))
    assert fired(sink) == []
    book.record(ACME, Decimal("0.2"))
    assert fired(sink) == [("d", 75, day1)]
    book.record(ACME, Decimal("0.3"))  # 1.1: crosses 90 and 100 at once
    assert fired(sink) == [("d", 90, day1), ("d", 100, day1)]
    book.record(ACME, Decimal("5"))
    assert fired(sink) == []  # at most once per period

    clock.set(datetime(2026, 3, 11, 0, 0, 1, tzinfo=UTC))  # next day: counter reset, thresholds armed again
    (row,) = book.status("d")
    assert (row.spent, row.fired, row.resets_at) == (
        Z,
        (),
        datetime(2026, 3, 12, tzinfo=UTC),
    )
    book.record(ACME, Decimal("0.6"))
    assert fired(sink) == [("d", 50, "2026-03-11T00:00:00+00:00")]

    restarted = make(clock, pricer, tmp_path, sink)  # no close(): as after a crash
    (row,) = restarted.status("d")
    assert (row.spent, row.fired) == (Decimal("0.6"), (50,))
    restarted.record(ACME, Decimal("0.01"))
    assert fired(sink) == []  # 50 % is not fired again after the restart
    restarted.record(ACME, Decimal("0.2"))
    assert fired(sink) == [("d", 75, "2026-03-11T00:00:00+00:00")]


def test_month_rolls_at_local_midnight_of_the_budget_time_zone(
    clock: FakeClock, pricer: Pricer, tmp_path: Path
) -> None:
    sink: list[Alert] = []
    tz = ZoneInfo("America/New_York")
    clock.set(datetime(2026, 3, 31, 23, 30, tzinfo=tz))  # 03:30 UTC on April 1st, still March in New York
    book = make(clock, pricer, tmp_path, sink)
    book.put_budget({"id": "m", "period": "month", "limit": "10", "timezone": "America/New_York"})
    book.put_budget({"id": "u", "period": "month", "limit": "10"})  # the same month in UTC
    book.record(ACME, Decimal("6"))
    assert fired(sink) == [("m", 50, "2026-03-01T05:00:00+00:00"), ("u", 50, "2026-04-01T00:00:00+00:00")]
    (m,) = book.status("m")
    assert m.resets_at == datetime(2026, 4, 1, 4, tzinfo=UTC)  # midnight EDT
    clock.set(datetime(2026, 4, 1, 0, 0, 1, tzinfo=tz))
    (m,) = book.status("m")
    (u,) = book.status("u")
    assert (m.spent, u.spent) == (Z, Decimal("6"))
    book.record(ACME, Decimal("6"))
    assert fired(sink) == [
        ("m", 50, "2026-04-01T04:00:00+00:00"),
        ("u", 75, "2026-04-01T00:00:00+00:00"),
        ("u", 90, "2026-04-01T00:00:00+00:00"),
        ("u", 100, "2026-04-01T00:00:00+00:00"),
    ]


def test_a_year_rolls_at_new_year_in_the_budget_time_zone_and_alerts_once_per_year(
    clock: FakeClock, pricer: Pricer, tmp_path: Path
) -> None:
    sink: list[Alert] = []
    tz = ZoneInfo("Asia/Tokyo")
    clock.set(datetime(2026, 12, 31, 23, 0, tzinfo=tz))  # 14:00 UTC: still 2026 in Tokyo and in UTC
    book = make(clock, pricer, tmp_path, sink)
    book.put_budget({"id": "y", "period": "year", "limit": "100", "timezone": "Asia/Tokyo"})
    book.record(ACME, Decimal("60"))
    assert fired(sink) == [("y", 50, "2025-12-31T15:00:00+00:00")]
    (y,) = book.status("y")
    assert y.resets_at == datetime(2026, 12, 31, 15, tzinfo=UTC)  # midnight in Tokyo
    book.record(ACME, Decimal("1"))
    assert fired(sink) == []  # once per threshold and year
    clock.set(datetime(2027, 1, 1, 0, 0, 1, tzinfo=tz))
    (y,) = book.status("y")
    assert y.spent == Z and y.resets_at == datetime(2027, 12, 31, 15, tzinfo=UTC)
    book.record(ACME, Decimal("60"))
    assert fired(sink) == [("y", 50, "2026-12-31T15:00:00+00:00")]


def test_blocked_call_says_when_the_budget_resets(clock: FakeClock, pricer: Pricer, tmp_path: Path) -> None:
    clock.set(datetime(2026, 3, 10, 22, 0, tzinfo=UTC))
    book = make(clock, pricer, tmp_path, [])
    book.put_budget({"id": "d", "period": "day", "limit": "0", "timezone": "Europe/Berlin"})
    d = book.check(Call(provider="openai", model="gpt-4o", max_tokens=10))
    assert d.block is not None
    assert d.block.resets_at == datetime(2026, 3, 10, 23, tzinfo=UTC)  # Berlin midnight
    assert d.block.retry_after(clock()) == 3600


def test_reservations_carry_over_a_rollover(clock: FakeClock, pricer: Pricer, tmp_path: Path) -> None:
    clock.set(datetime(2026, 3, 10, 23, 59, 59, tzinfo=UTC))
    book = make(clock, pricer, tmp_path, [])
    book.put_budget({"id": "d", "period": "day", "limit": "1"})
    d = book.check(Call(provider="openai", model="gpt-4o", input_tokens=1000, max_tokens=1000))
    clock.advance(2)
    (row,) = book.status("d")
    assert (row.spent, row.reserved) == (Z, Decimal("0.0125"))
    assert d.reservation_id is not None and book.settle(d.reservation_id, Decimal("0.01"))
    (row,) = book.status("d")
    assert (row.spent, row.reserved, row.period_start) == (
        Decimal("0.01"),
        Z,
        datetime(2026, 3, 11, tzinfo=UTC),
    )
