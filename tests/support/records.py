"""Call records for tests: every field has a plain default, a test names only what it is about."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from costspan.processor.store import CallRecord, TokenCounts

__all__ = ["call_record"]

_BASE_NS = 1_772_000_000 * 10**9  # an arbitrary fixed start (2026-02-25)


def call_record(
    i: int = 0,
    *,
    start_ns: int = _BASE_NS,
    latency_ms: float = 100,
    cost: Decimal | str | None = "0.001",
    tokens: tuple[int, ...] = (100, 10),
    **fields: Any,
) -> CallRecord:
    """Call ``i`` (its trace and span ids), started at ``start_ns`` and lasting ``latency_ms``; ``cost``
    sets the total and the status (None: unpriced). Any other :class:`CallRecord` field by keyword."""
    money = None if cost is None else Decimal(cost)
    values: dict[str, Any] = {
        "trace_id": f"{i:032x}",
        "span_id": f"{i + 1:016x}",
        "parent_span_id": "",
        "start_ns": start_ns,
        "end_ns": start_ns + int(latency_ms * 1_000_000),
        "service": "svc",
        "tenant": "acme",
        "workflow": "",
        "user": "",
        "session": "",
        "provider": "openai",
        "model": "gpt-4o",
        "operation": "chat",
        "source": "test",
        "tokens": TokenCounts(*tokens),
        "tokens_estimated": False,
        "cost_status": "unpriced" if money is None else "priced",
        "unpriced_reason": "",
        "cost_total": money,
        "cost_input": None,
        "cost_output": None,
        "cost_cache_read": None,
        "cost_cache_write": None,
        "cost_other": None,
        "pricing_version": "v1",
        "error_type": "",
    }
    values.update(fields)
    return CallRecord(**values)
