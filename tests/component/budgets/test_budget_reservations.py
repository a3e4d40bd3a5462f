"""Reservations belong to the tenant they were made for: unguessable ids, and no other tenant's key
settles, releases or charges them — in the book, across a restart, and through ``costspan serve``."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from costspan.pricing import Pricer
from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.api import KeyStore
from costspan.processor.budgets import BudgetBook, Call, CostEstimator
from costspan.processor.budgets._journal import JOURNAL
from costspan.processor.serve._server import build_server_app
from costspan.processor.serve._settings import Settings
from costspan.processor.store._store import Store

ACME = Call(tenant="acme", provider="openai", model="gpt-4o", input_tokens=1000, max_tokens=1000)
GLOBEX = Call(tenant="globex", provider="openai", model="gpt-4o", input_tokens=1000, max_tokens=1000)
ONE = Decimal("0.0125")  # the estimate of ACME: 1000 in x $2.50/M + 1000 out x $10/M


def reserved(book: BudgetBook, budget_id: str) -> tuple[Decimal, Decimal]:
    (row,) = book.status(budget_id)
    return row.spent, row.reserved


def test_reservation_ids_carry_128_random_bits(book: BudgetBook) -> None:
    book.put_budget({"id": "g", "period": "day", "limit": "100"})
    ids = [book.check(ACME).reservation_id for _ in range(200)]
    assert all(rid is not None and re.fullmatch(r"rsv_[0-9a-f]{32}", rid) for rid in ids)
    assert len(set(ids)) == 200
    # no order to guess from: consecutive ids share no common prefix beyond "rsv_" most of the time
    shared = sum(1 for a, b in itertools.pairwise(ids) if a and b and a[:8] == b[:8])
    assert shared < 5


def test_another_tenant_cannot_settle_or_release_a_reservation(book: BudgetBook) -> None:
    book.put_budget({"id": "acme", "scope": {"tenant": "acme"}, "period": "day", "limit": "1"})
    rid = book.check(ACME).reservation_id
    assert rid is not None
    assert book.reservation_tenant(rid) == (True, "acme")
    assert not book.settle(rid, Decimal("1000000"), tenant="globex")
    assert not book.release(rid, tenant="globex")
    assert reserved(book, "acme") == (Decimal(0), ONE)  # untouched
    assert book.settle(rid, Decimal("0.01"), tenant="acme")
    assert reserved(book, "acme") == (Decimal("0.01"), Decimal(0))
    assert book.reservation_tenant(rid) == (False, None)


def test_a_call_of_another_tenant_naming_a_reservation_is_charged_to_its_own_tenant(book: BudgetBook) -> None:
    book.put_budget({"id": "acme", "scope": {"tenant": "acme"}, "period": "day", "limit": "1"})
    book.put_budget({"id": "globex", "scope": {"tenant": "globex"}, "period": "day", "limit": "1"})
    rid = book.check(ACME).reservation_id
    assert rid is not None
    assert not book.settle_call(GLOBEX, Decimal("0.5"), 10, reservation_id=rid)
    assert reserved(book, "acme") == (Decimal(0), ONE)  # acme's hold is still open, nothing charged to acme
    assert reserved(book, "globex") == (Decimal("0.5"), Decimal(0))  # the spend is globex's own
    assert book.settle_call(ACME, Decimal("0.02"), 10, reservation_id=rid)
    assert reserved(book, "acme") == (Decimal("0.02"), Decimal(0))


def test_the_binding_survives_a_restart_and_old_journal_ids_still_read(tmp_path: Path, pricer: Pricer) -> None:
    first = BudgetBook(estimator=CostEstimator(pricer), data_dir=tmp_path, fsync="never")
    first.put_budget({"id": "acme", "scope": {"tenant": "acme"}, "period": "day", "limit": "1"})
    rid = first.check(ACME).reservation_id
    assert rid is not None
    # not closed (no snapshot): the next book replays the journal; an id as older versions wrote it
    journal = tmp_path / JOURNAL
    journal.write_text(journal.read_text(encoding="utf-8").replace(rid, "0a1b2c3d4e-1"), encoding="utf-8")
    again = BudgetBook(estimator=CostEstimator(pricer), data_dir=tmp_path, fsync="never")
    try:
        assert again.reservation_tenant("0a1b2c3d4e-1") == (True, "acme")
        assert not again.release("0a1b2c3d4e-1", tenant="globex")
        again.snapshot()  # and through a snapshot
    finally:
        again.close()
    third = BudgetBook(estimator=CostEstimator(pricer), data_dir=tmp_path, fsync="never")
    try:
        assert third.reservation_tenant("0a1b2c3d4e-1") == (True, "acme")
        assert third.release("0a1b2c3d4e-1", tenant="acme")
    finally:
        third.close()
    first.close()


@dataclass
class Serve:
    url: str
    keys: dict[str, str]
    book: BudgetBook
    store: Store

    def post(self, who: str, path: str, body: Any) -> httpx.Response:
        return httpx.post(self.url + path, json=body, headers={"X-API-Key": self.keys[who]}, timeout=10)

    def records(self) -> int:
        with self.store.lock:
            return self.store.rollups.records


@pytest.fixture
def serve(tmp_path: Path, pricer: Pricer) -> Iterator[Serve]:
    data = tmp_path / "data"
    settings = Settings(data_dir=data, port=0)
    keystore = KeyStore(data)
    keys = {
        "admin": keystore.create("admin")[1],
        "ingest": keystore.create("ingest")[1],
        "acme-ingest": keystore.create("ingest", "acme")[1],
        "globex-ingest": keystore.create("ingest", "globex")[1],
    }
    store = Store(settings.store_config())
    book = BudgetBook(estimator=CostEstimator(pricer), data_dir=data / "budgets", fsync="never")
    app = build_server_app(settings, store, keys=keystore, pricer=pricer, registry=CollectorRegistry(), book=book)
    with ServerThread(app) as running:
        yield Serve(running.url, keys, book, store)


CHECK = {"provider": "openai", "model": "gpt-4o", "input_tokens": 1000, "max_tokens": 1000}
NOT_FOUND = "no open reservation with this id"


def test_a_bound_key_checks_only_its_own_tenant(serve: Serve) -> None:
    serve.book.put_budget({"id": "globex", "scope": {"tenant": "globex"}, "period": "day", "limit": "1"})
    serve.book.put_budget({"id": "acme", "scope": {"tenant": "acme"}, "period": "day", "limit": "1"})
    named = serve.post("acme-ingest", "/v1/budgets/check", {**CHECK, "tenant": "globex"})
    assert (named.status_code, named.json()["detail"]) == (403, "this key may only check budgets for its own tenant")
    assert reserved(serve.book, "globex") == (Decimal(0), Decimal(0))  # nothing held on globex
    unnamed = serve.post("acme-ingest", "/v1/budgets/check", CHECK)  # made for the key's tenant
    rid = unnamed.json()["reservation_id"]
    assert serve.book.reservation_tenant(rid) == (True, "acme")


def test_settle_and_release_by_another_tenants_key_answer_as_an_unknown_id(serve: Serve) -> None:
    serve.book.put_budget({"id": "acme", "scope": {"tenant": "acme"}, "period": "day", "limit": "1"})
    rid = serve.post("acme-ingest", "/v1/budgets/check", CHECK).json()["reservation_id"]
    for path, body in (
        ("/v1/budgets/settle", {"reservation_id": rid, "cost_usd": "1000000"}),
        (f"/v1/budgets/reservations/{rid}/release", None),
        ("/v1/budgets/settle", {"reservation_id": "rsv_" + "0" * 32, "cost_usd": "1"}),  # an unknown id
    ):
        r = serve.post("globex-ingest", path, body)
        assert (r.status_code, r.json()["detail"]) == (404, NOT_FOUND), path
    assert reserved(serve.book, "acme") == (Decimal(0), ONE)
    ok = serve.post("acme-ingest", "/v1/budgets/settle", {"reservation_id": rid, "cost_usd": "0.01"})
    assert (ok.status_code, ok.json()) == (200, {"settled": True})
    assert reserved(serve.book, "acme") == (Decimal("0.01"), Decimal(0))
    # unbound ingest and admin keys settle any tenant's (its id is the only way to name it)
    for who in ("ingest", "admin"):
        rid = serve.post("acme-ingest", "/v1/budgets/check", CHECK).json()["reservation_id"]
        r = serve.post(who, f"/v1/budgets/reservations/{rid}/release", None)
        assert (r.status_code, r.json()) == (200, {"released": True}), who


def test_a_logged_call_never_settles_another_tenants_reservation(serve: Serve) -> None:
    serve.book.put_budget({"id": "acme", "scope": {"tenant": "acme"}, "period": "day", "limit": "1"})
    rid = serve.post("acme-ingest", "/v1/budgets/check", CHECK).json()["reservation_id"]
    call = {"provider": "openai", "model": "gpt-4o", "prompt_tokens": 10, "completion_tokens": 5}
    attempts = [
        ("globex-ingest", {**call, "reservation_id": rid}),  # bound to globex: the call is globex's
        ("ingest", {**call, "tenant_id": "globex", "reservation_id": rid}),  # unbound, naming globex
        ("admin", {**call, "tenant_id": "globex", "reservation_id": rid}),
    ]
    for who, body in attempts:
        r = serve.post(who, "/api/usage/calls", body)
        assert r.status_code == 404, who
        assert r.json()["detail"] == "no open reservation with this id for this call's tenant"
    assert serve.records() == 0  # nothing stored, nothing charged
    assert reserved(serve.book, "acme") == (Decimal(0), ONE)
    own = serve.post("acme-ingest", "/api/usage/calls", {**call, "reservation_id": rid})
    assert own.status_code == 201, own.text
    assert serve.records() == 1
    spent, held = reserved(serve.book, "acme")
    assert spent == Decimal(own.json()["cost_usd"]) and held == 0  # the call settled its own reservation


def _exhaust(serve: Serve) -> None:
    serve.book.put_budget({"id": "acme", "scope": {"tenant": "acme"}, "period": "day", "limit": "0.02"})
    serve.book.put_budget({"id": "everyone", "period": "day", "limit": "1"})
    serve.book.record(Call(tenant="acme"), Decimal("0.015"))


SPEND_KEYS = {"limit", "spent", "reserved"}


def test_a_refusal_shows_spend_only_to_keys_that_may_read_it(serve: Serve) -> None:
    _exhaust(serve)
    bodies = {
        who: serve.post(who, "/v1/budgets/check", {**CHECK, "tenant": "acme"}).json()
        for who in ("admin", "acme-ingest", "ingest")
    }
    for who in ("admin", "acme-ingest"):
        body = bodies[who]
        assert (body["limit"], body["spent"], body["reserved"]) == ("0.02", "0.015", "0"), who
        assert "limit 0.02 USD, spent 0.015 USD, reserved 0 USD" in body["message"]
    hidden = bodies["ingest"]
    assert hidden["type"] == "budget_exceeded" and hidden["budget_id"] == "acme"
    assert not SPEND_KEYS & set(hidden)
    assert "0.02" not in hidden["message"] and "0.015" not in hidden["message"]
    # the caller's own estimate and the reason are always there
    assert hidden["reason"] == "estimate_exceeds_room"
    assert hidden["estimate"]["usd"] == "0.0125" and hidden["estimate"]["how"] == "max_tokens=1000"
    assert "this call's estimate 0.0125 USD" in hidden["message"]
    # a global budget's numbers are every tenant's: a bound key does not see them
    serve.book.delete_budget("acme")
    serve.book.put_budget({"id": "everyone", "period": "day", "limit": "0.001"})
    glob = serve.post("acme-ingest", "/v1/budgets/check", CHECK).json()
    assert glob["budget_id"] == "everyone" and not SPEND_KEYS & set(glob)
    admin = serve.post("admin", "/v1/budgets/check", CHECK).json()
    assert set(admin) >= SPEND_KEYS
