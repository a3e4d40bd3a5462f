"""End to end with the real openai SDK: the in-process guard, the instrumentation, a fake provider."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costspan.instrumentation import BudgetExceededError, CostspanInstrumentor, RequestInfo, RequestRewrite, attribute
from costspan.instrumentation import attributes as attr
from costspan.instrumentation._tokens import TokenCounter
from costspan.pricing import Pricer
from costspan.processor.budgets import BudgetBook, BudgetSpanProcessor, CostEstimator, budget_guard
from tests.support.fake_provider import FakeProvider, FakeUsage

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]
MAX_TOKENS = 50


@dataclass
class Stack:
    book: BudgetBook
    fake: FakeProvider
    exporter: InMemorySpanExporter
    instrumentor: CostspanInstrumentor

    def call_spans(self) -> list[ReadableSpan]:
        return [
            s for s in self.exporter.get_finished_spans() if (s.attributes or {}).get(attr.BUDGET_ACTION) != "blocked"
        ]

    def spans_cost(self) -> Decimal:
        return sum((Decimal(str((s.attributes or {})[attr.COST_USD])) for s in self.call_spans()), Decimal(0))


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> TokenCounter:
    counter = TokenCounter("o200k_base", directory=tmp_path_factory.mktemp("tiktoken"))
    counter.start_loading()
    assert counter.loaded.wait(60)
    return counter


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def stack(pricer: Pricer, tokens: TokenCounter, tmp_path: Path) -> Iterator[Stack]:
    book = BudgetBook(estimator=CostEstimator(pricer), data_dir=tmp_path, fsync="never")
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(BudgetSpanProcessor(book, service="checkout"))
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    inst = CostspanInstrumentor()
    inst.instrument(
        tracer_provider=tp,
        pricer=pricer,
        token_counter=tokens,
        pre_send_hooks=[budget_guard(book, service="checkout")],
    )
    try:
        with FakeProvider() as fake:
            yield Stack(book, fake, exporter, inst)
    finally:
        inst.uninstrument()
        tp.shutdown()
        book.close()


def exact_room_for(stack: Stack, calls: int) -> Decimal:
    """Make the provider bill exactly the estimate, and give the budget room for ``calls`` calls."""
    seen: list[int] = []

    def probe(info: RequestInfo) -> RequestRewrite | None:
        seen.append(info.estimate_input_tokens() or 0)
        raise BudgetExceededError("probe")

    stack.instrumentor.pre_send_hooks.insert(0, probe)
    with (
        openai.OpenAI(base_url=stack.fake.url("/v1"), api_key="k", max_retries=0) as c,
        pytest.raises(BudgetExceededError),
    ):
        c.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=MAX_TOKENS)
    stack.instrumentor.pre_send_hooks.remove(probe)
    stack.exporter.clear()
    (n_in,) = seen
    stack.fake.usage = FakeUsage(input=n_in, output=MAX_TOKENS)
    one = stack.book.estimator.estimate("gpt-4o", "openai", input_tokens=n_in, max_tokens=MAX_TOKENS).usd
    assert one is not None
    stack.book.put_budget({"id": "acme", "scope": {"tenant": "acme"}, "period": "day", "limit": one * calls})
    return one


def assert_exactly_settled(stack: Stack, allowed: int, one: Decimal) -> None:
    assert len(stack.fake.requests) == allowed == 10
    assert len(stack.call_spans()) == 10
    (row,) = stack.book.status("acme")
    assert row.spent == stack.spans_cost() == 10 * one
    assert row.reserved == 0
    assert stack.book.open_reservations() == 0


def test_100_threads_against_room_for_10(stack: Stack) -> None:
    one = exact_room_for(stack, 10)
    barrier = threading.Barrier(100)
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker(client: openai.OpenAI) -> None:
        barrier.wait()
        try:
            with attribute(tenant="acme"):
                client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=MAX_TOKENS)
            outcome = "ok"
        except BudgetExceededError as exc:
            outcome = exc.budget_id
        with lock:
            outcomes.append(outcome)

    with openai.OpenAI(base_url=stack.fake.url("/v1"), api_key="k", max_retries=0) as client:
        threads = [threading.Thread(target=worker, args=(client,)) for _ in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert sorted(set(outcomes)) == ["acme", "ok"] and len(outcomes) == 100
    assert_exactly_settled(stack, outcomes.count("ok"), one)


@pytest.mark.anyio
async def test_100_asyncio_tasks_against_room_for_10(stack: Stack) -> None:
    one = exact_room_for(stack, 10)

    async def one_call(client: openai.AsyncOpenAI) -> str:
        try:
            with attribute(tenant="acme"):
                await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=MAX_TOKENS)
        except BudgetExceededError as exc:
            return exc.budget_id
        return "ok"

    async with openai.AsyncOpenAI(base_url=stack.fake.url("/v1"), api_key="k", max_retries=0) as client:
        outcomes = await asyncio.gather(*(one_call(client) for _ in range(100)))
    assert outcomes.count("acme") == 90
    assert_exactly_settled(stack, outcomes.count("ok"), one)


def test_adaptive_rewrite_reaches_the_provider_and_the_span(stack: Stack) -> None:
    stack.book.put_budget(
        {
            "id": "acme-adaptive",
            "scope": {"tenant": "acme"},
            "period": "day",
            "limit": "0.001",
            "mode": "adaptive",
            "fallback_models": ["gpt-4o-mini"],
            "max_tokens_cap": 256,
        }
    )
    with attribute(tenant="acme"), openai.OpenAI(base_url=stack.fake.url("/v1"), api_key="k", max_retries=0) as c:
        c.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=4000)
    (request,) = stack.fake.requests
    assert request.json == {"model": "gpt-4o-mini", "max_tokens": 256, "messages": MESSAGES}
    (span,) = stack.call_spans()
    a = span.attributes or {}
    assert a[attr.GEN_AI_REQUEST_MODEL] == "gpt-4o-mini" and a[attr.GEN_AI_REQUEST_MAX_TOKENS] == 256
    assert a[attr.BUDGET_ORIGINAL_MODEL] == "gpt-4o" and a[attr.BUDGET_ORIGINAL_MAX_TOKENS] == 4000
    assert a[attr.BUDGET_ACTION] == "budget acme-adaptive: adaptive"
    (row,) = stack.book.status("acme-adaptive")
    assert row.spent == Decimal(str(a[attr.COST_USD])) and row.reserved == 0
