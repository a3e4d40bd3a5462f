"""What one ``instrument()`` call sets up: tracer, meters, pricer, router, hooks and error accounting."""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import _logs, metrics, trace

from costspan.instrumentation import attributes as attr
from costspan.instrumentation._hooks import PreSendHook
from costspan.instrumentation._providers import Router
from costspan.instrumentation._tokens import TokenCounter
from costspan.pricing import Pricer, default_pricer

#: How long an exiting app waits, at most, for the tokenizer and price catalog to finish loading.
WARM_UP_EXIT_WAIT_S = 5.0

__all__ = ["DURATION_BUCKETS", "TOKEN_BUCKETS", "Runtime", "Settings"]

logger = logging.getLogger(__name__)

SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"
#: GenAI semconv advisory bucket boundaries.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)


@dataclass(frozen=True, slots=True)
class Settings:
    """Options of :meth:`CostspanInstrumentor.instrument` (also read from the environment)."""

    #: Ask OpenAI-style streams for their usage chunk and hide it from the application.
    inject_stream_usage: bool = True
    #: base URL → provider name, for gateways and self-hosted OpenAI-compatible servers.
    base_urls: Mapping[str, str] = field(default_factory=dict)
    #: Azure deployment name → model, when responses do not name the model.
    azure_deployments: Mapping[str, str] = field(default_factory=dict)
    #: tiktoken encoding used for estimates.
    encoding: str = "o200k_base"
    #: Message content: NO_CONTENT (default), SPAN_ONLY, EVENT_ONLY or SPAN_AND_EVENT (see ``_content``).
    capture_content: str = "NO_CONTENT"

    @property
    def content_on_span(self) -> bool:
        return self.capture_content in ("SPAN_ONLY", "SPAN_AND_EVENT")

    @property
    def content_in_event(self) -> bool:
        return self.capture_content in ("EVENT_ONLY", "SPAN_AND_EVENT")


class Runtime:
    """Shared, thread-safe state of the instrumentation while it is active."""

    def __init__(
        self,
        settings: Settings,
        tracer_provider: trace.TracerProvider | None,
        meter_provider: metrics.MeterProvider | None,
        version: str,
        pricer: Pricer | None = None,
        tokens: TokenCounter | None = None,
        logger_provider: _logs.LoggerProvider | None = None,
    ) -> None:
        self.settings = settings
        #: Emits the gen_ai.client.inference.operation.details event (only when content goes to events).
        self.event_logger: _logs.Logger | None = None
        if settings.content_in_event:
            self.event_logger = _logs.get_logger(
                "costspan.instrumentation", version, logger_provider=logger_provider, schema_url=SCHEMA_URL
            )
        self.tracer = trace.get_tracer(
            "costspan.instrumentation", version, tracer_provider=tracer_provider, schema_url=SCHEMA_URL
        )
        meter = metrics.get_meter(
            "costspan.instrumentation", version, meter_provider=meter_provider, schema_url=SCHEMA_URL
        )
        self.token_usage = meter.create_histogram(
            attr.GEN_AI_CLIENT_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=list(map(float, TOKEN_BUCKETS)),
        )
        self.duration = meter.create_histogram(
            attr.GEN_AI_CLIENT_OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self.time_to_first_chunk = meter.create_histogram(
            attr.GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK,
            unit="s",
            description="Time to receive the first chunk of a streamed response.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self._internal_errors = meter.create_counter(
            attr.INTERNAL_ERRORS_METRIC,
            unit="{error}",
            description="Internal errors of costspan's instrumentation (the call went on unenriched).",
        )
        self.router = Router(settings.base_urls, settings.azure_deployments)
        self.hooks: list[PreSendHook] = []
        self.tokens = tokens if tokens is not None else TokenCounter(settings.encoding)
        self._pricer = pricer
        self._pricer_lock = threading.Lock()
        self._logged: set[str] = set()
        self._errors_lock = threading.Lock()
        self.error_counts: dict[str, int] = {}
        #: The GenAI metric attribute sets by (operation, provider, server, port, models, error), built once
        #: (see ``Call._record_metrics``); bounded there.
        self.metric_attributes: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {}

    def warm_up(self) -> None:
        """Load the tokenizer and the price catalog off the request path."""
        self.tokens.start_loading()
        pricer = threading.Thread(target=self._warm_pricer, name="costspan-pricer", daemon=True)
        pricer.start()
        atexit.register(self.finish_warm_up, pricer)

    def finish_warm_up(self, pricer: threading.Thread, timeout: float = WARM_UP_EXIT_WAIT_S) -> None:
        """At exit, let the loading threads end first (a second or so; bounded): a daemon thread still in
        tiktoken's or pydantic-core's native code while the interpreter finalizes can crash the process
        (SIGSEGV or SIGABRT in an app that exits right after it starts)."""
        deadline = time.monotonic() + timeout
        self.tokens.loaded.wait(timeout)
        pricer.join(max(0.0, deadline - time.monotonic()))

    def _warm_pricer(self) -> None:
        try:
            self.pricer()
        except Exception as exc:
            self.report("pricer", exc)

    def pricer(self) -> Pricer:
        p = self._pricer
        if p is not None:
            return p
        with self._pricer_lock:
            if self._pricer is None:
                self._pricer = default_pricer()
            return self._pricer

    def report(self, component: str, exc: BaseException) -> None:
        """An internal error: log it once per component, count it every time. Never raises."""
        try:
            with self._errors_lock:
                self.error_counts[component] = self.error_counts.get(component, 0) + 1
                first = component not in self._logged
                self._logged.add(component)
            if first:
                logger.warning(
                    "costspan instrumentation internal error in %s (%s); the call goes on unenriched. "
                    "Further errors here are counted in %s, not logged.",
                    component,
                    type(exc).__name__,
                    attr.INTERNAL_ERRORS_METRIC,
                    exc_info=logger.isEnabledFor(logging.DEBUG),
                )
            self._internal_errors.add(1, {attr.INTERNAL_ERROR_COMPONENT: component})
        except Exception:  # pragma: no cover - the last line of defence
            pass
