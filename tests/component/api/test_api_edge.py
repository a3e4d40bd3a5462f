"""The HTTP edge of the whole server: keys before bodies, body limits, JSON-only writes, /metrics keys.

A real ``build_server_app`` (receiver, budgets, usage API) on 127.0.0.1; the requests that must be
refused before their body is read are written on a raw socket, so a test sees the answer arrive
while the body is still unsent.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import select
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client import CollectorRegistry

from costspan.pricing import Pricer
from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.api._keys import KeyStore, Principal
from costspan.processor.api._keys_cli import add_keys_command, run_keys
from costspan.processor.serve._server import build_server_app
from costspan.processor.serve._settings import Settings
from costspan.processor.store._store import Store

LIMIT = 64 * 1024  # the servers' JSON body limit in these tests
CALL = {"provider": "openai", "model": "gpt-4o", "prompt_tokens": 1000, "completion_tokens": 100}
BUDGET = {"id": "acme-day", "scope": {"tenant": "acme"}, "period": "day", "limit": "100"}


class CountingKeys(KeyStore):
    """A key store that counts its verifications (how often a request's key was checked)."""

    verified = 0

    def verify(self, presented: str) -> Principal | None:
        CountingKeys.verified += 1
        return super().verify(presented)


@dataclass
class Edge:
    url: str
    keys: dict[str, str]
    store: KeyStore

    def headers(self, who: str | None, **extra: str) -> dict[str, str]:
        return {**({"X-API-Key": self.keys[who]} if who else {}), **extra}


@contextmanager
def _server(tmp: Path, pricer: Pricer, **settings: object) -> Iterator[tuple[str, KeyStore]]:
    config = Settings(data_dir=tmp / "data", port=0, max_request_bytes=LIMIT, **settings)  # type: ignore[arg-type]
    keystore = CountingKeys(config.data_dir)
    store = Store(config.store_config())
    app = build_server_app(config, store, keys=keystore, pricer=pricer, registry=CollectorRegistry())
    with ServerThread(app) as server:
        yield server.url, keystore


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, pricer: Pricer) -> Iterator[Edge]:
    tmp = tmp_path_factory.mktemp("edge")
    keystore = KeyStore(tmp / "data")
    keys = {
        "admin": keystore.create("admin")[1],
        "acme": keystore.create("tenant", "acme")[1],
        "ingest": keystore.create("ingest")[1],
        "metrics": keystore.create("metrics")[1],
    }
    with _server(tmp, pricer) as (url, store):
        yield Edge(url, keys, store)


def _raw(url: str, head: str, body: Iterable[bytes] = ()) -> tuple[int, dict[str, str], bytes, int]:
    """Send ``head`` then ``body`` chunks until the server answers; ``(status, headers, body, bytes of
    body sent)``. Stops sending as soon as an answer is readable (or the server closed)."""
    parts = urlsplit(url)
    sent = 0
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head.encode("latin-1"))
        for chunk in body:
            if select.select([sock], [], [], 0)[0]:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        sock.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            got = sock.recv(65536)
            if not got:
                break
            data += got
        raw_head, _, rest = data.partition(b"\r\n\r\n")
        lines = raw_head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            got = sock.recv(65536)
            if not got:
                break
            rest += got
        return int(lines[0].split()[1]), headers, rest[:length], sent


def _head(method: str, path: str, key: str | None = None, **headers: str) -> str:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if key:
        lines.append(f"X-API-Key: {key}")
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return "\r\n".join(lines) + "\r\n\r\n"


