"""The spend-lease routes of ``costspan serve``: peers (admin keys) only, bad asks refused with a reason."""

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
from costspan.processor.cluster import Peers
from costspan.processor.serve._server import build_server_app
from costspan.processor.serve._settings import Settings
from costspan.processor.store._store import Store

GLOBAL = {"id": "g", "period": "day", "limit": "10", "mode": "hard"}
ASK = {"budget_id": "g", "key": "g", "start": 0.0, "shard": "http://127.0.0.1:7001", "spent": "2"}
SELF, OTHER = "http://127.0.0.1:7001", "http://127.0.0.1:7002"


def _server(tmp_path: Path, pricer: Pricer, **cluster: Any) -> Iterator[tuple[str, dict[str, str]]]:
    data = tmp_path / "data"
    settings = Settings(data_dir=data, port=0, grpc_port=0, **cluster)
    keystore = KeyStore(data)
    keys = {
        "admin": keystore.create("admin")[1],
        "acme": keystore.create("tenant", "acme")[1],
        "ingest": keystore.create("ingest")[1],
        "metrics": keystore.create("metrics")[1],
    }
    store = Store(settings.store_config())
    app = build_server_app(settings, store, keys=keystore, pricer=pricer, registry=CollectorRegistry())
    with ServerThread(app) as running:
        assert httpx.post(running.url + "/v1/budgets", json=GLOBAL, headers={"x-api-key": keys["admin"]}).is_success
        yield running.url, keys


@pytest.fixture
def single(tmp_path: Path, pricer: Pricer) -> Iterator[tuple[str, dict[str, str]]]:
    yield from _server(tmp_path, pricer)


def _ask(url: str, key: str | None, body: Any = ASK) -> httpx.Response:
    headers = {} if key is None else {"x-api-key": key}
    return httpx.post(url + "/v1/leases", json=body, headers=headers, timeout=10)


def test_an_admin_key_gets_a_lease_and_sees_it_outstanding(single: tuple[str, dict[str, str]]) -> None:
    url, keys = single
    answer = _ask(url, keys["admin"])
    assert answer.status_code == 200, answer.text
    # remaining 10 - 2 = 8: a tenth of it (0.8), above the 1 % minimum and under the 25 % maximum
    assert answer.json() == {"allowance": "2.8", "granted": "0.8", "remaining": "7.2", "ttl": 30.0}
    shown = httpx.get(url + "/v1/leases", headers={"x-api-key": keys["admin"]}).json()
    assert shown == {"held": {}, "granted_outstanding": {"g": "0.8"}}
    released = _ask(url, keys["admin"], {**ASK, "release": True, "spent": "2.5"})
    assert released.status_code == 200
    assert httpx.get(url + "/v1/leases", headers={"x-api-key": keys["admin"]}).json()["granted_outstanding"] == {
        "g": "0"
    }


@pytest.mark.parametrize("key", ["acme", "ingest", "metrics"])
def test_other_keys_are_refused_and_nothing_is_granted(single: tuple[str, dict[str, str]], key: str) -> None:
    url, keys = single
    assert _ask(url, keys[key]).status_code == 403
    assert httpx.get(url + "/v1/leases", headers={"x-api-key": keys[key]}).status_code == 403
    assert _ask(url, None).status_code == 401
    shown = httpx.get(url + "/v1/leases", headers={"x-api-key": keys["admin"]}).json()
    assert shown["granted_outstanding"] == {}


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({**ASK, "budget_id": "nope", "key": "nope"}, 404, "unknown budget 'nope'"),
        ({**ASK, "key": "other"}, 400, "is not a counter of budget 'g'"),
        ({**ASK, "spent": "-1"}, 422, "spent"),
        ({**ASK, "spent": "NaN"}, 422, "spent"),
        ({**ASK, "start": "inf"}, 422, "start"),
        ({**ASK, "extra": 1}, 422, "extra"),
        ({k: v for k, v in ASK.items() if k != "shard"}, 422, "shard"),
    ],
)
def test_bad_asks_are_refused_with_a_reason(
    single: tuple[str, dict[str, str]], body: dict[str, Any], status: int, says: str
) -> None:
    url, keys = single
    answer = _ask(url, keys["admin"], body)
    assert answer.status_code == status, answer.text
    assert says in answer.text


def test_a_budget_of_one_tenant_is_leased_a_soft_one_is_not(single: tuple[str, dict[str, str]]) -> None:
    url, keys = single
    admin = {"x-api-key": keys["admin"]}
    acme = {"id": "acme-day", "scope": {"tenant": "acme"}, "period": "day", "limit": "1"}
    assert httpx.post(url + "/v1/budgets", json=acme, headers=admin).is_success
    answer = _ask(url, keys["admin"], {**ASK, "budget_id": "acme-day", "key": "acme-day", "spent": "0"})
    assert answer.status_code == 200 and answer.json()["allowance"] == "0.1", answer.text  # a tenth of 1
    soft = {**acme, "id": "acme-soft", "mode": "soft"}
    assert httpx.post(url + "/v1/budgets", json=soft, headers=admin).is_success
    refused = _ask(url, keys["admin"], {**ASK, "budget_id": "acme-soft", "key": "acme-soft"})
    assert refused.status_code == 409 and "not leased" in refused.text


def test_an_instance_that_does_not_own_the_budget_says_who_does(tmp_path: Path, pricer: Pricer) -> None:
    peers = Peers(self_url=SELF, urls=(SELF, OTHER))
    budget_id = next(f"b{i}" for i in range(100) if peers.owner(f"budget:b{i}") == OTHER)
    for url, keys in _server(tmp_path, pricer, peers=(SELF, OTHER), node_url=SELF, peer_timeout_seconds=0.2):
        spec = {**GLOBAL, "id": budget_id}
        assert httpx.put(f"{url}/v1/budgets/{budget_id}", json=spec, headers={"x-api-key": keys["admin"]}).is_success
        answer = _ask(url, keys["admin"], {**ASK, "budget_id": budget_id, "key": budget_id})
        assert answer.status_code == 409 and f"its owner is {OTHER}" in answer.text
