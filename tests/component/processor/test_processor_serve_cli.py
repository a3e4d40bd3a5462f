"""`costspan serve` flags and settings, the metrics series cap, and ingest worker processes."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from contextlib import AbstractContextManager
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client import CollectorRegistry, generate_latest

from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.serve._app import create_app
from costspan.processor.serve._metrics import StoreCollector
from costspan.processor.serve._serve_cli import add_serve_command, run_serve
from costspan.processor.serve._settings import Settings, load_settings
from costspan.processor.store._rollups import OVERFLOW
from costspan.processor.store._store import Store, StoreConfig

ServerFactory = Callable[..., AbstractContextManager[tuple[ServerThread, Store, CollectorRegistry]]]


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="costspan")
    add_serve_command(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["serve", *argv])


def test_serve_is_registered_with_its_flags() -> None:
    args = _parse("--port", "9999", "--data-dir", "/tmp/x", "--fsync", "never", "--ingest-workers", "2")
    assert (args.command, args.port, args.data_dir, args.fsync, args.ingest_workers) == (
        "serve",
        9999,
        Path("/tmp/x"),
        "never",
        2,
    )
    assert args.handler is run_serve


def test_a_bad_setting_stops_start_up_with_a_clear_message(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_serve(_parse("--port", "70000")) == 2
    assert "port" in capsys.readouterr().err
    monkeypatch.setenv("COSTSPAN_FSYNC", "sometimes")
    assert run_serve(_parse()) == 2
    assert "fsync" in capsys.readouterr().err
    monkeypatch.delenv("COSTSPAN_FSYNC")
    assert run_serve(_parse("--forward-endpoint", "collector:4318")) == 2
    assert "forward_endpoint" in capsys.readouterr().err
    assert run_serve(_parse("--config", "/nonexistent/costspan.toml")) == 2
    assert "does not exist" in capsys.readouterr().err


def test_flags_beat_environment_beat_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "costspan.toml"
    config.write_text('port = 5000\nmax_body_bytes = 2048\ndefault_tenant = "from-file"\n')
    monkeypatch.setenv("COSTSPAN_MAX_BODY_BYTES", "4096")
    settings = load_settings(config, port=6000)
    assert (settings.port, settings.max_body_bytes, settings.default_tenant) == (6000, 4096, "from-file")
    assert load_settings().port == 4318
    assert load_settings().data_dir == Path("./costspan-data")


def test_metric_label_sets_are_bounded_and_totals_stay_exact(tmp_path: Path) -> None:
    from tests.component.processor.test_processor_store import make_record

    store = Store(StoreConfig(data_dir=tmp_path, max_series=2))
    store.start()
    store.ingest([make_record(i, tenant=f"t{i}", cost="0.25") for i in range(5)])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    text = generate_latest(registry).decode()
    tenants = {
        line.split('tenant="')[1].split('"')[0] for line in text.splitlines() if line.startswith("costspan_cost")
    }
    assert tenants == {"t0", "t1", OVERFLOW}
    assert (
        registry.get_sample_value(
            "costspan_cost_usd_total",
            {
                "tenant": OVERFLOW,
                "service": OVERFLOW,
                "provider": OVERFLOW,
                "model": OVERFLOW,
                "operation": OVERFLOW,
            },
        )
        == 0.75
    )
    assert store.grand_total().cost == Decimal("1.25")
    store.close()


def test_ingest_worker_processes_store_the_same_records(tmp_path: Path) -> None:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    span = scope.spans.add(trace_id=b"\x07" * 16, span_id=b"\x08" * 8, start_time_unix_nano=1_764_000_000 * 10**9)
    for key, value in (("gen_ai.provider.name", "openai"), ("gen_ai.request.model", "gpt-4o")):
        span.attributes.add(key=key).value.string_value = value
    span.attributes.add(key="gen_ai.usage.input_tokens").value.int_value = 5000
    body = request.SerializeToString()
    results = []
    for workers in (0, 1):
        settings = Settings(data_dir=tmp_path / str(workers), ingest_workers=workers)
        store = Store(settings.store_config())
        app = create_app(settings, store, registry=CollectorRegistry(auto_describe=False))
        with ServerThread(app, timeout=60) as server:
            response = httpx.post(
                server.url + "/v1/traces", content=body, headers={"Content-Type": "application/x-protobuf"}
            )
            assert response.status_code == 200
            bad = httpx.post(
                server.url + "/v1/traces", content=b"\xff", headers={"Content-Type": "application/x-protobuf"}
            )
            assert bad.status_code == 400
            results.append(store.read_records())
    assert results[0] == results[1]
    assert results[0][0].cost_total is not None
