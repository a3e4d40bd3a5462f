"""The budget routes over HTTP, and the remote guard against them on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Request

from costspan.instrumentation import BudgetExceededError, RequestInfo, RequestRewrite
from costspan.pricing import Pricer
from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.budgets import (
    BudgetBook,
    BudgetCheckEndpoint,
    Call,
    CostEstimator,
    RemoteBudgetGuard,
    WebhookNotifier,
    budget_router,
)
from tests.component.budgets.conftest import FakeClock

ACME = {"tenant": "acme", "provider": "openai", "model": "gpt-4o", "input_tokens": 1000, "max_tokens": 1000}


@pytest.fixture
def server(book: BudgetBook) -> Iterator[ServerThread]:
    app = FastAPI()
    app.include_router(budget_router(book, notifier=None))
    with ServerThread(app) as running:
        yield running


@pytest.fixture
def http(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def test_check_answers_200_with_a_reservation_then_429_with_retry_after(http: httpx.Client, book: BudgetBook) -> None:
    book.put_budget({"id": "acme", "scope": {"tenant": "acme"}, "period": "day", "limit": "0.02"})
    ok = http.post("/v1/budgets/check", json=ACME)
    assert ok.status_code == 200
    body = ok.json()
    assert body["allowed"] is True and body["reservation_id"] and body["estimate_usd"] == "0.0125"
    refused = http.post("/v1/budgets/check", json=ACME)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == str(12 * 3600)  # the fake clock stands at noon UTC
    advice = [
        "lower max_tokens",
        "raise the limit of budget 'acme'",
        "wait for calls in flight to settle their reservations",
        "wait for the period to roll at 2026-03-11T00:00:00+00:00",
    ]
    assert refused.json() == {
        "type": "budget_exceeded",
        "message": "budget 'acme' (tenant=acme, day, hard) has no room for this call: limit 0.02 USD, spent 0 USD,"
        " reserved 0.0125 USD; this call's estimate 0.0125 USD (1000 input + 1000 output tokens, max_tokens=1000)."
        " To go ahead: " + "; or ".join(advice) + ".",
        "budget_id": "acme",
        "scope": {"tenant": "acme"},
        "mode": "hard",
        "unit": "usd",
        "period": "day",
        "resets_at": "2026-03-11T00:00:00+00:00",
        "reason": "estimate_exceeds_room",
        "estimate": {
            "requested": "0.0125",
            "usd": "0.0125",
            "input_tokens": 1000,
            "output_tokens": 1000,
            "max_tokens": 1000,
            "output_basis": "max_tokens",
            "how": "max_tokens=1000",
        },
        "advice": advice,
        "limit": "0.02",
        "spent": "0",
        "reserved": "0.0125",
    }
    settled = http.post("/v1/budgets/settle", json={"reservation_id": body["reservation_id"], "cost_usd": "0.001"})
    assert settled.json() == {"settled": True}
    again = http.post("/v1/budgets/settle", json={"reservation_id": body["reservation_id"], "cost_usd": "0.001"})
    assert (again.status_code, again.json()) == (404, {"detail": "no open reservation with this id"})
    assert http.post("/v1/budgets/check", json=ACME).status_code == 200
    assert http.post("/v1/budgets/check", json={**ACME, "colour": "red"}).status_code == 422


def test_the_fast_endpoint_answers_the_check_as_the_route_does(
    book: BudgetBook, clock: FakeClock, pricer: Pricer
) -> None:
    def authorize(request: Request) -> None:
        if request.headers.get("authorization") != "Bearer k":
            raise HTTPException(401, "missing API key", {"WWW-Authenticate": "Bearer"})

    twin = BudgetBook(clock=clock, estimator=CostEstimator(pricer, clock=clock))
    fast, plain = FastAPI(), FastAPI()
    fast.include_router(budget_router(book))
    fast.add_middleware(BudgetCheckEndpoint, book=book, authorize=authorize)
    plain.include_router(budget_router(twin))
    for b in (book, twin):
        b.put_budget({"id": "acme", "scope": {"tenant": "acme"}, "period": "day", "limit": "0.02"})
    bodies: list[bytes] = [httpx.Request("POST", "/", json=ACME).content] * 2 + [b'{"colour": "red"}', b"not json"]
    with ServerThread(fast) as f, ServerThread(plain) as p, httpx.Client(timeout=10) as client:
        for body in bodies:
            headers = {"Authorization": "Bearer k", "Content-Type": "application/json"}
            mine = client.post(f.url + "/v1/budgets/check", content=body, headers=headers)
            theirs = client.post(p.url + "/v1/budgets/check", content=body, headers=headers)
            assert (mine.status_code, mine.headers.get("retry-after")) == (
                theirs.status_code,
                theirs.headers.get("retry-after"),
            )
            assert mine.json() | {"reservation_id": None} == theirs.json() | {"reservation_id": None}
        assert [r.status_code for r in (mine, theirs)] == [422, 422]
        refused = client.post(f.url + "/v1/budgets/check", json=ACME)
        assert (refused.status_code, refused.json(), refused.headers["www-authenticate"]) == (
            401,
            {"success": False, "detail": "missing API key", "error": "missing API key"},  # every route's shape
            "Bearer",
        )
        assert client.get(f.url + "/v1/budgets").status_code == 200  # other routes pass through
    assert "/v1/budgets/check" in fast.openapi()["paths"]  # still documented


def test_spend_can_be_hidden_from_the_caller(book: BudgetBook) -> None:
    app = FastAPI()
    app.include_router(budget_router(book, show_spend=False))
    book.put_budget({"id": "z", "period": "day", "limit": "0"})
    with ServerThread(app) as running, httpx.Client(base_url=running.url) as client:
        body = client.post("/v1/budgets/check", json=ACME).json()
    assert body["type"] == "budget_exceeded" and "spent" not in body and "limit" not in body


def test_budget_crud_with_clear_errors_and_an_audit_trail(http: httpx.Client) -> None:
    spec = {"id": "b1", "scope": {"tenant": "acme"}, "period": "month", "limit": "100", "timezone": "Europe/Paris"}
    created = http.post("/v1/budgets", json=spec, headers={"X-Costspan-Actor": "alice"})
    assert created.status_code == 201 and created.json()["limit"] == "100"
    assert http.post("/v1/budgets", json=spec).status_code == 409
    bad = http.post("/v1/budgets", json={"period": "fortnight", "limit": "-1"})
    assert bad.status_code == 422
    assert bad.json()["detail"].startswith("invalid budget: period: Input should be")
    assert "limit: Input should be greater than or equal to 0" in bad.json()["detail"]
    changed = http.put("/v1/budgets/b1", json={**spec, "limit": "150"}, headers={"X-Costspan-Actor": "bob"})
    assert changed.status_code == 200 and changed.json()["limit"] == "150"
    assert [b["id"] for b in http.get("/v1/budgets").json()] == ["b1"]
    assert http.get("/v1/budgets/b1").json()["timezone"] == "Europe/Paris"
    (status,) = http.get("/v1/budgets/b1/status").json()
    assert (status["spent"], status["status"], status["resets_at"]) == ("0", "healthy", "2026-03-31T22:00:00+00:00")
    assert [s["budget_id"] for s in http.get("/v1/budgets/status").json()] == ["b1"]
    audit = http.get("/v1/budgets/b1/audit").json()
    assert [(e["actor"], e["action"], e["before"] and e["before"]["limit"]) for e in audit] == [
        ("alice", "create", None),
        ("bob", "update", "100"),
    ]
    assert http.delete("/v1/budgets/b1").status_code == 204
    assert http.delete("/v1/budgets/b1").status_code == 404
    assert http.get("/v1/budgets/b1").status_code == 404


def test_seed_workspace_and_project_routes(http: httpx.Client, book: BudgetBook) -> None:
    empty = http.get("/api/workspaces/ws1/budget").json()
    assert empty == {
        "workspace_id": "ws1",
        "daily_limit": None,
        "monthly_limit": None,
        "alert_thresholds": [50, 75, 90, 100],
        "mode": "hard",
        "monthly_budget_usd": None,  # Phase 17's names beside (tests/component/budgets/test_compat_phase17_budgets.py)
        "alert_threshold_percent": 50,
        "alert_emails": [],
        "hard_limit": True,
    }
    set_ = http.post("/api/workspaces/ws1/budget", json={"daily_limit": 5, "monthly_limit": "100"})
    assert set_.status_code == 200 and set_.json()["daily_limit"] == "5"
    book.record(Call(tenant="ws1"), Decimal("4"))
    status = http.get("/api/workspaces/ws1/budget/status").json()
    assert status["status"] == "warning"
    assert (status["daily"]["spent"], status["monthly"]["utilization"]) == ("4", 0.04)
    project = http.post("/api/projects/p7/budget", params={"workspace_id": "ws1"}, json={"daily_limit": "0.01"})
    assert project.status_code == 200 and project.json()["project_id"] == "p7"
    assert book.check(Call(tenant="ws1", project="p7", provider="openai", model="gpt-4o", max_tokens=200_000)).block
    assert http.post("/api/projects/p7/budget", json={"daily_limit": 1}).status_code == 422  # workspace_id missing
    assert http.post("/api/workspaces/ws1/budget", json={"daily_limit": -5}).status_code == 422


def test_alerts_and_deliveries_are_listed(book: BudgetBook) -> None:
    notifier = WebhookNotifier("http://127.0.0.1:9/hook", retries=0, timeout=0.5)
    book.alert_sinks.append(notifier)
    app = FastAPI()
    app.include_router(budget_router(book, notifier=notifier))
    book.put_budget({"id": "g", "period": "day", "limit": "1", "thresholds": [50]})
    book.record(Call(), Decimal("0.7"))
    assert notifier.flush(10)
    with ServerThread(app) as running, httpx.Client(base_url=running.url) as client:
        body = client.get("/v1/budgets/alerts").json()
    notifier.shutdown()
    assert [a["threshold"] for a in body["alerts"]] == [50]
    assert body["failures"] == 1 and body["deliveries"][0]["delivered"] is False


def info(model: str = "gpt-4o", max_tokens: int | None = 1000) -> RequestInfo:
    return RequestInfo(
        provider="openai",
        operation="chat",
        model=model,
        max_tokens=max_tokens,
        stream=False,
        server_address="api.openai.com",
        server_port=443,
        url_path="/v1/chat/completions",
        attribution={"costspan.tenant.id": "acme"},
        _estimate=lambda: 1000,
    )


def test_remote_guard_reserves_rewrites_and_blocks(server: ServerThread, book: BudgetBook) -> None:
    book.put_budget(
        {
            "id": "a",
            "scope": {"tenant": "acme"},
            "period": "day",
            "limit": "0.02",
            "mode": "adaptive",
            "fallback_models": ["gpt-4o-mini"],
        }
    )
    guard = RemoteBudgetGuard(server.url, api_key="secret", timeout=5)
    try:
        check_through(guard, book)
    finally:
        guard.close()


def check_through(guard: RemoteBudgetGuard, book: BudgetBook) -> None:
    fits = guard(info())  # 0.0125 fits: no change, only the reservation to write on the span
    assert fits is not None and not fits.changes and fits.reservation_id in book._state.reservations
    degraded = guard(info())
    assert degraded is not None and degraded.reservation_id in book._state.reservations
    assert degraded == RequestRewrite(
        model="gpt-4o-mini", max_tokens=None, reason="budget a: adaptive", reservation_id=degraded.reservation_id
    )
    book.put_budget({"id": "h", "period": "day", "limit": "0.001"})
    with pytest.raises(BudgetExceededError) as exc:
        guard(info())
    assert (exc.value.budget_id, exc.value.limit_usd, exc.value.resets_at) == (
        "h",
        Decimal("0.001"),
        "2026-03-11T00:00:00+00:00",
    )
    answer = guard.check(Call(tenant="globex", provider="openai", model="gpt-4o-mini", max_tokens=1))
    assert guard.settle(answer["reservation_id"], Decimal("0.0000001"))


@pytest.mark.parametrize("fail_open", [True, False])
def test_remote_guard_fails_open_or_closed_when_the_server_is_away(fail_open: bool) -> None:
    guard = RemoteBudgetGuard("http://127.0.0.1:9", timeout=0.2, fail_open=fail_open)
    if fail_open:
        assert guard(info()) is None  # no reservation to name
    else:
        with pytest.raises(BudgetExceededError, match="unreachable"):
            guard(info())
    assert guard.unreachable == 1


def test_remote_guard_needs_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COSTSPAN_ENDPOINT", raising=False)
    with pytest.raises(ValueError, match="COSTSPAN_ENDPOINT"):
        RemoteBudgetGuard()
    monkeypatch.setenv("COSTSPAN_ENDPOINT", "http://127.0.0.1:1234/base")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "checkout")
    guard = RemoteBudgetGuard()
    assert guard.fail_open is True and guard._service == "checkout"
