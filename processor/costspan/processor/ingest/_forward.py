"""Forward the received spans onward (a Collector, Tempo, Jaeger), enriched with costspan's attributes.

After an export is stored, its spans are re-sent as OTLP/HTTP protobuf to ``forward_endpoint`` with
the call spans carrying ``costspan.cost.*``, ``costspan.pricing.version``, ``costspan.tenant.id``
and ``gen_ai.usage.cost`` (never for an unpriced call). The queue is bounded (a full queue drops
the oldest export and counts it); a failed send is retried with backoff, then dropped and counted.
Forwarding never delays or fails the acknowledgement of the original export.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from costspan.instrumentation import attributes as attr
from costspan.processor.store._records import CallRecord

__all__ = ["Forwarder", "drop_other_tenants", "enrich"]

logger = logging.getLogger(__name__)

_RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})


def _set(span_attributes: Iterable[KeyValue], values: dict[str, str | float | bool]) -> list[KeyValue]:
    kept = [kv for kv in span_attributes if kv.key not in values]
    for key, value in values.items():
        kv = KeyValue(key=key)
        if isinstance(value, bool):
            kv.value.bool_value = value
        elif isinstance(value, float):
            kv.value.double_value = value
        else:
            kv.value.string_value = value
        kept.append(kv)
    return kept


def _attributes(record: CallRecord) -> dict[str, str | float | bool]:
    values: dict[str, str | float | bool] = {attr.COST_STATUS: record.cost_status}
    if record.cost_total is not None:
        values[attr.COST_USD] = float(record.cost_total)
        values[attr.GEN_AI_USAGE_COST] = float(record.cost_total)
        for key, money in (
            (attr.COST_INPUT_USD, record.cost_input),
            (attr.COST_OUTPUT_USD, record.cost_output),
            (attr.COST_CACHE_READ_USD, record.cost_cache_read),
            (attr.COST_CACHE_WRITE_USD, record.cost_cache_write),
        ):
            if money is not None:
                values[key] = float(money)
    else:
        values[attr.COST_UNPRICED_REASON] = record.unpriced_reason
    if record.pricing_version:
        values[attr.PRICING_VERSION] = record.pricing_version
    if record.tenant:
        values[attr.TENANT_ID] = record.tenant
    if record.outcome:
        values[attr.CALL_OUTCOME] = record.outcome
    return values


def enrich(request: ExportTraceServiceRequest, records: Iterable[CallRecord]) -> int:
    """Add costspan's attributes, in place, to the spans ``records`` came from; returns how many."""
    by_key = {r.trace_id + r.span_id: r for r in records}
    enriched = 0
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                record = by_key.get(span.trace_id.hex() + span.span_id.hex())
                if record is None:
                    continue
                new = _set(span.attributes, _attributes(record))
                del span.attributes[:]
                span.attributes.extend(new)
                enriched += 1
    return enriched


def _tenant_of(attributes: Iterable[KeyValue]) -> str:
    for kv in attributes:
        if kv.key == attr.TENANT_ID and kv.value.WhichOneof("value") == "string_value":
            return kv.value.string_value
    return ""


def drop_other_tenants(request: ExportTraceServiceRequest, tenant: str) -> int:
    """Remove, in place, the spans naming a tenant other than ``tenant`` (span attribute first, then
    resource): what a key bound to ``tenant`` may not send is not sent onward either. Returns how many."""
    dropped = 0
    for rs in request.resource_spans:
        resource_tenant = _tenant_of(rs.resource.attributes)
        for ss in rs.scope_spans:
            kept = [span for span in ss.spans if (_tenant_of(span.attributes) or resource_tenant or tenant) == tenant]
            if len(kept) != len(ss.spans):
                dropped += len(ss.spans) - len(kept)
                del ss.spans[:]
                ss.spans.extend(kept)
    return dropped


class Forwarder:
    """A bounded queue of serialized exports and one sender thread with retries."""

    def __init__(
        self,
        endpoint: str,
        *,
        max_queue: int = 1000,
        retries: int = 3,
        backoff_s: float = 0.5,
        timeout_s: float = 10.0,
        client: httpx.Client | None = None,
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"forward endpoint must be an http(s) URL, got {endpoint!r}")
        if max_queue < 1 or retries < 0:
            raise ValueError("max_queue must be at least 1 and retries not negative")
        self.endpoint = endpoint
        self.retries = retries
        self.backoff_s = backoff_s
        self.sent = 0
        self.dropped = 0
        self._on_drop = on_drop
        self._queue: deque[bytes] = deque()
        self._max_queue = max_queue
        self._cond = threading.Condition()
        self._closed = False
        self._client = client or httpx.Client(timeout=timeout_s)
        self._thread = threading.Thread(target=self._run, name="costspan-forwarder", daemon=True)
        self._thread.start()

    def submit(self, body: bytes) -> None:
        with self._cond:
            if self._closed:
                self._drop()
                return
            if len(self._queue) >= self._max_queue:
                self._queue.popleft()
                self._drop()
                logger.warning("forward queue full; the oldest export was dropped")
            self._queue.append(body)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                body = self._queue.popleft()
            self._send(body)

    def _send(self, body: bytes) -> None:
        for attempt in range(self.retries + 1):
            try:
                response = self._client.post(
                    self.endpoint, content=body, headers={"Content-Type": "application/x-protobuf"}
                )
            except httpx.HTTPError as exc:
                status = f"{type(exc).__name__}"
            else:
                if response.status_code < 300:
                    self.sent += 1
                    return
                if response.status_code not in _RETRYABLE:
                    status = str(response.status_code)
                    break
                status = str(response.status_code)
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2**attempt)
        self._drop()
        logger.warning("forwarding an export failed (%s); dropped", status)

    def _drop(self) -> None:
        self.dropped += 1
        if self._on_drop is not None:
            self._on_drop()

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (within ``timeout``), then stop. Safe to call twice."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        self._client.close()
