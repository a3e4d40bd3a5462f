"""The shipped Prometheus, Collector and Grafana files are well-formed and consistent."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
PROM = ROOT / "collector-config" / "prometheus"
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian package prometheus) is not installed"
)


@needs_promtool
def test_promtool_accepts_the_config_and_rules(tmp_path: Path) -> None:
    # installed as the comment says: the rules and the metrics key next to prometheus.yml
    shutil.copytree(PROM, tmp_path / "prometheus")
    (tmp_path / "prometheus" / "costspan.key").write_text("csk_0123456789ab_secret\n")
    config = subprocess.run(
        ["promtool", "check", "config", str(tmp_path / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert config.returncode == 0, config.stdout + config.stderr
    rules = subprocess.run(
        ["promtool", "check", "rules", *map(str, sorted((PROM / "rules").glob("*.yml")))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 8 rules found" in rules.stdout and "SUCCESS: 5 rules found" in rules.stdout


def test_dashboards_are_importable() -> None:
    assert {p.stem for p in DASHBOARDS} == {
        "costspan-overview",
        "costspan-tenant",
        "costspan-budgets",
        "costspan-performance",
    }
    for path in DASHBOARDS:
        board: dict[str, Any] = json.loads(path.read_text())
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        assert board["uid"] == path.stem and board["panels"]
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}"
            assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])
            for target in panel["targets"]:
                used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__range", "__rate_interval", "__interval"}
                assert used <= set(variables), (path.name, panel["title"], used)


def test_dashboards_are_generated_from_the_script(tmp_path: Path) -> None:
    from tools import build_dashboards

    original = build_dashboards.OUT
    build_dashboards.OUT = tmp_path
    try:
        build_dashboards.main()
    finally:
        build_dashboards.OUT = original
    for path in DASHBOARDS:
        assert json.loads((tmp_path / path.name).read_text()) == json.loads(path.read_text()), path.name


def test_load_balancing_routes_by_tenant() -> None:
    text = (ROOT / "collector-config" / "otelcol-load-balancing.yaml").read_text()
    assert "routing_key: attributes" in text and 'routing_attributes: ["costspan.tenant.id"]' in text
    config = yaml.safe_load(text)
    exporter = config["exporters"]["load_balancing"]  # the current name (loadbalancing is a deprecated alias)
    assert config["service"]["pipelines"]["traces"]["exporters"] == ["load_balancing"]
    assert exporter["protocol"]["otlp"]["headers"] == {"x-api-key": "${env:COSTSPAN_INGEST_KEY}"}
    assert all(host.endswith(":4317") for host in exporter["resolver"]["static"]["hostnames"])  # OTLP/gRPC
