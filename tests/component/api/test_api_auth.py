"""Keys, roles and start-up rules of the usage API."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from costspan.pricing import Pricer
from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.api import KeyStore, add_keys_command, check_startup, include_usage_api, run_keys
from costspan.processor.api._keys import KEYS_FILE
from costspan.processor.serve._app import create_app
from costspan.processor.serve._settings import Settings
from costspan.processor.store._store import Store
from tests.component.api.conftest import Api

CALL = {"provider": "openai", "model": "gpt-4o", "prompt_tokens": 1000, "completion_tokens": 100}


def test_keys_are_stored_hashed_and_verified(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    key, secret = store.create("tenant", "acme", "ci")
    text = (tmp_path / KEYS_FILE).read_text()
    assert secret.split("_", 2)[2] not in text and secret not in text
    assert key.digest in text
    assert (tmp_path / KEYS_FILE).stat().st_mode & 0o077 == 0
    principal = store.verify(secret)
    assert principal is not None and (principal.role, principal.tenant) == ("tenant", "acme")
    assert store.verify(secret + "x") is None
    assert store.verify("csk_" + key.id + "_wrong") is None
    assert store.revoke(key.id) is True
    assert store.verify(secret) is None
    assert store.revoke(key.id) is False


@pytest.mark.parametrize(
    ("role", "tenant", "message"),
    [("tenant", "", "needs --tenant"), ("admin", "acme", "do not give --tenant"), ("root", "", "unknown role")],
)
def test_bad_key_requests_are_refused(tmp_path: Path, role: str, tenant: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KeyStore(tmp_path).create(role, tenant)


def test_keys_cli_create_list_revoke(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_keys_command(parser.add_subparsers(dest="command"))
    out, err = io.StringIO(), io.StringIO()
    args = parser.parse_args(["keys", "--data-dir", str(tmp_path), "create", "--role", "tenant", "--tenant", "acme"])
    assert run_keys(args, out, err) == 0
    secret = out.getvalue().strip()
    assert secret.startswith("csk_") and "not shown again" in err.getvalue()
    key_id = secret.split("_")[1]
    out = io.StringIO()
    assert run_keys(parser.parse_args(["keys", "--data-dir", str(tmp_path), "list"]), out, err) == 0
    listing = out.getvalue()
    assert key_id in listing and "acme" in listing and secret.split("_", 2)[2] not in listing
    out = io.StringIO()
    assert run_keys(parser.parse_args(["keys", "--data-dir", str(tmp_path), "revoke", key_id]), out, err) == 0
    assert run_keys(parser.parse_args(["keys", "--data-dir", str(tmp_path), "revoke", key_id]), out, err) == 1
    assert KeyStore(tmp_path).verify(secret) is None
    bad = parser.parse_args(["keys", "--data-dir", str(tmp_path), "create", "--role", "tenant"])
    assert run_keys(bad, io.StringIO(), err) == 2


def test_startup_needs_a_key_or_loopback_insecure_mode(tmp_path: Path) -> None:
    empty = KeyStore(tmp_path)
    with pytest.raises(ValueError, match="no API key exists"):
        check_startup(empty, host="0.0.0.0", insecure_no_auth=False)
    with pytest.raises(ValueError, match="only allowed on a loopback"):
        check_startup(empty, host="0.0.0.0", insecure_no_auth=True)
    check_startup(empty, host="127.0.0.1", insecure_no_auth=True)
    check_startup(empty, host="::1", insecure_no_auth=True)
    check_startup(KeyStore(tmp_path, admin_key="a" * 32), host="0.0.0.0", insecure_no_auth=False)
    with pytest.raises(ValueError, match="at least 16"):
        KeyStore(tmp_path, admin_key="short")


def test_env_admin_key_bootstraps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSTSPAN_ADMIN_KEY", "bootstrap-admin-key-123456")
    store = KeyStore.from_env(tmp_path)
    principal = store.verify("bootstrap-admin-key-123456")
    assert principal is not None and principal.role == "admin"
    assert not (tmp_path / KEYS_FILE).exists()


def test_requests_without_a_valid_key_are_401(api: Api) -> None:
    assert api.get(None, "/v1/usage", scope="tenant", tenant_id="acme").status_code == 401
    with httpx.Client(base_url=api.url) as c:
        r = c.get("/v1/usage", headers={"X-API-Key": "csk_nope_nope"})
        assert r.status_code == 401
        assert r.json()["detail"] == "invalid or revoked API key"
        ok = c.get("/v1/usage", params={"scope": "summary"}, headers={"Authorization": "Bearer " + api.keys["acme"]})
        assert ok.status_code == 200
    assert api.get(None, "/health").status_code == 200


def test_the_key_is_checked_before_the_query_is_validated(api: Api) -> None:
    """No key: 401 whatever the query says (nothing about the parameters leaks before the key is checked)."""
    assert api.get(None, "/api/usage/metrics/aggregates", days=0).status_code == 401
    assert api.get(None, "/api/analytics/top-users", days="many", currency="XXX").status_code == 401
    assert api.get("acme", "/api/usage/metrics/aggregates", days=0).status_code == 422


def test_roles(api: Api) -> None:
    assert api.post_call("acme", tenant_id="acme", **CALL).status_code == 403  # tenant keys only read
    assert api.get("ingest", "/v1/usage", scope="summary").status_code == 403  # ingest keys only send
    assert api.post_call("ingest", tenant_id="acme", **CALL).status_code == 201
    assert api.post_call("ingest_acme", tenant_id="globex", **CALL).status_code == 403
    r = api.post_call("ingest_acme", **CALL)
    assert r.status_code == 201 and r.json()["tenant_id"] == "acme"
    assert api.get("acme", "/v1/usage", scope="global").status_code == 403
    assert api.get("admin", "/v1/usage", scope="global").status_code == 200


def test_x_tenant_id_must_match_the_key(api: Api) -> None:
    with api.client("acme", **{"X-Tenant-ID": "globex"}) as c:
        r = c.get("/v1/usage", params={"scope": "tenant"})
        assert r.status_code == 403
        assert "X-Tenant-ID" in r.json()["detail"]
    with api.client("acme", **{"X-Tenant-ID": "acme"}) as c:
        assert c.get("/v1/usage", params={"scope": "tenant"}).status_code == 200
    with api.client("admin", **{"X-Tenant-ID": "acme"}) as c:
        r = c.get("/v1/usage", params={"scope": "tenant"})
        assert r.status_code == 200 and r.json()["tenant_id"] == "acme"


def test_otlp_needs_an_ingest_or_admin_key(api: Api) -> None:
    body = b""
    headers = {"Content-Type": "application/x-protobuf"}
    assert httpx.post(api.url + "/v1/traces", content=body, headers=headers).status_code == 401
    assert (
        httpx.post(api.url + "/v1/traces", content=body, headers={**headers, "X-API-Key": api.keys["acme"]}).status_code
        == 403
    )
    ok = httpx.post(api.url + "/v1/traces", content=body, headers={**headers, "X-API-Key": api.keys["ingest"]})
    assert ok.status_code == 200


def test_revoked_key_is_refused_while_serving(api: Api) -> None:
    store = KeyStore(api.data_dir)
    key_id = api.keys["globex"].split("_")[1]
    assert api.get("globex", "/v1/usage", scope="tenant").status_code == 200
    assert store.revoke(key_id)
    assert api.get("globex", "/v1/usage", scope="tenant").status_code == 401


def test_include_usage_api_refuses_to_serve_without_keys(tmp_path: Path, pricer: Pricer) -> None:
    settings = Settings(data_dir=tmp_path / "data", port=0, host="0.0.0.0")
    store = Store(settings.store_config())
    app = create_app(settings, store, pricer=pricer, registry=CollectorRegistry(auto_describe=False))
    with pytest.raises(ValueError, match="no API key exists"):
        include_usage_api(app, store, settings, keys=KeyStore(tmp_path), pricer=pricer)
    with pytest.raises(ValueError, match="loopback"):
        include_usage_api(app, store, settings, keys=KeyStore(tmp_path), pricer=pricer, insecure_no_auth=True)


def test_insecure_no_auth_on_loopback_serves_everyone_as_admin(tmp_path: Path, pricer: Pricer) -> None:
    settings = Settings(data_dir=tmp_path / "data", port=0)
    store = Store(settings.store_config())
    app = create_app(settings, store, pricer=pricer, registry=CollectorRegistry(auto_describe=False))
    include_usage_api(app, store, settings, keys=KeyStore(tmp_path), pricer=pricer, insecure_no_auth=True)
    with ServerThread(app) as server:
        assert httpx.get(server.url + "/v1/usage", params={"scope": "global"}).status_code == 200
        r = httpx.post(server.url + "/api/usage/calls", json={**CALL, "tenant_id": "acme"})
        assert r.status_code == 201
