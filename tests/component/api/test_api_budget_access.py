"""Who may call the budget routes of the whole ``costspan serve`` app.

Checking, settling and releasing need an ingest (or admin) key; a workspace's budget and its status
may be read by that workspace's tenant key (or an admin key); everything else needs an admin key.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from costspan.pricing import Pricer
from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.api import KeyStore
from costspan.processor.serve._server import build_server_app
from costspan.processor.serve._settings import Settings
from costspan.processor.store._store import Store

BUDGET = {"id": "acme-daily", "scope": {"tenant": "acme"}, "period": "day", "limit": "10"}
SEED = {"daily_limit": "5"}


@pytest.fixture
def server(tmp_path: Path, pricer: Pricer) -> Iterator[tuple[str, dict[str, str]]]:
    data = tmp_path / "data"
    settings = Settings(data_dir=data, port=0)
    keystore = KeyStore(data)
    keys = {
        "admin": keystore.create("admin")[1],
        "acme": keystore.create("tenant", "acme")[1],
        "globex": keystore.create("tenant", "globex")[1],
        "ingest": keystore.create("ingest")[1],
    }
    store = Store(settings.store_config())
    app = build_server_app(settings, store, keys=keystore, pricer=pricer, registry=CollectorRegistry())
    with ServerThread(app) as running:
        yield running.url, keys


def _call(url: str, key: str | None, method: str, path: str, body: Any = None, **params: str) -> httpx.Response:
    headers = {} if key is None else {"X-API-Key": key}
    return httpx.request(method, url + path, json=body, params=params, headers=headers, timeout=10)


#: (method, path, body, query) of every budget route but the check (answered before routing, below)
ROUTES: list[tuple[str, str, Any, dict[str, str]]] = [
    ("POST", "/v1/budgets/settle", {"reservation_id": "nope"}, {}),
    ("POST", "/v1/budgets/reservations/nope/release", None, {}),
    ("GET", "/v1/budgets", None, {}),
    ("POST", "/v1/budgets", {**BUDGET, "id": "acme-weekly", "period": "week"}, {}),
    ("GET", "/v1/budgets/status", None, {}),
    ("GET", "/v1/budgets/alerts", None, {}),
    ("GET", "/v1/budgets/acme-daily", None, {}),
    ("PUT", "/v1/budgets/acme-daily", BUDGET, {}),
    ("GET", "/v1/budgets/acme-daily/status", None, {}),
    ("GET", "/v1/budgets/acme-daily/audit", None, {}),
    ("GET", "/api/workspaces/acme/budget", None, {}),
    ("POST", "/api/workspaces/acme/budget", SEED, {}),
    ("GET", "/api/workspaces/acme/budget/status", None, {}),
    ("POST", "/api/projects/p1/budget", SEED, {"workspace_id": "acme"}),
    ("DELETE", "/v1/budgets/acme-weekly", None, {}),
]
SEND = {"/v1/budgets/settle", "/v1/budgets/reservations/nope/release"}
ACME_READS = {"/api/workspaces/acme/budget", "/api/workspaces/acme/budget/status"}


def _allowed(who: str, method: str, path: str) -> bool:
    if who == "admin":
        return True
    if path in SEND:
        return who == "ingest"
    return who == "acme" and method == "GET" and path in ACME_READS


def test_each_budget_route_answers_only_the_keys_it_allows(server: tuple[str, dict[str, str]]) -> None:
    url, keys = server
    assert _call(url, keys["admin"], "POST", "/v1/budgets", BUDGET).status_code == 201
    for method, path, body, params in ROUTES:
        assert _call(url, None, method, path, body, **params).status_code == 401, (method, path)
        for who in ("acme", "globex", "ingest", "admin"):
            r = _call(url, keys[who], method, path, body, **params)
            if _allowed(who, method, path):
                # settling or releasing an unknown reservation ("nope") is allowed and answered 404
                assert r.status_code in ((404,) if path in SEND else (200, 201, 204)), (who, method, path, r.text)
            else:
                assert r.status_code == 403, (who, method, path, r.text)
                detail = r.json()["detail"]
                assert detail == (
                    "this key may not send usage (admin or ingest key required)"
                    if path in SEND
                    else "admin key required"
                ), (who, method, path)


def test_the_check_needs_an_ingest_or_admin_key(server: tuple[str, dict[str, str]]) -> None:
    url, keys = server
    check = {"tenant": "acme", "provider": "openai", "model": "gpt-4o", "input_tokens": 10, "max_tokens": 10}
    assert _call(url, None, "POST", "/v1/budgets/check", check).status_code == 401
    for who in ("acme", "globex"):
        r = _call(url, keys[who], "POST", "/v1/budgets/check", check)
        assert r.status_code == 403
        assert r.json()["detail"] == "this key may not send usage (admin or ingest key required)"
    for who in ("ingest", "admin"):
        r = _call(url, keys[who], "POST", "/v1/budgets/check", check)
        assert r.status_code == 200 and r.json()["allowed"] is True, r.text


def test_a_budget_named_like_a_sending_route_still_needs_an_admin_key(server: tuple[str, dict[str, str]]) -> None:
    """Access is declared per route, not by the path's first characters."""
    url, keys = server
    spec = {**BUDGET, "id": "checkout-daily"}
    assert _call(url, keys["ingest"], "PUT", "/v1/budgets/checkout-daily", spec).status_code == 403
    assert _call(url, keys["admin"], "PUT", "/v1/budgets/checkout-daily", spec).status_code == 200
    assert _call(url, keys["ingest"], "GET", "/v1/budgets/checkout-daily").status_code == 403
    assert _call(url, keys["ingest"], "DELETE", "/v1/budgets/checkout-daily").status_code == 403
