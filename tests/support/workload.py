"""A span workload for end-to-end tests: real OpenTelemetry SDK spans exported over OTLP/HTTP.

``costspan_server(data_dir)`` runs the processor in-process on 127.0.0.1 (real sockets);
``SpanWorkload(url)`` sends GenAI spans for several tenants, services, providers and models — some
streamed, some failing, one with a model no catalog prices — and knows what they should cost.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from costspan.pricing import Usage, default_pricer
from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.api import KeyStore
from costspan.processor.serve._server import build_server_app
from costspan.processor.serve._settings import Settings
from costspan.processor.store._store import Store

__all__ = ["CALLS", "SpanWorkload", "costspan_server"]

# service, tenant, provider, model, input, cache read, output, streamed, fails
CALLS: tuple[tuple[str, str, str, str, int, int, int, bool, bool], ...] = (
    ("support-bot", "acme", "openai", "gpt-4o-2024-08-06", 1800, 1024, 350, True, False),
    ("support-bot", "acme", "anthropic", "claude-sonnet-4-5-20250929", 6500, 5000, 700, True, False),
    ("code-review", "globex", "openai", "o3", 9000, 2048, 4000, False, False),
    ("code-review", "globex", "openai", "gpt-4o-mini", 1200, 0, 200, False, True),
    ("search", "initech", "gcp.gemini", "gemini-2.5-pro", 25000, 0, 2000, True, False),
    ("chat", "initech", "groq", "llama-3.3-70b-versatile", 1500, 0, 400, False, False),
    ("chat", "initech", "acme-internal", "house-model-9000", 800, 0, 100, False, False),
)


@contextmanager
def costspan_server(
    data_dir: Path, *, keys: KeyStore | None = None, **overrides: object
) -> Iterator[tuple[str, Store]]:
    """The whole server (receiver, budgets, usage API) on 127.0.0.1: with ``keys``, or without keys
    (``--insecure-no-auth``, loopback only)."""
    settings = Settings(data_dir=data_dir, port=0, snapshot_interval_seconds=3600, **overrides)  # type: ignore[arg-type]
    store = Store(settings.store_config())
    app = build_server_app(settings, store, keys=keys, insecure_no_auth=keys is None)
    with ServerThread(app) as server:
        yield server.url, store


class SpanWorkload:
    """Sends batches of LLM spans to ``url``; thread-safe counters of what was sent."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self._providers = {}
        for service in {c[0] for c in CALLS}:
            provider = TracerProvider(resource=Resource.create({"service.name": service}))
            exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", timeout=10, headers=headers)
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            self._providers[service] = provider
        self._lock = threading.Lock()
        self._expected = Decimal(0)
        self.sent = 0
        self.unpriced_sent = 0

    def send_one_of_each(self) -> None:
        for service, tenant, provider, model, inp, cached, out, streamed, fails in CALLS:
            tracer = self._providers[service].get_tracer("workload")
            start = time.time_ns()
            span = tracer.start_span(f"chat {model}", kind=SpanKind.CLIENT, start_time=start)
            span.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": provider,
                    "gen_ai.request.model": model,
                    "gen_ai.response.model": model,
                    "gen_ai.request.stream": streamed,
                    "gen_ai.usage.input_tokens": inp,
                    "gen_ai.usage.cache_read.input_tokens": cached,
                    "gen_ai.usage.output_tokens": out,
                    "costspan.tenant.id": tenant,
                    "costspan.workflow.id": f"wf-{random.randint(1, 5)}",
                    "costspan.user.id": f"user-{random.randint(1, 9)}",
                    "server.address": "127.0.0.1",
                }
            )
            if streamed:
                span.set_attribute("gen_ai.response.time_to_first_chunk", round(random.uniform(0.05, 0.4), 3))
            if fails:
                span.set_attribute("error.type", "500")
                span.set_status(Status(StatusCode.ERROR))
            duration_ns = int(random.uniform(0.2, 3.0) * 1e9)
            price = default_pricer().price_call(
                model,
                Usage(input_tokens=inp, cache_read_tokens=cached, output_tokens=out),
                provider=provider,
                at=start / 1e9,
            )
            # counted before the span is exported (and so stored): what the server holds is never ahead
            with self._lock:
                self.sent += 1
                if price.total is None:
                    self.unpriced_sent += 1
                else:
                    self._expected += price.total
            span.end(end_time=start + duration_ns)

    def run_until(self, stop: threading.Event, interval: float) -> None:
        while not stop.is_set():
            self.send_one_of_each()
            stop.wait(interval)

    def expected_cost_usd(self) -> Decimal:
        with self._lock:
            return self._expected

    def shutdown(self) -> None:
        for provider in self._providers.values():
            provider.shutdown()
