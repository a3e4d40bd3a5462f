"""A call settles its own reservation, named on its span, even when the provider answers with another
model name (a snapshot alias): in the book, in-process with the real openai SDK, and through
``costspan serve`` with the remote guard and OTLP export."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costspan.instrumentation import CostspanInstrumentor, attribute
from costspan.instrumentation import attributes as attr
from costspan.instrumentation._tokens import TokenCounter
from costspan.pricing import Pricer
from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.budgets import BudgetBook, BudgetSpanProcessor, Call, CostEstimator, budget_guard
from costspan.processor.budgets._remote import RemoteBudgetGuard
from costspan.processor.serve._server import build_server_app
from costspan.processor.serve._settings import Settings
from costspan.processor.store._store import Store
from tests.component.budgets.conftest import FakeClock
from tests.support.fake_provider import Behavior, FakeProvider

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]
ALIAS = "gpt-4o-2024-08-06"
ACME_DAY = {"id": "acme", "scope": {"tenant": "acme"}, "period": "day", "limit": "1"}


def reserved_and_spent(book: BudgetBook) -> tuple[Decimal, Decimal]:
    (row,) = book.status("acme")
    return row.reserved, row.spent


def test_a_record_with_the_reservation_id_settles_that_one_and_no_other(book: BudgetBook, clock: FakeClock) -> None:
    book.put_budget(ACME_DAY)
    call = Call(tenant="acme", service="api", provider="openai", model="gpt-4o", input_tokens=1000, max_tokens=1000)
    first, second = book.check(call).reservation_id, book.check(call).reservation_id
    assert first and second and reserved_and_spent(book) == (Decimal("0.025"), Decimal(0))
    answered = Call(tenant="acme", service="api", provider="openai", model=ALIAS)
    # without the id, the snapshot alias pairs with nothing: the spend is recorded, both holds stay
    assert book.settle_call(answered, Decimal("0.001"), 150) is False
    assert book.open_reservations() == 2
    # with it, exactly the named reservation (the newer one) is settled
    assert book.settle_call(answered, Decimal("0.002"), 300, reservation_id=second) is True
    assert set(book._state.reservations) == {first}
    assert reserved_and_spent(book) == (Decimal("0.0125"), Decimal("0.003"))
    # an id no longer open (settled, expired, another book's) records the spend and touches no other hold
    assert book.settle_call(answered, Decimal("0.004"), 300, reservation_id=second) is False
    assert book.settle_call(answered, Decimal("0.001"), 300, reservation_id="elsewhere-1") is False
    assert set(book._state.reservations) == {first}
    assert reserved_and_spent(book) == (Decimal("0.0125"), Decimal("0.008"))


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> TokenCounter:
    counter = TokenCounter("o200k_base", directory=tmp_path_factory.mktemp("tiktoken"))
    counter.start_loading()
    assert counter.loaded.wait(60)
    return counter


def chat_with_alias(fake: FakeProvider) -> None:
    fake.script(Behavior(response_model=ALIAS))
    with attribute(tenant="acme"), openai.OpenAI(base_url=fake.url("/v1"), api_key="k", max_retries=0) as client:
        answer = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=50)
    assert answer.model == ALIAS


def test_in_process_the_span_settles_its_own_reservation(pricer: Pricer, tokens: TokenCounter, tmp_path: Path) -> None:
    book = BudgetBook(estimator=CostEstimator(pricer), data_dir=tmp_path, fsync="never")
    book.put_budget(ACME_DAY)
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(BudgetSpanProcessor(book, service="checkout"))
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    inst = CostspanInstrumentor()
    guard = budget_guard(book, service="checkout")
    inst.instrument(tracer_provider=tp, pricer=pricer, token_counter=tokens, pre_send_hooks=[guard])
    try:
        with FakeProvider() as fake:
            chat_with_alias(fake)
    finally:
        inst.uninstrument()
        tp.shutdown()
    (span,) = exporter.get_finished_spans()
    a = span.attributes or {}
    assert a[attr.GEN_AI_RESPONSE_MODEL] == ALIAS and a[attr.BUDGET_RESERVATION_ID]
    assert attr.BUDGET_ACTION not in a  # the reservation id alone is no rewrite
    # settled at once, not by the TTL: nothing held, the span's cost spent
    assert book.open_reservations() == 0
    assert reserved_and_spent(book) == (Decimal(0), Decimal(str(a[attr.COST_USD])))
    book.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[str, BudgetBook]]:
    """``costspan serve`` (receiver, store, budgets) on 127.0.0.1, loopback without keys."""
    settings = Settings(data_dir=tmp_path / "data", port=0, snapshot_interval_seconds=3600)
    store = Store(settings.store_config())
    app = build_server_app(settings, store, insecure_no_auth=True)
    with ServerThread(app) as server:
        yield server.url, app.state.budget_book


def test_through_costspan_serve_the_record_settles_its_own_reservation(
    serve: tuple[str, BudgetBook], pricer: Pricer, tokens: TokenCounter
) -> None:
    url, book = serve
    book.put_budget(ACME_DAY)
    exporter = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=url + "/v1/traces", timeout=30)))
    guard = RemoteBudgetGuard(url, timeout=10, service="checkout", fail_open=False)
    inst = CostspanInstrumentor()
    inst.instrument(tracer_provider=tp, pricer=pricer, token_counter=tokens, pre_send_hooks=[guard])
    try:
        with FakeProvider() as fake:
            chat_with_alias(fake)
        # the span was exported as it ended, and the export answered once its record was stored and
        # settled: the reservation is gone now, not after the TTL
        assert book.open_reservations() == 0
    finally:
        inst.uninstrument()
        tp.shutdown()
        guard.close()
    (span,) = exporter.get_finished_spans()
    a = span.attributes or {}
    assert a[attr.GEN_AI_RESPONSE_MODEL] == ALIAS and a[attr.BUDGET_RESERVATION_ID]
    reserved, spent = reserved_and_spent(book)
    assert reserved == 0 and spent == Decimal(str(a[attr.COST_USD])) > 0


def test_a_call_logged_over_the_api_settles_only_the_reservation_it_names(serve: tuple[str, BudgetBook]) -> None:
    url, book = serve
    book.put_budget(ACME_DAY)
    check = {"tenant": "acme", "service": "api", "provider": "openai", "model": "gpt-4o", "input_tokens": 1000}
    call = {
        "provider": "openai",
        "model": "gpt-4o",
        "prompt_tokens": 1000,
        "completion_tokens": 100,
        "tenant_id": "acme",
        "service": "api",
    }
    with httpx.Client(base_url=url, timeout=10) as http:
        first = http.post("/v1/budgets/check", json={**check, "max_tokens": 500}).json()["reservation_id"]
        # another in-flight call of the same scope and model, logged without its id: charged, pairs with nothing
        logged = http.post("/api/usage/calls", json={**call, "call_id": "c-1"})
        assert logged.status_code == 201, logged.text
        assert book.open_reservations() == 1
        reserved, spent = reserved_and_spent(book)
        assert reserved > 0 and spent == Decimal("0.0035")  # 1000 x $2.50/M + 100 x $10/M
        # the call that made the reservation names it, and settles exactly it
        logged = http.post("/api/usage/calls", json={**call, "call_id": "c-2", "reservation_id": first})
        assert logged.status_code == 201, logged.text
        assert book.open_reservations() == 0
        assert reserved_and_spent(book) == (Decimal(0), Decimal("0.0070"))
        # a repeat of the same call_id is stored once and charged once
        again = http.post("/api/usage/calls", json={**call, "call_id": "c-2", "reservation_id": first})
        assert again.status_code == 201 and again.json()["duplicate"] is True
        assert reserved_and_spent(book) == (Decimal(0), Decimal("0.0070"))


def test_costspan_serve_watches_every_stored_call_for_cost_spikes(serve: tuple[str, BudgetBook]) -> None:
    _, book = serve
    detector = book.spike_detector
    assert detector is not None and detector.factor == Decimal(3)
