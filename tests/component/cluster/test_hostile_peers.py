"""A real node whose peers answer 200 with bodies that are not a shard's answer (a list, a string,
fields of the wrong type, bytes that are not JSON): merged reads stay 200, marked partial and naming
the peer; the node's own figures are kept. Peers are real sockets (a stdlib HTTP server)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from costspan.pricing import Pricer, default_pricer
from tests.component.cluster.test_fanout import ADMIN, _free_port, _get, _log_call, _node

GARBAGE = (
    b"[1, 2, 3]",
    b'"a string"',
    b"null",
    b'{"providers": "not rows", "request_count": "abc", "total_cost": {"x": 1}}',
    b'{"providers": [{"provider": "openai", "request_count": "many", "cost": [1]}], "request_count": 1.5}',
    b"\xff\xfe not json",
)


@pytest.fixture(scope="module")
def pricer() -> Pricer:
    return default_pricer()


@contextmanager
def _peer_answering(body: bytes) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_peer_answering_garbage_makes_merged_reads_partial_not_500(tmp_path: Path, pricer: Pricer) -> None:
    with ExitStack() as stack:
        peers = [stack.enter_context(_peer_answering(body)) for body in GARBAGE]
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        _, keys = stack.enter_context(
            _node(
                tmp_path / "node",
                pricer,
                ADMIN,
                port=port,
                peers=(url, *peers),
                node_url=url,
                peer_key=ADMIN,
                peer_timeout_seconds=2.0,
            )
        )
        acme = keys.create("tenant", "acme")[1]
        _log_call(url, "acme")
        for path in ("/api/usage/costs/by-provider", "/api/dashboard/summary", "/api/usage/performance/latency"):
            for key in (ADMIN, acme):
                answer = _get(url, path, key)
                assert answer.status_code == 200, (path, answer.text)
                merged = answer.json()
                assert merged["partial"] is True, path
                assert merged["failed_peers"] == sorted(peers), path
        rows = _get(url, "/api/usage/costs/by-provider").json()["data"]["providers"]
        assert [(r["provider"], r["request_count"]) for r in rows] == [("openai", 1)]
        # the tenant-calls question: a garbage answer is no answer, the node holding calls answers itself
        assert httpx.get(url + "/api/usage/export", params={"format": "json"}, headers={"X-API-Key": acme}).is_success


def test_a_proxied_read_is_the_request_the_client_sent(tmp_path: Path, pricer: Pricer) -> None:
    """A path with an encoded ``?`` (or ``/``) is not decoded into another request on the way to a peer."""
    with ExitStack() as stack:
        holder, _ = stack.enter_context(_node(tmp_path / "holder", pricer, ADMIN))
        _log_call(holder, "acme")
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        stack.enter_context(
            _node(tmp_path / "node", pricer, ADMIN, port=port, peers=(url, holder), node_url=url, peer_key=ADMIN)
        )
        headers = {"X-API-Key": ADMIN, "X-Tenant-ID": "acme"}
        # the holder has acme's calls: a read naming acme is proxied there
        assert httpx.get(url + "/api/usage/export?format=json", headers=headers).json()[0]["tenant_id"] == "acme"
        for path in ("/api/usage/export%3Fformat=json", "/api/usage/export%2F..%2F..%2Fcluster%2Ftenant-calls"):
            proxied = httpx.get(url + path, headers=headers)
            assert proxied.status_code == httpx.get(holder + path, headers=headers).status_code == 404, path
