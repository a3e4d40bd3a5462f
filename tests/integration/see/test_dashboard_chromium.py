"""The built-in /dashboard page in headless Chromium shows the same numbers as the API, per key."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.api._keys import KeyStore
from costspan.processor.serve._server import build_server_app
from costspan.processor.serve._settings import Settings
from costspan.processor.store._store import Store
from tests.support.workload import SpanWorkload

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None, reason="Debian package chromium is not installed")]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    data = tmp_path_factory.mktemp("dash")
    keys = KeyStore(data)
    secrets = {"admin": keys.create("admin")[1], "acme": keys.create("tenant", tenant="acme")[1]}
    settings = Settings(data_dir=data, port=0, snapshot_interval_seconds=3600)
    store = Store(settings.store_config())
    app = build_server_app(settings, store, keys=keys)
    with ServerThread(app) as server:
        headers = {"X-API-Key": secrets["admin"]}
        budget = {"id": "acme-daily", "scope": {"tenant": "acme"}, "period": "day", "limit": "1"}
        assert httpx.post(f"{server.url}/v1/budgets", json=budget, headers=headers, timeout=10).status_code == 201
        workload = SpanWorkload(server.url, headers={"x-api-key": secrets["admin"]})
        for _ in range(4):
            workload.send_one_of_each()
        workload.shutdown()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            summary = _summary(server.url, secrets["admin"])
            if summary["total_calls"] >= workload.sent:
                break
            time.sleep(0.3)
        yield server.url, secrets


def _summary(url: str, key: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/api/dashboard/summary", params={"days": 14}, headers={"X-API-Key": key}, timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _chromium(*args: str) -> str:
    assert CHROMIUM is not None
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=15000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _cells(dom: str, table: str) -> list[list[str]]:
    body = re.search(rf'data-test="{table}".*?<tbody>(.*?)</tbody>', dom, re.S)
    assert body is not None, table
    rows = re.findall(r"<tr>(.*?)</tr>", body.group(1), re.S)
    return [
        [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)]
        for r in rows
    ]


def _text(dom: str, name: str) -> str:
    found = re.search(rf'data-test="{name}"[^>]*>([^<]*)<', dom)
    assert found is not None, name
    return html.unescape(found.group(1)).strip()


@pytest.mark.parametrize("who", ["admin", "acme"])
def test_page_shows_what_the_api_says(site: tuple[str, dict[str, str]], who: str, tmp_path: Path) -> None:
    url, secrets = site
    key = secrets[who]
    api = _summary(url, key)
    dom = _chromium("--dump-dom", f"{url}/dashboard#key={key}")
    assert 'data-ready="true"' in dom, dom[-3000:]
    assert _text(dom, "total-cost") == api["total_cost_usd"]
    assert _text(dom, "total-calls") == str(api["total_calls"])
    assert _text(dom, "unpriced-calls") == str(api["unpriced_calls"])
    assert _cells(dom, "by-tenant") == [[r["tenant"], str(r["calls"]), r["cost_usd"]] for r in api["by_tenant"]]
    assert _cells(dom, "by-model") == [
        [f"{r['provider']}/{r['model']}", str(r["calls"]), r["cost_usd"] or "–"] for r in api["by_model"]
    ]
    assert [row[0] for row in _cells(dom, "budgets")] == [b["id"] for b in api["budgets"]]
    assert _cells(dom, "top-users") == [[r["user"], r["cost_usd"]] for r in api["top_users"]]
    chart = re.search(r'<svg id="chart".*?</svg>', dom, re.S)
    assert chart is not None
    bars = re.findall(r'<rect data-day="([^"]+)" data-cost="([^"]+)"', chart.group(0))
    assert bars == [(d["date"], d["cost"]) for d in api["daily"]] and len(bars) == 14
    if who == "acme":  # a tenant key sees its own tenant only
        assert [r["tenant"] for r in api["by_tenant"]] == ["acme"]
        assert "globex" not in dom and "initech" not in dom
    else:
        assert {r["tenant"] for r in api["by_tenant"]} == {"acme", "globex", "initech"}
        assert api["unpriced_models"] and "house-model-9000" in dom
        (house,) = [r for r in api["by_model"] if r["model"] == "house-model-9000"]
        assert house["cost_usd"] is None
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"dashboard-{who}.png"
    _chromium(f"--screenshot={shot}", "--window-size=1400,1500", f"{url}/dashboard#key={key}")
    assert shot.stat().st_size > 10_000


def test_page_without_a_valid_key_says_so(site: tuple[str, dict[str, str]]) -> None:
    url, _ = site
    dom = _chromium("--dump-dom", f"{url}/dashboard#key=not-a-key")
    assert 'data-ready="error"' in dom
    assert "invalid or revoked API key" in dom
