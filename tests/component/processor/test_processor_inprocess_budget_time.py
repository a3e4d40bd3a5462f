"""In-process budgets and time: a span counts in the periods of its start, and a budget added after
calls were stored starts from their spend — once, across restarts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from costspan.pricing import Pricer, Usage
from costspan.processor import InProcess, track_in_process

DAY = 86400
DAY_BUDGET = {"id": "day", "scope": {"tenant": "acme"}, "period": "day", "limit": "10"}
MONTH_BUDGET = {"id": "month", "scope": {"tenant": "acme"}, "period": "month", "limit": "10"}
TOTAL_BUDGET = {"id": "total", "scope": {"tenant": "*"}, "period": "total", "limit": "10"}


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    tp = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    yield tp
    tp.shutdown()


def _emit(provider: TracerProvider, start_s: float, cost: Decimal) -> None:
    """A finished GenAI span as the instrumentation writes it (usage and cost), started at ``start_s``."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 200,
        "costspan.tenant.id": "acme",
        "costspan.cost.usd": float(cost),
    }
    span = provider.get_tracer("test").start_span("chat gpt-4o", start_time=int(start_s * 1e9), attributes=attributes)
    span.end(end_time=int(start_s * 1e9) + 50_000_000)
    assert provider.force_flush()


def _spent(handle: InProcess) -> dict[str, Decimal]:
    assert handle.book is not None
    return {row.budget.id: row.spent for row in handle.book.status()}


def test_in_process_spans_count_in_their_period_and_new_budgets_start_from_the_store(
    tmp_path: Path, provider: TracerProvider, pricer: Pricer
) -> None:
    if time.time() % DAY > DAY - 60:  # "today" must hold for the whole test
        time.sleep(DAY - time.time() % DAY + 1)
    cost = pricer.price_call("gpt-4o", Usage(input_tokens=1000, output_tokens=200), provider="openai").total
    assert cost is not None
    now = time.time()
    yesterday = now - DAY
    same_month = datetime.fromtimestamp(yesterday, UTC).month == datetime.fromtimestamp(now, UTC).month
    handle = track_in_process(provider, data_dir=tmp_path, budgets=[DAY_BUDGET], instrument=False, fsync="never")
    try:
        _emit(provider, now - 1, cost)
        _emit(provider, yesterday, cost)  # stored, but not in today's budget
        _emit(provider, datetime(2020, 1, 1, tzinfo=UTC).timestamp(), cost)
        assert _spent(handle) == {"day": cost}
        assert handle.book is not None
        handle.book.put_budget(MONTH_BUDGET)  # added mid-month: what the store holds of this month
        month = cost * (2 if same_month else 1)
        assert _spent(handle) == {"day": cost, "month": month}
    finally:
        handle.shutdown()

    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    again = track_in_process(
        provider, data_dir=tmp_path, budgets=[DAY_BUDGET, MONTH_BUDGET, TOTAL_BUDGET], instrument=False, fsync="never"
    )
    try:  # the kept budgets carry on; the new one starts from every stored call
        assert _spent(again) == {"day": cost, "month": month, "total": 3 * cost}
    finally:
        again.shutdown()
        provider.shutdown()
