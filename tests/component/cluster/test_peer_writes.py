"""What a node sends its peers when it writes: budget definitions (forwarded only after the local route
accepted them, exactly as stored, with the peer key) and lease asks — to the configured peer URLs only,
never through a proxy from the environment. The peer is a real socket: a stdlib HTTP server that
records what it is sent."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from costspan.pricing import Pricer, default_pricer
from costspan.processor.cluster import Peers
from tests.component.cluster.test_fanout import ADMIN, _free_port, _node

GRANT = {"allowance": "5", "granted": "5", "remaining": "95", "ttl": 30.0}


@pytest.fixture(scope="module")
def pricer() -> Pricer:
    return default_pricer()


@contextmanager
def _recording_peer() -> Iterator[tuple[str, list[tuple[str, str, dict[str, str], Any]]]]:
    seen: list[tuple[str, str, dict[str, str], Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            out = json.dumps(GRANT if self.path == "/v1/leases" else body or {}).encode()
            self.send_response(204 if self.command == "DELETE" else 200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", "0" if self.command == "DELETE" else str(len(out)))
            self.end_headers()
            if self.command != "DELETE":
                self.wfile.write(out)

        do_GET = do_PUT = do_POST = do_DELETE = _answer  # noqa: N815 - the stdlib's names

        def log_message(self, *_: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_budget_writes_reach_peers_only_as_accepted_and_never_through_a_proxy(
    tmp_path: Path, pricer: Pricer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a proxy from the environment that refuses connections: the peer key must not go there
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{_free_port()}")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    with _recording_peer() as (peer, seen):
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        with (
            _node(tmp_path / "node", pricer, ADMIN, port=port, peers=(url, peer), node_url=url, peer_key=ADMIN) as (
                _,
                keys,
            ),
            httpx.Client(trust_env=False, timeout=10) as c,
        ):
            acme = keys.create("tenant", "acme")[1]
            ingest = keys.create("ingest", "acme")[1]
            budget = {"id": "acme-day", "scope": {"tenant": "acme"}, "period": "day", "limit": "5", "mode": "hard"}
            for key in (acme, ingest):  # refused here: nothing reaches the peer, whatever the headers say
                for headers in ({}, {"X-Costspan-Forwarded": peer}):
                    answer = c.post(url + "/v1/budgets", json=budget, headers={"X-API-Key": key, **headers})
                    assert answer.status_code == 403, answer.text
                    denied = c.delete(url + "/v1/budgets/acme-day", headers={"X-API-Key": key, **headers})
                    assert denied.status_code == 403
            assert [s for s in seen if s[1].startswith("/v1/budgets")] == []

            created = c.post(url + "/v1/budgets", json=budget, headers={"X-API-Key": ADMIN})
            assert created.status_code == 201, created.text
            assert created.headers["x-costspan-peers-failed"] == ""
            (put,) = [s for s in seen if s[1].startswith("/v1/budgets")]
            method, path, headers, body = put
            assert (method, path, body) == ("PUT", "/v1/budgets/acme-day", created.json())
            assert headers["x-api-key"] == ADMIN and headers["x-costspan-forwarded"] == url
            deleted = c.delete(url + "/v1/budgets/acme-day", headers={"X-API-Key": ADMIN})
            assert deleted.status_code == 204 and deleted.headers["x-costspan-peers-failed"] == ""
            assert [s[:2] for s in seen if s[0] == "DELETE"] == [("DELETE", "/v1/budgets/acme-day")]

            # a global budget the peer owns: this node asks it for a lease, with the peer key, directly
            peers = Peers(self_url=url, urls=(url, peer))
            owned = next(f"g{n}" for n in range(100) if peers.owner(f"budget:g{n}") == peer)
            leased = {"id": owned, "period": "day", "limit": "100", "unit": "requests", "mode": "hard"}
            assert c.post(url + "/v1/budgets", json=leased, headers={"X-API-Key": ADMIN}).status_code == 201
            deadline = time.monotonic() + 10
            while not [s for s in seen if s[1] == "/v1/leases"]:
                assert time.monotonic() < deadline, "no lease ask reached the owner"
                time.sleep(0.05)
            ask = next(s for s in seen if s[1] == "/v1/leases")
            assert ask[0] == "POST" and ask[2]["x-api-key"] == ADMIN and ask[3]["budget_id"] == owned


def test_a_hanging_peer_delays_a_budget_write_by_one_timeout_at_most(tmp_path: Path, pricer: Pricer) -> None:
    import socket

    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        peer = f"http://127.0.0.1:{hung.getsockname()[1]}"
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        with _node(
            tmp_path / "node",
            pricer,
            ADMIN,
            port=port,
            peers=(url, peer),
            node_url=url,
            peer_key=ADMIN,
            peer_timeout_seconds=0.5,
        ):
            t0 = time.monotonic()
            budget = {"id": "g", "period": "day", "limit": "5", "mode": "hard"}
            created = httpx.post(url + "/v1/budgets", json=budget, headers={"X-API-Key": ADMIN}, timeout=10)
            assert created.status_code == 201 and created.headers["x-costspan-peers-failed"] == peer
            assert time.monotonic() - t0 < 2.0


def test_workspace_and_project_budget_routes_reach_peers_only_as_accepted(tmp_path: Path, pricer: Pricer) -> None:
    """The workspace and project budget routes define budgets too: every budget of the scope is put on
    the peers after the local route accepted the post, a removed one deleted; a refused post sends nothing."""
    with _recording_peer() as (peer, seen):
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        with (
            _node(tmp_path / "node", pricer, ADMIN, port=port, peers=(url, peer), node_url=url, peer_key=ADMIN) as (
                _,
                keys,
            ),
            httpx.Client(trust_env=False, timeout=10) as c,
        ):
            admin = {"X-API-Key": ADMIN}
            tenant = {"X-API-Key": keys.create("tenant", "acme")[1]}

            def sent() -> list[tuple[str, str, Any]]:
                out = [(m, p, b) for m, p, _, b in seen if p.startswith("/v1/budgets")]
                seen.clear()
                return out

            assert (
                c.post(url + "/api/workspaces/acme/budget", json={"daily_limit": "2"}, headers=tenant).status_code
                == 403
            )
            bad = c.post(url + "/api/workspaces/acme/budget", json={"daily_limit": "-1"}, headers=admin)
            assert bad.status_code == 422 and sent() == []

            made = c.post(
                url + "/api/workspaces/acme/budget", json={"daily_limit": "2", "monthly_limit": "9"}, headers=admin
            )
            assert made.status_code == 200 and made.headers["x-costspan-peers-failed"] == ""
            stored = {b["id"]: b for b in c.get(url + "/v1/budgets", headers=admin).json()}
            assert sorted(sent(), key=lambda s: s[1]) == [
                ("PUT", "/v1/budgets/ws-acme-daily", stored["ws-acme-daily"]),
                ("PUT", "/v1/budgets/ws-acme-monthly", stored["ws-acme-monthly"]),
            ]
            changed = c.post(url + "/api/workspaces/acme/budget", json={"monthly_limit": "10"}, headers=admin)
            assert changed.status_code == 200 and changed.headers["x-costspan-peers-failed"] == ""
            stored = {b["id"]: b for b in c.get(url + "/v1/budgets", headers=admin).json()}
            assert sorted(sent(), key=lambda s: s[1]) == [
                ("DELETE", "/v1/budgets/ws-acme-daily", None),
                ("PUT", "/v1/budgets/ws-acme-monthly", stored["ws-acme-monthly"]),
            ]
            project = c.post(
                url + "/api/projects/web-app/budget?workspace_id=acme", json={"daily_limit": "1"}, headers=admin
            )
            assert project.status_code == 200 and project.headers["x-costspan-peers-failed"] == ""
            ((method, path, body),) = sent()
            assert (method, path) == ("PUT", "/v1/budgets/ws-acme-p-web--app-daily")
            assert body["scope"] == {"tenant": "acme", "project": "web-app"}
