"""Tenant walls through the fan-out and the proxy: every ``GET`` of the server's OpenAPI document that
a clustered node routes (``ROUTED_PREFIXES``), asked of a node whose peer holds the tenant's calls,
with a tenant key, a tenant-bound ingest key and a metrics key, naming the other tenant every way a
request can (none, ``tenant``, ``tenant_id``, ``X-Tenant-ID``, the path) and with ``X-Costspan-Fanout``.

A route that a single node refuses (401/403) is refused by the cluster too, and no answer to a key
bound to acme carries globex's names. Real nodes on 127.0.0.1 with the same keys."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from costspan.pricing import Pricer, default_pricer
from costspan.processor.api import KeyStore
from costspan.processor.api._keys import KEYS_FILE
from costspan.processor.cluster._fanout import ROUTED_PREFIXES
from costspan.processor.cluster._merge import MERGED_PATHS
from tests.component.cluster.test_fanout import _free_port, _node

ADMIN = "cluster-walls-admin-key-0123456789"


def _call(url: str, tenant: str, model: str) -> None:
    call = {"provider": "openai", "model": model, "prompt_tokens": 10, "completion_tokens": 5, "tenant_id": tenant}
    call |= {"workflow_id": f"{tenant}-flow"}
    answer = httpx.post(url + "/api/usage/calls", json=call, headers={"X-API-Key": ADMIN}, timeout=10)
    assert answer.status_code == 201, answer.text


@pytest.fixture(scope="module")
def pricer() -> Pricer:
    return default_pricer()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, pricer: Pricer) -> Iterator[tuple[str, str, dict[str, str]]]:
    """(clustered node, single node with the same calls, keys): acme's calls on the peer, globex's here."""
    base = tmp_path_factory.mktemp("walls")
    keystore = KeyStore(base / "keys", admin_key=ADMIN)
    keys = {
        "tenant": keystore.create("tenant", "acme")[1],
        "ingest": keystore.create("ingest", "acme")[1],
        "metrics": keystore.create("metrics")[1],
    }
    for name in ("a", "b", "single"):
        (base / name).mkdir(mode=0o700)
        shutil.copy2(keystore.path, base / name / KEYS_FILE)
    ports = [_free_port(), _free_port()]
    urls = tuple(f"http://127.0.0.1:{p}" for p in ports)
    with ExitStack() as stack:
        a, b = (
            stack.enter_context(
                _node(
                    base / name,
                    pricer,
                    ADMIN,
                    port=port,
                    peers=urls,
                    node_url=url,
                    peer_key=ADMIN,
                    peer_timeout_seconds=2.0,
                )
            )[0]
            for name, port, url in zip(("a", "b"), ports, urls, strict=True)
        )
        single = stack.enter_context(_node(base / "single", pricer, ADMIN))[0]
        for _ in range(2):
            _call(b, "acme", "gpt-4o")
            _call(a, "globex", "gpt-4o-mini")
            _call(single, "acme", "gpt-4o")
            _call(single, "globex", "gpt-4o-mini")
        yield a, single, keys


def _get_paths(url: str) -> list[str]:
    spec: dict[str, Any] = httpx.get(url + "/openapi.json", headers={"X-API-Key": ADMIN}, timeout=10).json()
    return sorted(p for p, ops in spec["paths"].items() if "get" in ops and p.startswith(ROUTED_PREFIXES))


def _ways(path: str) -> Iterator[tuple[str, dict[str, str], dict[str, str]]]:
    """(path, query, headers) naming globex every way, and once not at all."""
    named = re.sub(r"\{[^}]*\}", "globex", path)
    own = re.sub(r"\{[^}]*\}", "acme", path)
    yield own, {}, {}
    yield own, {}, {"X-Costspan-Fanout": "1"}
    yield own, {"tenant": "globex"}, {}
    yield own, {"tenant_id": "globex"}, {}
    yield own, {}, {"X-Tenant-ID": "globex"}
    if named != own:
        yield named, {}, {}


def test_no_key_reaches_more_through_the_cluster_than_on_one_node(cluster: tuple[str, str, dict[str, str]]) -> None:
    node, single, keys = cluster
    paths = _get_paths(node)
    assert len(paths) > 10
    holes: list[str] = []
    answered = 0
    with httpx.Client(timeout=10) as c:
        for path in paths:
            for role, key in keys.items():
                for where, query, extra in _ways(path):
                    headers = {"X-API-Key": key, **extra}
                    there = c.get(node + where, params=query, headers=headers)
                    answered += there.is_success
                    alone = c.get(single + where, params=query, headers=headers)
                    case = (
                        f"{role} GET {where} {query} {extra}: cluster {there.status_code}, one node {alone.status_code}"
                    )
                    if there.status_code >= 500:
                        holes.append(case + " (server error)")
                    elif alone.status_code in (401, 403) and there.status_code not in (401, 403):
                        holes.append(case + " (refused alone, not in the cluster)")
                    elif there.is_success and "globex" in there.text:
                        holes.append(case + " (globex's data)")
    assert holes == [], "\n".join(holes)
    assert answered > 20  # the walls were tried on real answers, not only on refusals
    # and the cluster does route: acme's calls, all on the peer, reach acme's key here
    rows = httpx.get(node + "/api/usage/export", params={"format": "json"}, headers={"X-API-Key": keys["tenant"]})
    assert [r["tenant_id"] for r in rows.json()] == ["acme", "acme"]
    merged = httpx.get(node + "/api/usage/costs/by-provider", headers={"X-API-Key": keys["tenant"]}).json()
    assert merged["partial"] is False and merged["data"]["providers"][0]["request_count"] == 2


@pytest.mark.parametrize("key_name", ["admin", "tenant"])
def test_every_merged_read_of_two_living_shards_is_complete(
    cluster: tuple[str, str, dict[str, str]], key_name: str
) -> None:
    """Real shards' answers are all usable: no merged read is partial while every peer answers."""
    node, single, keys = cluster
    key = ADMIN if key_name == "admin" else keys["tenant"]
    for path in MERGED_PATHS:
        params = {"scope": "global"} if path == "/v1/usage" and key_name == "admin" else {}
        there = httpx.get(node + path, params=params, headers={"X-API-Key": key}, timeout=10)
        alone = httpx.get(single + path, params=params, headers={"X-API-Key": key}, timeout=10)
        assert there.status_code == alone.status_code == 200, (path, there.text)
        merged = there.json()
        assert merged.pop("partial") is False and merged.pop("failed_peers") == [], path
        if path == "/api/usage/performance/latency":  # percentiles: the busiest shard's, marked inexact
            assert merged.pop("exact") is False
        # the answer one node holding every call gives, field for field (envelope, numbers and exact strings)
        assert _comparable(merged) == _comparable(alone.json()), path


#: Fields that tell the moment of the answer, not the calls.
_MOMENT = frozenset({"cached_at", "end_date", "last_updated", "generated_at"})


def _comparable(answer: Any) -> Any:
    if isinstance(answer, dict):
        return {k: "<now>" if k in _MOMENT else _comparable(v) for k, v in answer.items()}
    if isinstance(answer, list):
        return [_comparable(v) for v in answer]
    return answer
