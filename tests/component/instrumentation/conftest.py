"""Fixtures for the instrumentation's component tests: the real OpenTelemetry SDK and a fake provider."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costspan.instrumentation import CostspanInstrumentor
from costspan.instrumentation._tokens import TokenCounter
from costspan.pricing import Pricer, default_pricer
from tests.support.fake_provider import FakeProvider
from tests.support.spans import Otel


@pytest.fixture(scope="session")
def pricer() -> Pricer:
    return default_pricer()


@pytest.fixture(scope="session")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> TokenCounter:
    counter = TokenCounter("o200k_base", directory=tmp_path_factory.mktemp("tiktoken"))
    counter.start_loading()
    return counter


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeProvider]:
    with FakeProvider() as server:
        yield server


@pytest.fixture
def fake(fake_server: FakeProvider) -> FakeProvider:
    fake_server.reset()
    fake_server.usage = type(fake_server.usage)()
    return fake_server


@pytest.fixture
def instrument_kwargs() -> dict[str, Any]:
    """Override in a test module to pass more options to instrument()."""
    return {}


@pytest.fixture
def otel(pricer: Pricer, tokens: TokenCounter, instrument_kwargs: dict[str, Any]) -> Iterator[Otel]:
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    inst = CostspanInstrumentor()
    kwargs = {
        "tracer_provider": tp,
        "meter_provider": mp,
        "pricer": pricer,
        "token_counter": tokens,
        **instrument_kwargs,
    }
    inst.instrument(**kwargs)
    try:
        yield Otel(exporter, tp, reader, mp, inst, kwargs)
    finally:
        inst.uninstrument()
        tp.shutdown()
        mp.shutdown()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _no_user_tiktoken_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
