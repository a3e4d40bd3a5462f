"""The usage index on its own: follows the ledger, sums exactly, prunes old buckets."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

from costspan.processor.api import UsageIndex
from costspan.processor.api._index import ALL, DAY_S
from costspan.processor.store._records import CallRecord
from costspan.processor.store._store import Store, StoreConfig
from tests.support.records import call_record


def _record(i: int, tenant: str, start_s: int, cost: str | None, latency_ms: int = 100) -> CallRecord:
    return call_record(
        i,
        start_ns=start_s * 10**9,
        latency_ms=latency_ms,
        cost=cost,
        tenant=tenant,
        workflow="wf",
        user="u",
        session="s",
    )


def test_index_follows_the_ledger_and_sums_exactly(tmp_path: Path) -> None:
    store = Store(StoreConfig(tmp_path))
    store.start()
    try:
        now = int(time.time())
        today = now - now % DAY_S
        index = UsageIndex(store.ledger.directory)
        assert index.catch_up() == 0
        store.ingest([_record(1, "acme", today + 10, "0.1"), _record(2, "globex", today + 20, "0.2")])
        assert index.catch_up() == 2
        store.ingest([_record(3, "acme", today + 30, None, latency_ms=900), _record(1, "acme", today + 10, "0.1")])
        assert index.catch_up() == 1  # the repeated span was not stored, so it is not counted
        assert index.catch_up() == 0
        (acme,) = index.days["acme"].values()
        a = acme.by_call["openai", "gpt-4o", "chat"]
        assert (a.requests, a.unpriced, a.cost, a.input_tokens) == (2, 1, Decimal("0.1"), 200)
        openai = acme.by_provider["openai"]  # latency histograms are kept per provider and per day
        assert (openai.requests, openai.cost) == (a.requests, a.cost) == (acme.total.requests, acme.total.cost)
        p50, p100 = openai.quantile_ms(0.5), openai.quantile_ms(1.0)
        assert p50 is not None and 95 <= p50 <= 105
        assert p100 is not None and 900 <= p100 <= 950
        everyone = index.days[ALL][today].by_call["openai", "gpt-4o", "chat"]
        assert (everyone.requests, everyone.cost) == (3, Decimal("0.3"))
        assert index.days[ALL][today].tenants == {"acme", "globex"}
        assert index.tenant_ids() == ["acme", "globex"]
    finally:
        store.close()


def test_prune_drops_old_days_and_hours() -> None:
    index = UsageIndex()
    now = int(time.time())
    index.add_many([_record(1, "acme", now - 500 * DAY_S, "1"), _record(2, "acme", now - 100 * DAY_S, "1")])
    index.add(_record(3, "acme", now, "1"))
    # for acme and for ALL: the day of 500 days ago (> 400) and the hours of 500 and 100 days ago (> 90)
    assert index.prune(now) == 2 * (1 + 2)
    assert len(index.days["acme"]) == 2 and len(index.hours["acme"]) == 1
