"""One real node (uvicorn on 127.0.0.1) whose peers misbehave: one never answers, one refuses the
peer key. Merged reads answer within the timeout, partial, naming them; tenant reads that no living
shard can answer are refused with a reason; a node without peers answers as before."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from costspan.pricing import Pricer, default_pricer
from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.api import KeyStore
from costspan.processor.serve._server import build_server_app
from costspan.processor.serve._settings import Settings
from costspan.processor.store._store import Store

ADMIN = "cluster-component-admin-0123456789"
TIMEOUT_S = 0.5


@pytest.fixture(scope="module")
def pricer() -> Pricer:
    return default_pricer()


def _listening() -> socket.socket:
    """A socket that accepts connections (the kernel's backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def _node(data: Path, pricer: Pricer, admin: str, **settings: Any) -> Iterator[tuple[str, KeyStore]]:
    port = settings.pop("port", 0)
    keys = KeyStore(data, admin_key=admin)
    store = Store(Settings(data_dir=data).store_config())
    app = build_server_app(
        Settings(data_dir=data, port=port, grpc_port=0, **settings),
        store,
        keys=keys,
        pricer=pricer,
        registry=CollectorRegistry(auto_describe=False),
    )
    with ServerThread(app, port=port) as server:
        yield server.url, keys


def _get(url: str, path: str, key: str = ADMIN, **params: Any) -> httpx.Response:
    return httpx.get(url + path, params=params, headers={"X-API-Key": key}, timeout=10)


def _log_call(url: str, tenant: str) -> None:
    call = {"provider": "openai", "model": "gpt-4o", "prompt_tokens": 100, "completion_tokens": 10}
    answer = httpx.post(
        url + "/api/usage/calls", json=call | {"tenant_id": tenant}, headers={"X-API-Key": ADMIN}, timeout=10
    )
    assert answer.status_code == 201, answer.text


def test_misbehaving_peers_make_merged_reads_partial_within_the_timeout(tmp_path: Path, pricer: Pricer) -> None:
    with ExitStack() as stack:
        hung = stack.enter_context(_listening())
        hung_url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        refusing_url, _ = stack.enter_context(_node(tmp_path / "other", pricer, "another-admin-key-0123456789"))
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        _, keys = stack.enter_context(
            _node(
                tmp_path / "node",
                pricer,
                ADMIN,
                port=port,
                peers=(url, hung_url, refusing_url),
                node_url=url,
                peer_key=ADMIN,
                peer_timeout_seconds=TIMEOUT_S,
            )
        )
        acme = keys.create("tenant", "acme")[1]
        _log_call(url, "acme")

        t0 = time.monotonic()
        merged = _get(url, "/api/usage/costs/by-provider").json()
        assert time.monotonic() - t0 < TIMEOUT_S + 1.5
        # the single-node shape, envelope and all; partial and failed_peers beside success and data
        assert set(merged) == {"success", "data", "partial", "failed_peers"} and merged["success"] is True
        assert merged["partial"] is True and merged["failed_peers"] == sorted([hung_url, refusing_url])
        assert merged["data"]["providers"][0]["request_count"] == 1
        # a peer's own question is answered with its own data, never fanned out again
        own = httpx.get(
            url + "/api/usage/costs/by-provider", headers={"X-API-Key": ADMIN, "X-Costspan-Fanout": "1"}, timeout=10
        ).json()
        assert set(own) == {"success", "data"} and own["data"]["providers"] == merged["data"]["providers"]
        assert own["data"]["by_provider"] == merged["data"]["by_provider"] == {"openai": own["data"]["total_cost_usd"]}
        # a tenant's merged read is partial too; a read that is not merged is answered by the shard
        # holding the tenant's calls: here, when this shard holds some
        assert _get(url, "/api/usage/costs/by-provider", acme).json()["partial"] is True
        rows = _get(url, "/api/usage/export", acme, format="json").json()
        assert [r["tenant_id"] for r in rows] == ["acme"]
        # and refused with a reason when nobody that answered holds it
        refused = _get(url, "/api/usage/export", ADMIN, tenant="globex", format="json")
        assert refused.status_code == 503 and "did not answer" in refused.json()["detail"]

        metrics = _get(url, "/metrics").text
        for peer in (hung_url, refusing_url):
            (line,) = [
                m for m in metrics.splitlines() if m.startswith(f'costspan_peer_failures_total{{peer="{peer}"}}')
            ]
            assert float(line.rsplit(" ", 1)[1]) >= 1
        assert "costspan_foreign_tenant_spans_total" in metrics


def test_a_node_without_peers_answers_as_before(tmp_path: Path, pricer: Pricer) -> None:
    with _node(tmp_path / "alone", pricer, ADMIN) as (url, keys):
        acme = keys.create("tenant", "acme")[1]
        _log_call(url, "acme")
        _log_call(url, "acme")
        answer = _get(url, "/api/usage/costs/by-provider").json()
        assert set(answer) == {"success", "data"} and answer["data"]["providers"][0]["request_count"] == 2
        assert _get(url, "/api/cluster/tenant-calls", tenant="acme").json() == {"tenant": "acme", "calls": 2}
        assert _get(url, "/api/cluster/tenant-calls", acme).json() == {"tenant": "acme", "calls": 2}
        assert _get(url, "/api/cluster/tenant-calls", acme, tenant="globex").status_code == 403
        assert _get(url, "/api/cluster/tenant-calls").status_code == 400
        metrics = _get(url, "/metrics").text
        assert "costspan_foreign_tenant_spans_total 0.0" in metrics