def _chunks(size: int, total: int) -> Iterator[bytes]:
    """A chunked transfer encoding of ``total`` bytes of JSON-ish padding."""
    for _ in range(total // size):
        yield b"%x\r\n%s\r\n" % (size, b" " * size)
    yield b"0\r\n\r\n"


WRITES = [
    ("POST", "/api/usage/calls"),
    ("POST", "/v1/budgets"),
    ("PUT", "/v1/budgets/acme-day"),
    ("POST", "/api/resources/usage"),
    ("POST", "/api/workspaces/acme/budget"),
    ("POST", "/v1/budgets/check"),
    ("POST", "/v1/traces"),
]


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_no_key_is_answered_401_before_a_512_mb_body_is_sent(edge: Edge, method: str, path: str) -> None:
    content_type = "application/x-protobuf" if path == "/v1/traces" else "application/json"
    status, headers, body, _ = _raw(
        edge.url, _head(method, path, Content_Type=content_type, Content_Length=str(512 * 1024 * 1024))
    )
    assert status == 401
    answer = json.loads(body)
    if path == "/v1/traces":  # the OTLP error shape
        assert answer == {"code": 16, "message": "missing API key: send X-API-Key or Authorization: Bearer"}
    else:
        assert answer["detail"] == "missing API key: send X-API-Key or Authorization: Bearer"
        assert headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path"), WRITES[:3])
def test_a_bad_key_with_a_chunked_body_is_refused_before_the_body(edge: Edge, method: str, path: str) -> None:
    head = _head(method, path, "csk_nope_nope", Content_Type="application/json", Transfer_Encoding="chunked")
    status, _, body, sent = _raw(edge.url, head, _chunks(1 << 20, 256 << 20))
    assert status == 401 and json.loads(body)["detail"] == "invalid or revoked API key"
    assert sent < 64 << 20  # answered while the 256 MB body was still being sent


def test_a_body_above_the_limit_is_refused_from_its_content_length(edge: Edge) -> None:
    head = _head("POST", "/api/usage/calls", edge.keys["ingest"], Content_Type="application/json")
    head = head[:-2] + f"Content-Length: {LIMIT + 1}\r\n\r\n"
    status, headers, body, _ = _raw(edge.url, head)
    assert status == 413 and headers["connection"] == "close"
    assert json.loads(body)["detail"] == f"request body of {LIMIT + 1} bytes is above the limit of {LIMIT}"


@pytest.mark.parametrize("path", ["/api/usage/calls", "/v1/budgets", "/v1/budgets/check"])
def test_a_chunked_body_is_cut_at_the_limit(edge: Edge, path: str) -> None:
    head = _head("POST", path, edge.keys["admin"], Content_Type="application/json", Transfer_Encoding="chunked")
    status, _, body, sent = _raw(edge.url, head, _chunks(16 * 1024, 64 << 20))
    assert status == 413 and json.loads(body)["detail"]
    assert sent < 8 << 20  # cut near the limit, not after 64 MB


def test_a_chunked_body_under_the_limit_is_served(edge: Edge) -> None:
    payload = json.dumps({**CALL, "tenant_id": "acme"}).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload)
    head = _head("POST", "/api/usage/calls", edge.keys["ingest"], Content_Type="application/json")
    status, _, body, _ = _raw(edge.url, head[:-2] + "Transfer-Encoding: chunked\r\n\r\n", iter([chunked]))
    assert status == 201, body


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/v1/budgets/check", "text/plain"),
        ("/v1/budgets", "application/x-www-form-urlencoded"),
        ("/api/usage/calls", "multipart/form-data; boundary=x"),
        ("/v1/budgets/settle", "text/plain;charset=UTF-8"),
    ],
)
def test_json_writes_refuse_what_a_browser_form_can_post(edge: Edge, path: str, content_type: str) -> None:
    body = json.dumps({"tenant": "acme", "model": "gpt-4o"})
    response = httpx.post(
        edge.url + path, content=body, headers=edge.headers("admin", **{"Content-Type": content_type})
    )
    assert response.status_code == 415
    assert response.json()["detail"] == f"Content-Type must be application/json, not {content_type!r}"
    no_type = httpx.post(edge.url + path, content=body, headers=edge.headers("admin"))
    assert no_type.status_code == 415


def test_json_writes_accept_json_with_parameters_and_bodiless_posts(edge: Edge) -> None:
    headers = edge.headers("admin", **{"Content-Type": "application/json; charset=utf-8"})
    check = httpx.post(edge.url + "/v1/budgets/check", content=json.dumps({"tenant": "acme"}), headers=headers)
    assert check.status_code == 200
    release = httpx.post(edge.url + "/v1/budgets/reservations/nope/release", headers=edge.headers("ingest"))
    assert release.status_code != 415


