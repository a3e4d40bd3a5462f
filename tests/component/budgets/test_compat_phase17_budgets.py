"""Phase 17's workspace and project budget routes, replayed with its documented bodies over real HTTP.

The seed's body (``monthly_budget_usd``, ``alert_threshold_percent``, ``alert_emails``, ``hard_limit``)
is accepted on the workspace and project routes, and its status fields are answered beside costspan's
own; a bad body is a 422 that names the field and stores nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.budgets import BudgetBook, Call
from costspan.processor.serve._server import build_server_app
from costspan.processor.serve._settings import Settings
from costspan.processor.store._store import Store

PHASE17_BODY = {
    "monthly_budget_usd": 100.0,
    "alert_threshold_percent": 80,
    "alert_emails": ["finops@example.com", "cto@example.org"],
    "hard_limit": True,
}


class Served:
    def __init__(self, url: str, book: BudgetBook) -> None:
        self.url = url
        self.book = book

    def call(self, method: str, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        return httpx.request(method, self.url + path, json=body, timeout=30, **kw)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    settings = Settings(data_dir=tmp_path, port=0, grpc_port=0, snapshot_interval_seconds=3600)
    store = Store(settings.store_config())
    app = build_server_app(settings, store, insecure_no_auth=True)
    with ServerThread(app) as server:
        yield Served(server.url, app.state.budget_book)


def test_the_documented_body_sets_a_monthly_budget_and_is_answered_in_both_spellings(served: Served) -> None:
    r = served.call("POST", "/api/workspaces/acme/budget", PHASE17_BODY)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "workspace_id": "acme",
        "daily_limit": None,
        "monthly_limit": "100.0",  # as sent: 100.0
        "alert_thresholds": [80, 100],
        "mode": "hard",
        "monthly_budget_usd": 100.0,
        "alert_threshold_percent": 80,
        "alert_emails": ["finops@example.com", "cto@example.org"],
        "hard_limit": True,
    }
    assert served.call("GET", "/api/workspaces/acme/budget").json() == r.json()
    (budget,) = served.book.budgets()
    assert (budget.period.value, budget.limit, budget.mode.value) == ("month", Decimal(100), "hard")
    assert budget.scope_dict == {"tenant": "acme"}
    assert budget.alert_emails == ("finops@example.com", "cto@example.org")


def test_status_has_the_seed_fields_as_numbers(served: Served) -> None:
    empty = served.call("GET", "/api/workspaces/acme/budget/status").json()
    assert {k: empty[k] for k in ("has_budget", "budget", "alert_needed", "is_over_budget")} == {
        "has_budget": False,
        "budget": None,
        "alert_needed": False,
        "is_over_budget": False,
    }
    served.call("POST", "/api/workspaces/acme/budget", PHASE17_BODY).raise_for_status()
    served.book.record(Call(tenant="acme", provider="openai", model="gpt-4o"), Decimal("85.5"))
    status = served.call("GET", "/api/workspaces/acme/budget/status").json()
    phase17 = {
        k: status[k]
        for k in (
            "has_budget",
            "budget",
            "spent",
            "remaining",
            "usage_percent",
            "alert_needed",
            "is_over_budget",
            "hard_limit",
        )
    }
    assert phase17 == {
        "has_budget": True,
        "budget": 100.0,
        "spent": 85.5,
        "remaining": 14.5,
        "usage_percent": 85.5,
        "alert_needed": True,
        "is_over_budget": False,
        "hard_limit": True,
    }
    assert status["monthly"]["limit"] == "100.0"  # costspan's own fields stay beside
    assert status["status"] == "warning"
    served.book.record(Call(tenant="acme", provider="openai", model="gpt-4o"), Decimal("20"))
    over = served.call("GET", "/api/workspaces/acme/budget/status").json()
    assert (over["is_over_budget"], over["remaining"], over["usage_percent"]) == (True, 0.0, 105.5)


def test_hard_limit_false_alerts_but_never_refuses(served: Served) -> None:
    body = {**PHASE17_BODY, "monthly_budget_usd": 1, "hard_limit": False}
    assert served.call("POST", "/api/workspaces/acme/budget", body).json()["hard_limit"] is False
    served.book.record(Call(tenant="acme", provider="openai", model="gpt-4o"), Decimal(5))
    check = served.call("POST", "/v1/budgets/check", {"tenant": "acme", "provider": "openai", "model": "gpt-4o"})
    assert check.status_code == 200, check.text
    assert [a.threshold for a in served.book.alerts] == [80, 100]
    status = served.call("GET", "/api/workspaces/acme/budget/status").json()
    assert (status["is_over_budget"], status["hard_limit"], status["alert_needed"]) == (True, False, True)
    served.call("POST", "/api/workspaces/acme/budget", {**body, "hard_limit": True}).raise_for_status()
    refused = served.call("POST", "/v1/budgets/check", {"tenant": "acme", "provider": "openai", "model": "gpt-4o"})
    assert refused.status_code == 429


def test_the_project_route_takes_the_seed_body(served: Served) -> None:
    r = served.call("POST", "/api/projects/web/budget", PHASE17_BODY, params={"workspace_id": "acme"})
    assert r.status_code == 200, r.text
    assert (r.json()["project_id"], r.json()["monthly_budget_usd"], r.json()["hard_limit"]) == ("web", 100.0, True)
    (budget,) = served.book.budgets()
    assert budget.scope_dict == {"tenant": "acme", "project": "web"}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"monthly_budget_usd": -1}, "monthly_budget_usd"),
        ({"monthly_budget_usd": "lots"}, "monthly_budget_usd"),
        ({"alert_threshold_percent": 101}, "alert_threshold_percent"),
        ({"alert_threshold_percent": 0}, "alert_threshold_percent"),
        ({"alert_emails": ["not-an-address"]}, "alert_emails"),
        ({"alert_emails": ["a@example.com\r\nBcc: x@evil.test"]}, "alert_emails"),
        ({"alert_emails": "finops@example.com"}, "alert_emails"),
        ({"hard_limit": "maybe"}, "hard_limit"),
        ({"monthly_limit": "5"}, "monthly_limit"),  # both spellings of the monthly limit
        ({"mode": "soft"}, "hard_limit or mode"),
        ({"timezone": "Mars/Olympus"}, "time zone"),
        ({"daily_limit": "1", "timezone": "Mars/Olympus"}, "time zone"),
    ],
)
def test_a_bad_body_is_a_clear_422_and_stores_nothing(served: Served, change: dict[str, Any], named: str) -> None:
    served.call("POST", "/api/workspaces/acme/budget", {"daily_limit": "3"}).raise_for_status()
    before = [b.to_json() for b in served.book.budgets()]
    r = served.call("POST", "/api/workspaces/acme/budget", {**PHASE17_BODY, **change})
    assert r.status_code == 422, r.text
    assert named in r.text
    assert [b.to_json() for b in served.book.budgets()] == before
