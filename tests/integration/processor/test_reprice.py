"""`costspan reprice` and the catalog reload: calls priced with catalog A, repriced with catalog B.

A real server (the whole `costspan serve` app on 127.0.0.1, or the command in a subprocess) logs
calls priced with a user catalog file A; then COSTSPAN_PRICING_FILE names file B with other prices.
Every total a user can read (usage routes, the export, /metrics, budget spent) follows a reprice,
keeps it across a restart, and a second run changes nothing.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from costspan.pricing import Pricer
from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.api import KeyStore
from costspan.processor.budgets import BudgetBook
from costspan.processor.serve._cli import build_parser
from costspan.processor.serve._reprice_cli import data_dir_lock, run_reprice
from costspan.processor.serve._server import build_server_app
from costspan.processor.serve._settings import Settings
from costspan.processor.store._store import Store
from tests.integration.processor.test_processor_crash import ROOT, _free_port

MILLION = 1_000_000
#: Per million tokens: catalog A prices gpt-4o at 1 in / 1 out, catalog B at 3 in / 5 out.
PRICES = {"a": (Decimal(1), Decimal(1)), "b": (Decimal(3), Decimal(5))}


def _catalog(path: Path, name: str) -> Path:
    price_in, price_out = PRICES[name]
    model = {"id": "gpt-4o", "prices": [{"input": str(price_in), "output": str(price_out)}]}
    path.write_text(json.dumps({"providers": [{"id": "openai", "models": [model]}]}))
    return path


def _call_cost(name: str) -> Decimal:
    """What one call of 1M input and 1M output tokens costs with catalog ``name``."""
    price_in, price_out = PRICES[name]
    return price_in + price_out


@dataclass
class Server:
    url: str
    admin: str
    acme: str
    data_dir: Path

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-API-Key": key}, timeout=30)


def _keys(data_dir: Path) -> dict[str, str]:
    keys = KeyStore(data_dir)
    return {"admin": keys.create("admin")[1], "acme": keys.create("tenant", "acme")[1]}


@contextmanager
def _server(data_dir: Path, secrets: dict[str, str]) -> Iterator[Server]:
    """The whole server app (as `costspan serve` builds it) over ``data_dir``, priced by $COSTSPAN_PRICING_FILE."""
    settings = Settings(data_dir=data_dir, port=0)
    store = Store(settings.store_config())
    book = BudgetBook(data_dir=data_dir / "budgets")
    registry = CollectorRegistry(auto_describe=False)
    app = build_server_app(settings, store, keys=KeyStore(data_dir), pricer=Pricer(), book=book, registry=registry)
    with ServerThread(app) as thread:
        yield Server(thread.url, secrets["admin"], secrets["acme"], data_dir)


NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
#: (tenant, start): two recent calls, one of acme five days ago
CALLS = (("acme", NOW - timedelta(hours=2)), ("globex", NOW - timedelta(hours=2)), ("acme", NOW - timedelta(days=5)))


def _seed(server: Server) -> None:
    with server.client(server.admin) as c:
        budget = {"id": "acme-total", "scope": {"tenant": "acme"}, "period": "total", "limit": "100"}
        assert c.post("/v1/budgets", json=budget).status_code in (200, 201)
        for tenant, start in CALLS:
            call = {
                "provider": "openai",
                "model": "gpt-4o",
                "prompt_tokens": MILLION,
                "completion_tokens": MILLION,
                "tenant_id": tenant,
                "timestamp": start.isoformat(),
            }
            answer = c.post("/api/usage/calls", json=call)
            assert answer.status_code == 201, answer.text
            assert Decimal(answer.json()["cost_usd"]) == _call_cost("a")


def _totals(server: Server) -> dict[str, Any]:
    """Every place acme's (and globex's) cost shows, read as a user reads it."""
    out: dict[str, Any] = {}
    with server.client(server.acme) as c:
        out["by-provider"] = Decimal(c.get("/api/usage/costs/by-provider").json()["data"]["total_cost"])
        ops = c.get("/api/usage/operations/top", params={"days": 30}).json()["operations"]
        out["operations/top"] = sum((Decimal(o["cost"]) for o in ops), Decimal(0))
        rows = c.get("/api/usage/metrics/aggregates", params={"days": 30}).json()["data"]["aggregates"]
        out["aggregates"] = sum((Decimal(r["cost"]) for r in rows), Decimal(0))
        out["v2/costs"] = Decimal(c.get("/api/v2/costs").json()["data"]["total_cost_usd_exact"])
        out["dashboard"] = Decimal(c.get("/api/dashboard/summary").json()["total_cost_usd"])
        exported = c.get("/api/usage/export", params={"format": "json"}).json()
        out["export"] = sorted((Decimal(r["cost_usd"]), r["pricing_version"]) for r in exported)
    with server.client(server.admin) as c:
        metrics = {}
        for line in c.get("/metrics").text.splitlines():
            if line.startswith("costspan_cost_usd_total{"):
                tenant = line.split('tenant="')[1].split('"')[0]
                metrics[tenant] = Decimal(line.rsplit(" ", 1)[1])
        out["metrics"] = metrics
        (status,) = c.get("/v1/budgets/status").json()
        out["budget spent"] = Decimal(status["spent"])
    return out


def _expect(acme_b: int, globex_b: int, versions: tuple[str, str]) -> dict[str, Any]:
    """The totals when ``acme_b`` of acme's two calls and ``globex_b`` of globex's one are priced by B."""
    a, b = _call_cost("a"), _call_cost("b")
    acme = b * acme_b + a * (2 - acme_b)
    export = sorted([(b, versions[1])] * acme_b + [(a, versions[0])] * (2 - acme_b))
    same = {k: acme for k in ("by-provider", "operations/top", "aggregates", "v2/costs", "dashboard", "budget spent")}
    return {**same, "export": export, "metrics": {"acme": float(acme), "globex": float(b if globex_b else a)}}


def _same(found: dict[str, Any], expected: dict[str, Any]) -> None:
    found = {**found, "metrics": {k: float(v) for k, v in found["metrics"].items()}}
    assert found == expected


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    args = build_parser().parse_args(["reprice", *argv])
    return run_reprice(args, out, err), out.getvalue(), err.getvalue()


def _ledger_bytes(data_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((data_dir / "ledger").iterdir())}


@pytest.fixture
def catalogs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    a = _catalog(tmp_path / "a.json", "a")
    b = _catalog(tmp_path / "b.json", "b")
    monkeypatch.setenv("COSTSPAN_PRICING_FILE", str(a))
    return a, b


def test_reprice_through_the_server_changes_every_total_once_and_keeps_it(
    tmp_path: Path, catalogs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    secrets = _keys(data)
    with _server(data, secrets) as server:
        _seed(server)
        (version_a,) = {v for _, v in _totals(server)["export"]}
        _same(_totals(server), _expect(0, 0, (version_a, "")))
        monkeypatch.setenv("COSTSPAN_PRICING_FILE", str(catalogs[1]))

        # a dry run reads the catalog file itself, prints the change and writes nothing
        before = _ledger_bytes(data)
        code, out, _ = _cli("--data-dir", str(data), "--since", "30d", "--dry-run")
        assert code == 0
        assert "would change 3" in out
        assert f"{_call_cost('a') * 3:f}" in out.split("cost of the changed calls: ")[1].split(" -> ")[0]
        assert _ledger_bytes(data) == before
        _same(_totals(server), _expect(0, 0, (version_a, "")))

        # the server prices with the catalog it loaded until it is told to reload (admin only)
        with server.client(server.acme) as c:
            assert c.post("/v1/pricing/reload").status_code == 403
            assert c.post("/v1/reprice", json={"since": "30d"}).status_code == 403
        with server.client(server.admin) as c:
            reloaded = c.post("/v1/pricing/reload").json()
            assert reloaded["previous_version"] == version_a
            version_b = reloaded["catalog_version"]
            assert version_b != version_a
            assert c.post("/v1/reprice", json={"since": "yesterday"}).status_code == 400

        remote = ("--server", server.url, "--admin-key", server.admin)
        # --tenant and --since limit it: acme's recent call only
        code, out, _ = _cli(*remote, "--since", "2d", "--tenant", "acme", "--json")
        assert code == 0
        result = json.loads(out)
        assert (result["changed"], result["catalog_version"]) == (1, version_b)
        assert Decimal(result["new_total"]) - Decimal(result["old_total"]) == _call_cost("b") - _call_cost("a")
        _same(_totals(server), _expect(1, 0, (version_a, version_b)))
        # every tenant's recent calls: globex's now (acme's is at the new price already)
        assert json.loads(_cli(*remote, "--since", "2d", "--json")[1])["changed"] == 1
        _same(_totals(server), _expect(1, 1, (version_a, version_b)))
        # --until: the older call only
        until = (NOW - timedelta(days=2)).isoformat()
        assert json.loads(_cli(*remote, "--since", "30d", "--until", until, "--json")[1])["changed"] == 1
        _same(_totals(server), _expect(2, 1, (version_a, version_b)))
        # idempotent: the same catalog again changes nothing
        again = json.loads(_cli(*remote, "--since", "30d", "--json")[1])
        assert (again["calls"], again["changed"]) == (3, 0)
        _same(_totals(server), _expect(2, 1, (version_a, version_b)))

    # a restart (store and usage index snapshots, then the ledger's tail) gives the same totals
    with _server(data, secrets) as server:
        _same(_totals(server), _expect(2, 1, (version_a, version_b)))
    code, out, _ = _cli("--data-dir", str(data), "--since", "30d")  # offline, same catalog: nothing
    assert code == 0 and "changed 0" in out
    with _server(data, secrets) as server:
        _same(_totals(server), _expect(2, 1, (version_a, version_b)))


def test_offline_reprice_of_a_stopped_data_dir_is_seen_after_the_restart(
    tmp_path: Path, catalogs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    secrets = _keys(data)
    with _server(data, secrets) as server:
        _seed(server)
        (version_a,) = {v for _, v in _totals(server)["export"]}
    monkeypatch.setenv("COSTSPAN_PRICING_FILE", str(catalogs[1]))
    before = _ledger_bytes(data)
    files = sorted(p.relative_to(data) for p in data.rglob("*"))
    code, out, _ = _cli("--data-dir", str(data), "--since", "30d", "--dry-run")
    assert code == 0 and "would change 3" in out
    assert _ledger_bytes(data) == before
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == files

    # a running `costspan serve` holds the data dir: the offline command refuses it
    with data_dir_lock(data):
        code, _, err = _cli("--data-dir", str(data), "--since", "30d")
        assert code == 1 and "in use by a running costspan serve" in err
    assert _ledger_bytes(data) == before

    code, out, _ = _cli("--data-dir", str(data), "--since", "30d", "--tenant", "acme", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["changed"] == 2
    (acme,) = result["by_tenant"].items()
    assert (acme[0], Decimal(acme[1]["old"]), Decimal(acme[1]["new"])) == (
        "acme",
        _call_cost("a") * 2,
        _call_cost("b") * 2,
    )
    with _server(data, secrets) as server:
        version_b = Pricer().catalog_version
        _same(_totals(server), _expect(2, 0, (version_a, version_b)))


def test_an_unpriced_call_becomes_priced_and_a_bad_catalog_is_refused(
    tmp_path: Path, catalogs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    secrets = _keys(data)
    with _server(data, secrets) as server:
        with server.client(server.admin) as c:
            call = {"provider": "acme-ai", "model": "house-model", "prompt_tokens": MILLION, "completion_tokens": 0}
            assert c.post("/api/usage/calls", json={**call, "tenant_id": "acme"}).json()["cost_status"] == "unpriced"
            bad = tmp_path / "bad.json"
            bad.write_text('{"providers": [{"id": "acme-ai", "models": [{"id": "house-model"}]}]}')
            monkeypatch.setenv("COSTSPAN_PRICING_FILE", str(bad))
            refused = c.post("/v1/pricing/reload")
            assert refused.status_code == 400 and "catalog not reloaded" in refused.json()["detail"]
            house = {"id": "house-model", "prices": [{"input": "7", "output": "0"}]}
            (tmp_path / "house.json").write_text(json.dumps({"providers": [{"id": "acme-ai", "models": [house]}]}))
            monkeypatch.setenv("COSTSPAN_PRICING_FILE", str(tmp_path / "house.json"))
            assert c.post("/v1/pricing/reload").status_code == 200
            result = c.post("/v1/reprice", json={"since": "1d"}).json()
            assert (result["changed"], result["newly_priced"]) == (1, 1)
        with server.client(server.acme) as c:
            providers = c.get("/api/usage/costs/by-provider").json()["data"]
            assert Decimal(providers["total_cost"]) == Decimal(7)
            (row,) = c.get("/api/usage/export", params={"format": "json"}).json()
            assert (row["cost_status"], Decimal(row["cost_usd"])) == ("priced", Decimal(7))


def _serve(data_dir: Path, port: int, catalog: Path, admin: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("pricing", "instrumentation", "processor")),
        "COSTSPAN_PRICING_FILE": str(catalog),
        "COSTSPAN_ADMIN_KEY": admin,
    }
    command = [sys.executable, "-m", "costspan.processor", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    process = subprocess.Popen(
        [*command, "--log-level", "warning", "--ingest-workers", "1"], env=env, stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("server did not become ready")


def _otlp_cost(url: str, admin: str, tenant: str) -> Decimal:
    """Send one span of 1M input and 1M output tokens over OTLP (priced in the ingest worker); its cost."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "otlp", "costspan.tenant.id": tenant}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(url + "/v1/traces", headers={"x-api-key": admin})))
    attributes: dict[str, str | int] = {
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.operation.name": "chat",
        "gen_ai.usage.input_tokens": MILLION,
        "gen_ai.usage.output_tokens": MILLION,
    }
    with provider.get_tracer("test").start_as_current_span("chat", attributes=attributes):
        pass
    provider.shutdown()
    rows = httpx.get(
        url + "/api/usage/export", params={"format": "json", "tenant": tenant}, headers={"X-API-Key": admin}
    ).json()
    (row,) = rows
    return Decimal(row["cost_usd"])


