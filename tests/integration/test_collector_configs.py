"""The shipped Collector configs hold together: every component a pipeline names is defined, the
current component names are used, the load_balancing exporter routes by tenant to the shards'
OTLP/gRPC port; and, with an ``otelcol``/``otelcol-contrib`` binary on PATH, the Collector itself
validates them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "collector-config").glob("otelcol-*.yaml"))
SECTIONS = ("receivers", "processors", "exporters")
#: Renamed components: the deprecated alias → the current name.
DEPRECATED = {"loadbalancing": "load_balancing", "otlphttp": "otlp_http", "otlp": "otlp_grpc"}
COLLECTOR = shutil.which("otelcol-contrib") or shutil.which("otelcol")


def _load(path: Path) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return config


def _type(component_id: str) -> str:
    return component_id.split("/", 1)[0]


def test_there_are_configs() -> None:
    assert {p.name for p in CONFIGS} >= {"otelcol-load-balancing.yaml", "otelcol-apps-to-costspan.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_pipelines_name_only_defined_components(path: Path) -> None:
    config = _load(path)
    pipelines = config["service"]["pipelines"]
    assert pipelines
    used: dict[str, set[str]] = {section: set() for section in SECTIONS}
    for name, pipeline in pipelines.items():
        assert _type(name) in {"traces", "metrics", "logs"}, name
        assert pipeline["receivers"] and pipeline["exporters"], name
        for section in SECTIONS:
            for component in pipeline.get(section, []):
                assert component in (config.get(section) or {}), f"{name} uses undefined {section[:-1]} {component}"
                used[section].add(component)
    for section in SECTIONS:  # nothing defined and left unused
        assert set(config.get(section) or {}) == used[section], section


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_exporters_use_the_current_names(path: Path) -> None:
    for component in _load(path)["exporters"]:
        assert _type(component) not in DEPRECATED, f"{component}: use {DEPRECATED[_type(component)]}"


def test_load_balancing_routes_tenants_to_the_shards_grpc_port() -> None:
    config = _load(ROOT / "collector-config" / "otelcol-load-balancing.yaml")
    exporter = config["exporters"]["load_balancing"]
    assert exporter["routing_key"] == "attributes"
    assert exporter["routing_attributes"] == ["costspan.tenant.id"]
    assert set(exporter["protocol"]) == {"otlp"}  # the only protocol it speaks: OTLP/gRPC
    assert exporter["protocol"]["otlp"]["headers"] == {"x-api-key": "${env:COSTSPAN_INGEST_KEY}"}
    assert "endpoint" not in exporter["protocol"]["otlp"]  # the resolver names the endpoints
    hosts = exporter["resolver"]["static"]["hostnames"]
    assert len(hosts) == len(set(hosts)) >= 2
    assert all(host.rsplit(":", 1)[1] == "4317" for host in hosts)
    assert config["service"]["pipelines"]["traces"]["exporters"] == ["load_balancing"]


@pytest.mark.skipif(COLLECTOR is None, reason="no otelcol or otelcol-contrib binary on PATH")
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_the_collector_validates_the_config(path: Path) -> None:
    assert COLLECTOR is not None
    env = {**os.environ, "COSTSPAN_INGEST_KEY": "csk_0123456789ab_secret"}
    done = subprocess.run(
        [COLLECTOR, "validate", f"--config={path}"], capture_output=True, text=True, env=env, check=False, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
