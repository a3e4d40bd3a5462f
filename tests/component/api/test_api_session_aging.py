"""Sessions aged into their day: the sessions figures stay the same, the per-session sums go."""

from __future__ import annotations

from decimal import Decimal

import pytest

from costspan.processor.api._common import Window
from costspan.processor.api._index import DAY_S, UsageIndex
from costspan.processor.api._names import sessions_in
from costspan.processor.api._session_aging import age_sessions
from tests.support.records import call_record

NOW = 1_772_000_000 - 1_772_000_000 % DAY_S + 10 * DAY_S + 3600
OLD_DAY = NOW - NOW % DAY_S - 5 * DAY_S


def _index() -> UsageIndex:
    index = UsageIndex(keep_sessions=3, clock=lambda: 0.0)  # aged only when told
    calls = []
    for s in range(12):  # 12 sessions on an old day, session i costs i + 1 (x 2 calls)
        for k in range(2):
            start = (OLD_DAY + 600 * s + k) * 10**9
            calls.append(call_record(100 * s + k, start_ns=start, cost=Decimal(s + 1) / 1000, session=f"s-{s}"))
    # one session across two days (kept on both), one recent session
    calls.append(call_record(5000, start_ns=(OLD_DAY + DAY_S - 5) * 10**9, session="long"))
    calls.append(call_record(5001, start_ns=(OLD_DAY + DAY_S + 5) * 10**9, session="long"))
    calls.append(call_record(5002, start_ns=(NOW - 60) * 10**9, session="recent"))
    index.add_many(calls)
    return index


def _figures(index: UsageIndex, limit: int) -> tuple[int, int, Decimal, list[tuple[str, int, Decimal]]]:
    found = sessions_in(index, "acme", Window.last_days(30, NOW), limit)
    return found.count, found.calls, found.cost, [(name, a.requests, a.cost) for _, name, a in found.top]


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_aging_keeps_the_answers_up_to_the_kept_count(limit: int) -> None:
    index = _index()
    before = _figures(index, limit)
    assert age_sessions(index, NOW) == 9  # of the old day's 13 sessions the 3 dearest and "long" (multi-day) stay
    after = _figures(index, limit)
    assert after == before
    assert before[0] == 14 and before[1] == 27
    old = index.days["acme"][OLD_DAY]
    assert set(old.by_session) == {"s-11", "s-10", "s-9", "long"} and old.aged_sessions == 9
    assert index.sessions_aged == 9


def test_recent_days_and_small_days_are_not_aged_and_prune_forgets_old_sessions() -> None:
    index = _index()
    assert age_sessions(index, OLD_DAY + DAY_S) == 0  # the old day is still within the detail window
    index.keep_sessions = 100
    assert age_sessions(index, NOW) == 0  # at most keep_sessions: nothing to age
    assert "s-0" in index.session_last["acme"]
    index.prune(NOW)
    assert "s-0" not in index.session_last["acme"] and "recent" in index.session_last["acme"]
    assert _figures(index, 5)[0] == 14


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="keep_sessions"):
        UsageIndex(keep_sessions=0)
