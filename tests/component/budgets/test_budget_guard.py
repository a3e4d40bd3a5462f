"""The in-process guard as a pre-send hook, and settlement from finished spans."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from opentelemetry.sdk.trace import TracerProvider

from costspan.instrumentation import BudgetExceededError, RequestInfo, RequestRewrite
from costspan.instrumentation import attributes as attr
from costspan.processor.budgets import (
    BudgetBook,
    BudgetSpanProcessor,
    Call,
    budget_guard,
    call_from_attributes,
    call_from_request,
)

ONE_CALL = Decimal("0.0125")  # gpt-4o, 1000 in + 1000 out


def info(model: str = "gpt-4o", tenant: str = "acme") -> RequestInfo:
    return RequestInfo(
        provider="openai",
        operation="chat",
        model=model,
        max_tokens=1000,
        stream=False,
        server_address="api.openai.com",
        server_port=443,
        url_path="/v1/chat/completions",
        attribution={attr.TENANT_ID: tenant, attr.WORKFLOW_ID: "wf-1"},
        _estimate=lambda: 1000,
    )


def test_call_from_request_uses_baggage_attribution_and_the_estimate() -> None:
    assert call_from_request(info(), service="api") == Call(
        tenant="acme",
        service="api",
        workflow="wf-1",
        provider="openai",
        model="gpt-4o",
        input_tokens=1000,
        max_tokens=1000,
    )
    assert call_from_request(info(), count_input=False).input_tokens is None


def test_guard_blocks_with_the_budget_named_and_can_hide_spend(book: BudgetBook) -> None:
    book.put_budget({"id": "acme", "scope": {"tenant": "acme"}, "period": "day", "limit": "0.01"})
    with pytest.raises(BudgetExceededError) as exc:
        budget_guard(book)(info())
    e = exc.value
    assert (e.budget_id, e.scope, e.limit_usd, e.spent_usd, e.resets_at) == (
        "acme",
        {"tenant": "acme"},
        Decimal("0.01"),
        Decimal(0),
        "2026-03-11T00:00:00+00:00",
    )
    with pytest.raises(BudgetExceededError) as hidden:
        budget_guard(book, show_spend=False)(info())
    assert (hidden.value.budget_id, hidden.value.limit_usd, hidden.value.spent_usd) == ("acme", None, None)


def test_guard_rewrites_for_an_adaptive_budget(book: BudgetBook) -> None:
    book.put_budget(
        {"id": "a", "period": "day", "limit": "0.01", "mode": "adaptive", "fallback_models": ["gpt-4o-mini"]}
    )
    rewrite = budget_guard(book)(info())
    assert rewrite is not None and rewrite.reservation_id
    assert rewrite == RequestRewrite(
        model="gpt-4o-mini", max_tokens=None, reason="budget a: adaptive", reservation_id=rewrite.reservation_id
    )


def test_100_threads_on_the_guard_let_10_through(book: BudgetBook) -> None:
    book.put_budget({"id": "acme", "scope": {"tenant": "acme"}, "period": "day", "limit": ONE_CALL * 10})
    guard = budget_guard(book)
    barrier = threading.Barrier(100)
    allowed: list[int] = []

    def worker() -> None:
        barrier.wait()
        try:
            guard(info())
        except BudgetExceededError:
            return
        allowed.append(1)
        book.settle_call(call_from_request(info(), count_input=False), ONE_CALL, 2000)  # billed = estimated

    threads = [threading.Thread(target=worker) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(allowed) == 10
    (row,) = book.status("acme")
    assert (row.spent, row.reserved) == (ONE_CALL * 10, Decimal(0))


def test_span_processor_settles_and_never_throws(book: BudgetBook) -> None:
    book.put_budget({"id": "g", "period": "day", "limit": "1"})
    guard = budget_guard(book, service="api")
    guard(info())
    assert book.open_reservations() == 1
    processor = BudgetSpanProcessor(book, service="api")
    tp = TracerProvider()
    tp.add_span_processor(processor)
    tracer = tp.get_tracer("t")
    with tracer.start_as_current_span("not an llm call"):
        pass
    with tracer.start_as_current_span("blocked") as span:
        span.set_attributes({attr.BUDGET_ACTION: "blocked", attr.GEN_AI_REQUEST_MODEL: "gpt-4o"})
    assert book.open_reservations() == 1
    with tracer.start_as_current_span("chat gpt-4o") as span:
        span.set_attributes(
            {
                attr.GEN_AI_PROVIDER_NAME: "openai",
                attr.GEN_AI_REQUEST_MODEL: "gpt-4o",
                attr.TENANT_ID: "acme",
                attr.WORKFLOW_ID: "wf-1",
                attr.COST_USD: 0.0042,
                attr.GEN_AI_USAGE_INPUT_TOKENS: 900,
                attr.GEN_AI_USAGE_OUTPUT_TOKENS: 100,
            }
        )
    (row,) = book.status("g")
    assert (row.spent, row.reserved, book.open_reservations()) == (Decimal("0.0042"), Decimal(0), 0)
    processor._book = None  # type: ignore[assignment]
    with tracer.start_as_current_span("chat gpt-4o") as span:
        span.set_attributes({attr.GEN_AI_PROVIDER_NAME: "openai", attr.GEN_AI_REQUEST_MODEL: "gpt-4o"})
    assert processor.errors == 1
    tp.shutdown()


def test_a_failed_call_costs_nothing() -> None:
    from costspan.processor.budgets._guard import cost_of

    assert cost_of({attr.ERROR_TYPE: "APIConnectionError"}) == (Decimal(0), 0)
    assert cost_of({attr.COST_USD: 0.5}) == (Decimal("0.5"), None)
    assert call_from_attributes({attr.GEN_AI_REQUEST_MODEL: "gpt-4o"}) is None  # no provider: not a call record