@pytest.mark.parametrize(
    ("who", "status"),
    [(None, 401), ("acme", 403), ("ingest", 403), ("metrics", 200), ("admin", 200)],
)
def test_metrics_needs_an_admin_or_metrics_key(edge: Edge, who: str | None, status: int) -> None:
    response = httpx.get(edge.url + "/metrics", headers=edge.headers(who))
    assert response.status_code == status
    if status == 200:
        assert "# HELP costspan_" in response.text
    else:
        assert "costspan_" not in response.text


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/usage"), ("GET", "/api/usage/metrics/realtime"), ("GET", "/v1/budgets"), ("POST", "/v1/traces")],
)
def test_a_metrics_key_may_only_scrape(edge: Edge, method: str, path: str) -> None:
    headers = edge.headers("metrics", **{"Content-Type": "application/json"})
    response = httpx.request(method, edge.url + path, headers=headers, content=b"{}" if method == "POST" else None)
    assert response.status_code == 403


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/health", "/dashboard", "/openapi.json", "/docs"])
def test_public_paths_need_no_key(edge: Edge, path: str) -> None:
    assert httpx.get(edge.url + path).status_code == 200


def test_the_key_is_verified_once_per_request(edge: Edge) -> None:
    before = CountingKeys.verified
    assert httpx.get(edge.url + "/api/usage/metrics/realtime", headers=edge.headers("acme")).status_code == 200
    assert CountingKeys.verified - before == 1
    before = CountingKeys.verified
    check = httpx.post(edge.url + "/v1/budgets/check", json={"tenant": "acme"}, headers=edge.headers("ingest"))
    assert check.status_code == 200 and CountingKeys.verified - before == 1


def test_metrics_public_serves_metrics_without_a_key_and_warns(
    tmp_path: Path, pricer: Pricer, caplog: pytest.LogCaptureFixture
) -> None:
    KeyStore(tmp_path / "data").create("admin")
    with caplog.at_level(logging.WARNING), _server(tmp_path, pricer, metrics_public=True) as (url, _):
        assert httpx.get(url + "/metrics").status_code == 200
        assert httpx.get(url + "/v1/usage").status_code == 401  # only /metrics is opened
    assert any("--metrics-public" in r.getMessage() for r in caplog.records)


def test_insecure_no_auth_still_bounds_bodies_and_content_types(tmp_path: Path, pricer: Pricer) -> None:
    config = Settings(data_dir=tmp_path / "data", port=0, max_request_bytes=LIMIT)
    app = build_server_app(config, Store(config.store_config()), insecure_no_auth=True, pricer=pricer)
    with ServerThread(app) as server:
        assert httpx.get(server.url + "/metrics").status_code == 200
        assert httpx.post(server.url + "/v1/budgets", json=BUDGET).status_code == 201
        big = httpx.post(
            server.url + "/v1/budgets", content=b" " * (LIMIT + 1), headers={"Content-Type": "application/json"}
        )
        assert big.status_code == 413
        form = httpx.post(server.url + "/v1/budgets/check", content=b"{}", headers={"Content-Type": "text/plain"})
        assert form.status_code == 415


def test_keys_cli_creates_a_metrics_key_without_a_tenant(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_keys_command(parser.add_subparsers(dest="command"))
    out, err = io.StringIO(), io.StringIO()
    args = parser.parse_args(["keys", "--data-dir", str(tmp_path), "create", "--role", "metrics"])
    assert run_keys(args, out, err) == 0
    principal = KeyStore(tmp_path).verify(out.getvalue().strip())
    assert principal is not None and (principal.role, principal.tenant) == ("metrics", "")
    args = parser.parse_args(["keys", "--data-dir", str(tmp_path), "create", "--role", "metrics", "--tenant", "a"])
    assert run_keys(args, out, err) == 2
    assert "do not give --tenant" in err.getvalue()
