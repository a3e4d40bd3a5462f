"""Fixtures for the usage API: the processor's app + the usage API on 127.0.0.1, keys per role."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from prometheus_client import CollectorRegistry

from costspan.pricing import Pricer, default_pricer
from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.api import KeyStore, UsageIndex, include_usage_api
from costspan.processor.serve._app import create_app
from costspan.processor.serve._settings import Settings
from costspan.processor.store._store import Store


@dataclass
class Api:
    url: str
    store: Store
    index: UsageIndex
    keys: dict[str, str]  # admin, acme, globex, ingest, ingest_acme
    data_dir: Path

    def client(self, who: str | None, **headers: str) -> httpx.Client:
        h = dict(headers)
        if who is not None:
            h["X-API-Key"] = self.keys[who]
        return httpx.Client(base_url=self.url, headers=h, timeout=30)

    def get(self, who: str | None, path: str, **params: Any) -> httpx.Response:
        with self.client(who) as c:
            return c.get(path, params=params)

    def post_call(self, who: str, **body: Any) -> httpx.Response:
        with self.client(who) as c:
            return c.post("/api/usage/calls", json=body)

    def export_spans(self, key: str, calls: list[dict[str, Any]], service: str = "checkout") -> None:
        """Send spans through the real SDK's OTLP/HTTP exporter to /v1/traces."""
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        exporter = OTLPSpanExporter(endpoint=self.url + "/v1/traces", headers={"x-api-key": key})
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("test")
        for attrs in calls:
            with tracer.start_as_current_span("chat", attributes=attrs):
                pass
        provider.shutdown()


@pytest.fixture(scope="session")
def pricer() -> Pricer:
    return default_pricer()


@pytest.fixture
def api(tmp_path: Path, pricer: Pricer) -> Iterator[Api]:
    data = tmp_path / "data"
    settings = Settings(data_dir=data, port=0)
    keystore = KeyStore(data)
    keys = {
        "admin": keystore.create("admin")[1],
        "acme": keystore.create("tenant", "acme")[1],
        "globex": keystore.create("tenant", "globex")[1],
        "ingest": keystore.create("ingest")[1],
        "ingest_acme": keystore.create("ingest", "acme")[1],
    }
    store = Store(settings.store_config())
    app = create_app(settings, store, pricer=pricer, registry=CollectorRegistry(auto_describe=False))
    index = include_usage_api(app, store, settings, keys=keystore, pricer=pricer)
    with ServerThread(app) as server:
        yield Api(server.url, store, index, keys, data)
