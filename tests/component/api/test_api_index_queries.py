"""The pre-aggregated queries give what summing the calls themselves gives (random workloads)."""

from __future__ import annotations

import random
import time
from decimal import Decimal

import pytest

from costspan.processor.api._common import Window, per_day
from costspan.processor.api._index import DAY_S, UsageIndex
from costspan.processor.api._names import dim_in, sessions_in, top_names, workflow_days
from costspan.processor.store._records import CallRecord
from tests.support.records import call_record

NOW = int(time.time())
TODAY = NOW - NOW % DAY_S


def _workload(seed: int, n: int = 1500) -> list[CallRecord]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        day = rng.randrange(12)
        start_ns = (TODAY - day * DAY_S + rng.randrange(DAY_S // 2)) * 10**9
        cost = None if rng.random() < 0.1 else Decimal(rng.randrange(1, 50)) / 1000
        tenant, workflow, user = rng.choice(["a", "b"]), f"wf-{rng.randrange(5)}", f"u-{rng.randrange(8)}"
        out.append(
            call_record(
                i,
                start_ns=start_ns,
                tenant=tenant,
                workflow=workflow,
                user=user,
                session=f"s-{rng.randrange(60)}",
                tokens=(10, 5),
                cost=cost,
                project=f"p-{rng.randrange(3)}",
            )
        )

    return out


def _in(r: CallRecord, window: Window) -> bool:
    return window.first <= r.start_ns // 10**9 < window.last + DAY_S


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("days", [1, 3, 7, 30])
@pytest.mark.parametrize("tenant", ["a", None])
def test_queries_equal_brute_force(seed: int, days: int, tenant: str | None) -> None:
    records = _workload(seed)
    index = UsageIndex()
    index.add_many(records)
    window = Window.last_days(days, NOW)
    mine = [r for r in records if _in(r, window) and (tenant is None or r.tenant == tenant)]

    def cost(rs: list[CallRecord]) -> Decimal:
        return sum((r.cost_total for r in rs if r.cost_total is not None), Decimal(0))

    # sessions: distinct (per tenant), calls, cost, the most expensive ones by their in-window cost
    found = sessions_in(index, tenant, window, 5)
    by_session: dict[tuple[str, str], list[CallRecord]] = {}
    for r in mine:
        by_session.setdefault((r.tenant, r.session), []).append(r)
    assert found.count == len(by_session)
    assert found.calls == len(mine) and found.cost == cost(mine)
    expected = sorted((cost(rs) for rs in by_session.values()), reverse=True)[:5]
    assert [a.cost for _, _, a in found.top] == expected
    for t, name, agg in found.top:
        rs = by_session[t, name]
        assert (agg.requests, agg.cost) == (len(rs), cost(rs))
    # users and workflows
    for dim, field in (("user", "user"), ("workflow", "workflow")):
        sums = dim_in(index, tenant, window, dim)
        names = {getattr(r, field) for r in mine}
        assert set(sums) == names
        for name, agg in sums.items():
            rs = [r for r in mine if getattr(r, field) == name]
            assert (agg.requests, agg.cost, agg.unpriced) == (len(rs), cost(rs), sum(r.cost_total is None for r in rs))
        top = top_names(index, tenant, window, dim, 3)
        assert [a.cost for _, a in top] == sorted((a.cost for a in sums.values()), reverse=True)[:3]
    # per day, per project, one workflow per day
    for project in (None, "p-1"):
        got = {d: (a.requests, a.cost) for d, a in per_day(index, tenant, window, project=project) if a.requests}
        want: dict[int, tuple[int, Decimal]] = {}
        for r in mine:
            if project is None or r.project == project:
                d = r.start_ns // 10**9 - r.start_ns // 10**9 % DAY_S
                n, c = want.get(d, (0, Decimal(0)))
                want[d] = (n + 1, c + (r.cost_total or 0))
        assert got == want
    wf = workflow_days(index, tenant, window, "wf-1")
    assert sum(a.requests for a in wf.values()) == sum(r.workflow == "wf-1" for r in mine)


def test_late_calls_and_pruning_keep_series_exact() -> None:
    index = UsageIndex()
    records = _workload(9, 400)
    index.add_many(reversed(records))  # every call late: the oldest arrive last
    window = Window.last_days(5, NOW)
    sums = dim_in(index, None, window, "user")
    for name, agg in sums.items():
        assert agg.requests == sum(1 for r in records if r.user == name and _in(r, window))
    index.prune(NOW, day_retention_days=5)
    everything = Window.last_days(3660, NOW)
    kept = Window(TODAY - 4 * DAY_S, TODAY)
    for name, agg in dim_in(index, None, everything, "user").items():
        assert agg.requests == sum(1 for r in records if r.user == name and _in(r, kept))


@pytest.mark.parametrize("days", [3, 30])
def test_top_names_follow_every_change_of_the_index(days: int) -> None:
    records = _workload(4)
    index = UsageIndex()
    index.add_many(records)
    window = Window.last_days(days, NOW)

    def brute(rs: list[CallRecord]) -> list[tuple[str, int, Decimal]]:
        sums: dict[str, tuple[int, Decimal]] = {}
        for r in rs:
            if _in(r, window):
                n, c = sums.get(r.user, (0, Decimal(0)))
                sums[r.user] = (n + 1, c + (r.cost_total or 0))
        return sorted(((u, n, c) for u, (n, c) in sums.items()), key=lambda x: x[2], reverse=True)[:3]

    def top() -> list[tuple[str, int, Decimal]]:
        return [(name, a.requests, a.cost) for name, a in top_names(index, None, window, "user", 3)]

    assert [c for _, _, c in top()] == [c for _, _, c in brute(records)]
    assert top() == top()  # asked again (memoized when every call is in the window): the same answer
    # a new call makes another user the most expensive: the next answer has it first, exactly
    late = records[0]._replace(span_id="f" * 16, user="u-new", start_ns=TODAY * 10**9, cost_total=Decimal(100))
    index.add(late)
    assert top()[0] == ("u-new", 1, Decimal(100))
    assert top() == brute([*records, late])[:1] + top()[1:]
    # pruning everything but today: only today's calls count
    index.prune(NOW, day_retention_days=1)
    today = [r for r in [*records, late] if r.start_ns // 10**9 >= TODAY]
    assert [c for _, _, c in top()] == [c for _, _, c in brute(today)]
