"""In-process mode: a SpanProcessor an app adds to its own TracerProvider.

Same normalization, pricing, attribution and store as `costspan serve`, inside the app. ``on_end``
runs on the thread that ends the span: it never blocks on disk and never raises into the host —
records go to the store's bounded queue; a full queue or an internal error is logged once and
counted (``Store.count``), and the app carries on. :func:`costspan.processor.track_in_process` adds it
(with the store, budgets and instrumentation) in one call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode

from costspan.processor.ingest._normalize import WANTED_KEYS, AttrValue, Normalizer, SpanView
from costspan.processor.store._batch import prepare
from costspan.processor.store._store import IngestResult, QueueFullError, Store
from costspan.processor.store._validate import REJECTED_PREFIX, screen

__all__ = ["CostspanSpanProcessor", "span_view"]

logger = logging.getLogger(__name__)


def _value(value: Any) -> AttrValue | None:
    if isinstance(value, str | bool | int | float):
        return value
    return None


def _attrs(source: Mapping[str, Any] | None, wanted: frozenset[str] | None) -> dict[str, AttrValue]:
    out: dict[str, AttrValue] = {}
    if not source:
        return out
    for key, value in source.items():
        if wanted is None or key in wanted:
            converted = _value(value)
            if converted is not None:
                out[key] = converted
    return out


def span_view(span: ReadableSpan, resource: Mapping[str, AttrValue] | None = None) -> SpanView | None:
    """The normalizer's view of an SDK span (``None`` without a valid context).

    ``resource`` is the span's resource attributes when the caller already converted them.
    """
    context = span.context
    if context is None or not context.is_valid:
        return None
    parent = span.parent
    return SpanView(
        trace_id=f"{context.trace_id:032x}",
        span_id=f"{context.span_id:016x}",
        parent_span_id=f"{parent.span_id:016x}" if parent is not None else "",
        start_ns=span.start_time or 0,
        end_ns=span.end_time or span.start_time or 0,
        attributes=_attrs(span.attributes, WANTED_KEYS),
        resource=resource if resource is not None else _attrs(span.resource.attributes, None),
        scope_name=span.instrumentation_scope.name if span.instrumentation_scope else "",
        status_error=span.status.status_code is StatusCode.ERROR,
    )


class CostspanSpanProcessor(SpanProcessor):
    """Prices the app's LLM spans into ``store``; ``owns_store`` makes shutdown close the store."""

    def __init__(self, store: Store, normalizer: Normalizer, *, owns_store: bool = False) -> None:
        self._store = store
        self._normalizer = normalizer
        self._owns_store = owns_store
        self._lock = threading.Lock()
        self._outstanding: set[Future[IngestResult]] = set()
        self._warned: set[str] = set()
        self._shutdown = False
        self._resource_cache: tuple[Resource, dict[str, AttrValue]] | None = None
        if not store.started:
            store.start()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        if self._shutdown:
            return
        try:
            attributes = span.attributes
            if not attributes or not self._normalizer.is_call(attributes):
                return  # the cheap path of every non-LLM span
            cached = self._resource_cache  # one tuple: threads never see a resource with another's attrs
            if cached is None or cached[0] is not span.resource:
                cached = self._resource_cache = (span.resource, _attrs(span.resource.attributes, None))
            view = span_view(span, cached[1])
            if view is None:
                return
            record = self._normalizer.normalize(view)
            if record is None:
                return
            record, reason, _ = screen(record, time.time_ns(), self._normalizer.max_value_length)
            if reason:
                self._store.count(REJECTED_PREFIX + reason)
            if record is None:
                return  # refused by the edge's rules (counted): the app's own span is untouched
            future = self._store.submit(prepare([record]))
        except QueueFullError:
            self._fail("queue_full", "costspan ingest queue is full; LLM call records are being dropped")
            return
        except Exception:
            self._fail("span_processor", "costspan could not record an LLM span; carrying on")
            return
        with self._lock:
            self._outstanding.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[IngestResult]) -> None:
        with self._lock:
            self._outstanding.discard(future)
        if future.exception() is not None:
            self._fail("span_processor", "costspan could not store an LLM call record")

    def _fail(self, component: str, message: str) -> None:
        if component != "queue_full":  # a full queue: Store.submit counted the refused records
            self._store.count(component, error=True)
        if component not in self._warned:  # log once per kind
            self._warned.add(component)
            logger.warning(message, exc_info=component != "queue_full")

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until every submitted record is durable. Safe to call any time, also after shutdown."""
        with self._lock:
            pending = list(self._outstanding)
        deadline = time.monotonic() + timeout_millis / 1000
        for future in pending:
            try:
                future.result(timeout=max(deadline - time.monotonic(), 0))
            except FutureTimeoutError:
                return False
            except Exception:
                continue
        return True

    def shutdown(self) -> None:
        """Flush, then close the store if this processor owns it. Safe to call twice."""
        if self._shutdown:
            return
        self.force_flush()
        self._shutdown = True
        if self._owns_store:
            self._store.close()
