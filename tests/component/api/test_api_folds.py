"""The memoized window folds and hour rows (api/_folds.py) give what summing the calls gives, after
every kind of change: a call for the newest day or hour, a late call for a settled one, pruning."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from decimal import Decimal

import pytest

from costspan.processor.api._common import Window, by_call_in, by_project_in, by_provider_in
from costspan.processor.api._folds import hour_views
from costspan.processor.api._index import ALL, DAY_S, HOUR_S, UsageIndex
from costspan.processor.store._records import CallRecord
from costspan.processor.store._sums import Sums
from tests.support.records import call_record

NOW = int(time.time())
TODAY = NOW - NOW % DAY_S
PROVIDERS = ("openai", "anthropic", "google")


def _call(i: int, rng: random.Random, start_s: int) -> CallRecord:
    provider = rng.choice(PROVIDERS)
    cost = None if rng.random() < 0.1 else Decimal(rng.randrange(1, 50)) / 1000
    start_ns = start_s * 10**9
    return call_record(
        i,
        start_ns=start_ns,
        latency_ms=rng.randrange(1, 3000),
        tenant=rng.choice(["a", "b"]),
        workflow="wf",
        user="u",
        provider=provider,
        model=rng.choice(["m1", "m2"]),
        tokens=(rng.randrange(1, 99), rng.randrange(1, 99)),
        cost=cost,
        error_type="timeout" if rng.random() < 0.05 else "",
        project=f"p-{rng.randrange(3)}",
    )


def _workload(seed: int, n: int = 2000) -> list[CallRecord]:
    rng = random.Random(seed)
    return [_call(i, rng, TODAY - rng.randrange(10) * DAY_S + rng.randrange(DAY_S // 2)) for i in range(n)]


def _sums(records: list[CallRecord], key: Callable[[CallRecord], object]) -> dict[object, tuple[int, int, Decimal]]:
    out: dict[object, tuple[int, int, Decimal]] = {}
    for r in records:
        n, e, c = out.get(key(r), (0, 0, Decimal(0)))
        out[key(r)] = (n + 1, e + bool(r.error_type), c + (r.cost_total or 0))
    return out


def _figures(found: dict[str, Sums] | dict[tuple[str, str, str], Sums]) -> dict[object, tuple[int, int, Decimal]]:
    return {k: (a.requests, a.errors, a.cost) for k, a in found.items()}


def _day(r: CallRecord) -> int:
    s = r.start_ns // 10**9
    return s - s % DAY_S


def _check(index: UsageIndex, records: list[CallRecord], window: Window, tenant: str | None) -> None:
    mine = [r for r in records if window.first <= _day(r) <= window.last and tenant in (None, r.tenant)]
    assert _figures(by_call_in(index, tenant, window)) == _sums(mine, lambda r: (r.provider, r.model, r.operation))
    assert _figures(by_provider_in(index, tenant, window)) == _sums(mine, lambda r: r.provider)
    assert _figures(by_provider_in(index, tenant, window, "google")) == _sums(
        [r for r in mine if r.provider == "google"], lambda r: r.provider
    )
    with_hist = by_provider_in(index, tenant, window, histogram=True)
    for provider, agg in with_hist.items():
        assert sum((agg.latency or {}).values()) == agg.requests == sum(r.provider == provider for r in mine)
    projected = by_provider_in(index, tenant, window, project="p-1")
    assert _figures(projected) == _sums([r for r in mine if r.project == "p-1"], lambda r: r.provider)
    if tenant is not None:
        assert _figures(by_project_in(index, tenant, window)) == _sums(mine, lambda r: r.project)


@pytest.mark.parametrize("tenant", ["a", None])
def test_window_folds_follow_every_change(tenant: str | None) -> None:
    records = _workload(5)
    index = UsageIndex()
    index.add_many(records)
    rng = random.Random(7)
    for days in (3, 7, 30):
        window = Window.last_days(days, NOW)
        _check(index, records, window, tenant)
        _check(index, records, window, tenant)  # memoized: the same
        # what a query gets is its own: changing it changes no later answer
        for agg in by_call_in(index, tenant, window).values():
            agg.merge(Sums(requests=1000, cost=Decimal(1)))
        _check(index, records, window, tenant)
    for i, when in enumerate((TODAY + 60, TODAY - 2 * DAY_S + 60, TODAY - 6 * DAY_S)):  # newest, then late calls
        late = _call(10_000 + i, rng, when)._replace(tenant="a")
        index.add(late)
        records.append(late)
        for days in (3, 7, 30):
            _check(index, records, Window.last_days(days, NOW), tenant)
    index.prune(NOW, day_retention_days=4)
    kept = [r for r in records if _day(r) >= TODAY - 3 * DAY_S]
    _check(index, kept, Window.last_days(7, NOW), tenant)


def _hours(records: list[CallRecord], who: str, first: int, last: int, provider: str | None) -> list[tuple[int, int]]:
    sums: dict[int, int] = {}
    for r in records:
        s = r.start_ns // 10**9
        hour = s - s % HOUR_S
        if who in (ALL, r.tenant) and first <= hour <= last:
            sums[hour] = sums.get(hour, 0) + (provider in (None, r.provider))
    return sorted(sums.items())


def test_hour_rows_follow_every_change() -> None:
    records = _workload(6, 3000)
    index = UsageIndex()
    index.add_many(records)
    rng = random.Random(8)
    built: list[int] = []

    def row(hour: int, a: Sums) -> tuple[int, int]:
        built.append(hour)
        return hour, a.requests

    def rows(who: str, days: int, provider: str | None, key: object) -> list[tuple[int, int]]:
        first = TODAY - (days - 1) * DAY_S
        with index.read():
            return hour_views(index, who, first, TODAY + DAY_S - 1, provider, row, key)

    for who in ("a", ALL):
        for provider in (None, "openai"):
            want = _hours(records, who, TODAY - 6 * DAY_S, TODAY + DAY_S - 1, provider)
            assert rows(who, 7, provider, ("t", provider)) == want
            assert rows(who, 7, provider, None) == want  # not memoized
    built.clear()
    assert rows("a", 7, None, ("t", None)) == _hours(records, "a", TODAY - 6 * DAY_S, TODAY + DAY_S - 1, None)
    assert built == []  # every row memoized
    for i, when in enumerate((TODAY + 120, TODAY - 3 * DAY_S + 3600)):  # the newest day, then a late call
        late = _call(20_000 + i, rng, when)._replace(tenant="a", provider="openai")
        index.add(late)
        records.append(late)
        built.clear()
        for provider in (None, "openai"):
            want = _hours(records, "a", TODAY - 6 * DAY_S, TODAY + DAY_S - 1, provider)
            assert rows("a", 7, provider, ("t", provider)) == want
        late_hour = when - when % HOUR_S
        assert set(built) == {late_hour}  # only the changed hour was built again
    index.prune(NOW, day_retention_days=400, hour_retention_days=2)
    assert rows("a", 7, None, ("t", None)) == _hours(records, "a", NOW - 2 * DAY_S, TODAY + DAY_S - 1, None)
