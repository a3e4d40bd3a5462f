"""A hard budget is never overrun by the calls it admitted: each call reserves its worst case (its
max_tokens, else the model's max output) and settles what it actually cost — 50 calls at once, in the
book and through the HTTP check and settle routes."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI

from costspan.pricing import Pricer, Usage
from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.budgets import BudgetBook, BudgetCheckEndpoint, Call, CostEstimator, budget_router

MODEL, PROVIDER = "gpt-4o-mini", "openai"
MODEL_MAX = 16_384  # gpt-4o-mini's max output in the catalog
LIMIT = Decimal("0.05")  # room for about five calls that might write MODEL_MAX tokens
THREADS = 50
INPUT = 2_000


def actual_output(i: int, max_tokens: int | None) -> int:
    """What call ``i`` really wrote: every third one its whole allowance, the rest a random part."""
    allowance = max_tokens if max_tokens is not None else MODEL_MAX
    return allowance if i % 3 == 0 else random.Random(i).randint(1, allowance)


def cost(pricer: Pricer, output: int) -> Decimal:
    total = pricer.price_call(MODEL, Usage(input_tokens=INPUT, output_tokens=output), provider=PROVIDER).total
    assert total is not None
    return total


def run_at_once(call: Callable[[int], bool]) -> list[bool]:
    """Run ``call(i)`` on 50 threads released together; whether each was admitted."""
    barrier = threading.Barrier(THREADS)
    admitted = [False] * THREADS
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        barrier.wait()
        try:
            admitted[i] = call(i)
        except BaseException as exc:  # reported below: an exception on a thread must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    return admitted


def spent(book: BudgetBook) -> tuple[Decimal, Decimal]:
    (row,) = book.status("hard")
    return row.spent, row.reserved


@pytest.mark.parametrize("max_tokens", [None, 4_000])
def test_50_concurrent_calls_never_take_a_hard_budget_above_its_limit(pricer: Pricer, max_tokens: int | None) -> None:
    book = BudgetBook(estimator=CostEstimator(pricer))
    book.put_budget({"id": "hard", "scope": {"tenant": "acme"}, "period": "day", "limit": str(LIMIT)})

    def call(i: int) -> bool:
        decision = book.check(
            Call(tenant="acme", provider=PROVIDER, model=MODEL, input_tokens=INPUT, max_tokens=max_tokens)
        )
        if decision.reservation_id is None:
            return False
        assert book.settle(decision.reservation_id, cost(pricer, actual_output(i, max_tokens)), INPUT)
        return True

    admitted = run_at_once(call)
    total, held = spent(book)
    assert held == 0
    assert total <= LIMIT
    assert 0 < sum(admitted) < THREADS  # the budget admitted some calls and refused others
    assert total == sum(cost(pricer, actual_output(i, max_tokens)) for i, ok in enumerate(admitted) if ok)


@pytest.mark.parametrize("default_output", [None, 4096])
def test_all_checked_first_then_all_settled_at_their_worst(pricer: Pricer, default_output: int | None) -> None:
    """50 calls without max_tokens all hold a reservation before any settles, then each writes the
    model's max output. Reserving that worst case keeps the budget within its limit; the control,
    an estimator assuming 4,096 output tokens (what the check did before), ends far above it."""
    book = BudgetBook(estimator=CostEstimator(pricer, default_output_tokens=default_output))
    book.put_budget({"id": "hard", "scope": {"tenant": "acme"}, "period": "day", "limit": str(LIMIT)})
    rids: list[str] = []
    lock = threading.Lock()

    def call(i: int) -> bool:
        decision = book.check(Call(tenant="acme", provider=PROVIDER, model=MODEL, input_tokens=INPUT))
        if decision.reservation_id is not None:
            with lock:
                rids.append(decision.reservation_id)
        return decision.reservation_id is not None

    run_at_once(call)
    for rid in rids:
        assert book.settle(rid, cost(pricer, MODEL_MAX), INPUT)
    total = spent(book)[0]
    if default_output is None:
        assert total <= LIMIT and len(rids) == int(LIMIT / cost(pricer, MODEL_MAX))
    else:
        assert total > 3 * LIMIT


@pytest.mark.parametrize("max_tokens", [None, 4_000])
def test_the_same_through_the_http_check_and_settle_routes(pricer: Pricer, max_tokens: int | None) -> None:
    book = BudgetBook(estimator=CostEstimator(pricer))
    book.put_budget({"id": "hard", "scope": {"tenant": "acme"}, "period": "day", "limit": str(LIMIT)})
    app = FastAPI()
    app.include_router(budget_router(book))
    app.add_middleware(BudgetCheckEndpoint, book=book)
    check = {"tenant": "acme", "provider": PROVIDER, "model": MODEL, "input_tokens": INPUT}
    if max_tokens is not None:
        check["max_tokens"] = max_tokens
    with ServerThread(app) as server:

        def call(i: int) -> bool:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                answer = client.post("/v1/budgets/check", json=check)
                if answer.status_code == 429:
                    body = answer.json()
                    assert body["estimate"]["output_tokens"] == (max_tokens or MODEL_MAX)
                    return False
                assert answer.status_code == 200, answer.text
                rid = answer.json()["reservation_id"]
                paid = str(cost(pricer, actual_output(i, max_tokens)))
                settled = client.post("/v1/budgets/settle", json={"reservation_id": rid, "cost_usd": paid})
                assert settled.json() == {"settled": True}
                return True

        admitted = run_at_once(call)
    total, held = spent(book)
    assert held == 0 and total <= LIMIT
    assert 0 < sum(admitted) < THREADS
