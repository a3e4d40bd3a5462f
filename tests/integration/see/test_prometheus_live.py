"""A real Prometheus scrapes a real costspan fed with a workload: every dashboard and rule query works.

Every PromQL expression in every dashboard panel and every recording rule returns data; alerting
rules evaluate cleanly, and the ones that must fire (unpriced models) do while the ones that must not
(costspan down, cost spike, internal errors) return nothing.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from costspan.processor.api import KeyStore
from tests.support.workload import SpanWorkload, costspan_server

ROOT = Path(__file__).resolve().parents[3]
RULES = sorted((ROOT / "collector-config" / "prometheus" / "rules").glob("*.yml"))
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian package prometheus is not installed"),
]
# Expressions that depend on data a span workload cannot make without budgets configured.
SUBSTITUTIONS = {"$__range": "1h", "$__rate_interval": "1m", "$__interval": "15s", '"$tenant"': '".*"'}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, SpanWorkload]]:
    tmp = tmp_path_factory.mktemp("prom")
    keys = KeyStore(tmp / "data")
    admin = {"X-API-Key": keys.create("admin")[1]}
    ingest = {"X-API-Key": keys.create("ingest")[1]}
    (tmp / "costspan.key").write_text(keys.create("metrics")[1] + "\n")
    with costspan_server(tmp / "data", keys=keys) as (url, _store):
        # budgets: a soft one acme's spend crosses thresholds of, a hard one that refuses checks
        for budget in (
            {"id": "acme-daily", "scope": {"tenant": "acme"}, "period": "day", "limit": "0.05", "mode": "soft"},
            {"id": "nobody-daily", "scope": {"tenant": "nobody"}, "period": "day", "limit": "0", "mode": "hard"},
        ):
            assert httpx.post(f"{url}/v1/budgets", json=budget, headers=admin, timeout=10).status_code == 201
        for _ in range(3):
            check = {"tenant": "nobody", "provider": "openai", "model": "gpt-4o", "max_tokens": 10}
            assert httpx.post(f"{url}/v1/budgets/check", json=check, headers=ingest, timeout=10).status_code == 429
        assert httpx.get(f"{url}/metrics", timeout=10).status_code == 401  # Prometheus must send its key
        workload = SpanWorkload(url, headers=ingest)
        stop = threading.Event()
        feeder = threading.Thread(target=workload.run_until, args=(stop, 0.3), daemon=True)
        feeder.start()
        port = _free_port()
        host = url.removeprefix("http://")
        rule_dir = tmp / "rules"
        rule_dir.mkdir()
        for rule in RULES:
            shutil.copy(rule, rule_dir / rule.name)
        # the shipped scrape config, pointed at this server and its metrics key
        config = yaml.safe_load((ROOT / "collector-config" / "prometheus" / "prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(rule_dir / r.name) for r in RULES]
        (job,) = config["scrape_configs"]
        job["static_configs"][0]["targets"] = [host]
        job["authorization"]["credentials_file"] = str(tmp / "costspan.key")
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        log = (tmp / "prometheus.log").open("w")
        prom = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            prom_url = f"http://127.0.0.1:{port}"
            _wait_for(prom_url, "sum(rate(costspan_requests_total[5m])) > 0", timeout=60)
            _wait_for(prom_url, "costspan:cost_usd:rate5m > 0", timeout=30)
            yield prom_url, workload
        finally:
            stop.set()
            feeder.join(10)
            prom.terminate()
            prom.wait(20)
            log.close()
            workload.shutdown()


def _query(prom_url: str, expr: str) -> dict[str, Any]:
    response = httpx.get(f"{prom_url}/api/v1/query", params={"query": expr}, timeout=10)
    body: dict[str, Any] = response.json()
    assert response.status_code == 200 and body["status"] == "success", (expr, body)
    return body


def _wait_for(prom_url: str, expr: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if _query(prom_url, expr)["data"]["result"]:
                return
        except (httpx.HTTPError, AssertionError, ValueError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"no data for {expr} within {timeout}s")


def _panel_exprs() -> list[tuple[str, str]]:
    out = []
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel["targets"]:
                expr = target["expr"]
                for old, new in SUBSTITUTIONS.items():
                    expr = expr.replace(old, new)
                out.append((f"{path.stem}: {panel['title']}", expr))
    return out


def _rules() -> list[dict[str, Any]]:
    return [rule for path in RULES for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def test_every_dashboard_panel_returns_data(live: tuple[str, SpanWorkload]) -> None:
    prom_url, _ = live
    empty = []
    for name, expr in _panel_exprs():
        result = _query(prom_url, expr)["data"]["result"]
        values = [float(r["value"][1]) for r in result]
        if not values or all(math.isnan(v) for v in values):
            empty.append(f"{name}: {expr}")
    assert empty == [], "\n".join(empty)


def test_every_recording_rule_returns_data(live: tuple[str, SpanWorkload]) -> None:
    prom_url, _ = live
    records = [r for r in _rules() if "record" in r]
    assert len(records) == 5
    for rule in records:
        _wait_for(prom_url, rule["record"], timeout=20)


def test_alert_rules_fire_exactly_where_they_should(live: tuple[str, SpanWorkload]) -> None:
    prom_url, workload = live
    alerts = {r["alert"]: r["expr"] for r in _rules() if "alert" in r}
    must_fire = {"CostspanUnpricedModels"}
    must_not_fire = {"CostspanDown", "CostspanCostSpike", "CostspanInternalErrors", "CostspanIngestErrors"}
    assert must_fire | must_not_fire <= set(alerts)
    assert workload.unpriced_sent > 0
    for name in must_fire:
        _wait_for(prom_url, alerts[name], timeout=20)
    for name, expr in alerts.items():
        result = _query(prom_url, expr)["data"]["result"]  # well-formed: the query succeeds
        if name in must_not_fire:
            assert result == [], (name, result)
    # the metrics the budget alerts read exist, so those rules are not silently empty for a typo
    assert _query(prom_url, "costspan_budget_utilization_ratio")["data"]["result"]


def test_cost_in_prometheus_equals_the_priced_spans(live: tuple[str, SpanWorkload]) -> None:
    prom_url, workload = live
    random.seed(0)
    _wait_for(prom_url, "sum(costspan_cost_usd_total) > 0", timeout=10)
    got = float(_query(prom_url, "sum(costspan_cost_usd_total)")["data"]["result"][0]["value"][1])
    # read after the query: the feeder counts a call before exporting it, so everything Prometheus
    # scraped is in it (the scrape may be a few batches behind it, never ahead)
    expected = workload.expected_cost_usd()
    assert 0 < got <= float(expected) + 1e-9