def test_sighup_reloads_the_catalog_of_a_running_serve_and_its_ingest_workers(tmp_path: Path) -> None:
    admin = "admin-key-for-the-sighup-test"
    catalog = _catalog(tmp_path / "prices.json", "a")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    process = _serve(tmp_path / "data", port, catalog, admin)
    try:
        call = {"provider": "openai", "model": "gpt-4o", "prompt_tokens": MILLION, "completion_tokens": MILLION}
        headers = {"X-API-Key": admin}

        def api_cost(tenant: str) -> Decimal:
            answer = httpx.post(url + "/api/usage/calls", json={**call, "tenant_id": tenant}, headers=headers)
            return Decimal(answer.json()["cost_usd"])

        assert api_cost("before") == _call_cost("a")
        assert _otlp_cost(url, admin, "otlp-before") == _call_cost("a")
        # while it runs, the data dir is the server's: an offline reprice is refused
        code, _, err = _cli("--data-dir", str(tmp_path / "data"), "--since", "1d")
        assert code == 1 and "--server" in err

        _catalog(catalog, "b")
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while api_cost(f"after-{time.monotonic_ns()}") != _call_cost("b"):
            assert time.monotonic() < deadline, "SIGHUP did not reload the catalog"
            time.sleep(0.1)
        assert process.poll() is None  # SIGHUP reloads; it does not stop the server
        assert _otlp_cost(url, admin, "otlp-after") == _call_cost("b")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
