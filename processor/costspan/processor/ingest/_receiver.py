"""``POST /v1/traces``: one OTLP/HTTP export to stored call records, answered once they are durable.

The receiver refuses what it cannot queue before reading the body, decodes and prices the body in its
ingest thread or in the ingest worker processes (:mod:`._worker`) — never on the event loop, so a large
export does not stall health checks or budget checks — submits the prepared batch to the store, waits for the
ledger to hold it, forwards the enriched spans when asked, and answers with OTLP partial success.
An export sent with a key bound to a tenant names it (``tenant``): spans for another tenant are refused
in the partial success, and spans naming no tenant are the key's tenant's.
:meth:`Receiver.export` is that path from a body already read to its outcome; OTLP/HTTP and OTLP/gRPC
(serve/_grpc.py) both answer from it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from fastapi import Request, Response

from costspan.processor.ingest._forward import Forwarder, drop_other_tenants, enrich
from costspan.processor.ingest._normalize import Normalizer
from costspan.processor.ingest._otlp import (
    JSON,
    PROTOBUF,
    BodyTooLargeError,
    decode_request,
    decompress,
    encode_error,
    encode_response,
)
from costspan.processor.ingest._volume import MonthSpend
from costspan.processor.ingest._worker import BodyResult, process_body, process_in_worker
from costspan.processor.store._batch import PreparedBatch, records_of
from costspan.processor.store._store import QueueFullError, Store
from costspan.processor.store._validate import REJECTED_PREFIX

__all__ = ["ExportOutcome", "OutcomeKind", "Receiver", "ReceiverLimits"]

logger = logging.getLogger(__name__)

# google.rpc.Code values used in OTLP error bodies
_INVALID_ARGUMENT: Final = 3
_RESOURCE_EXHAUSTED: Final = 8
_UNAVAILABLE: Final = 14
_INTERNAL: Final = 13

#: How one export ended: stored (perhaps with spans refused in the partial success), or refused whole —
#: bad input (not retried), too large, unavailable (the exporter retries later), or an internal error.
OutcomeKind = Literal["stored", "bad_request", "too_large", "unavailable", "internal"]
#: The OTLP/HTTP status and google.rpc code of each refusal.
_HTTP_ANSWERS: Final[dict[OutcomeKind, tuple[int, int]]] = {
    "bad_request": (400, _INVALID_ARGUMENT),
    "too_large": (413, _RESOURCE_EXHAUSTED),
    "unavailable": (503, _UNAVAILABLE),
    "internal": (500, _INTERNAL),
}


@dataclass(frozen=True, slots=True)
class ExportOutcome:
    """How :meth:`Receiver.export` ended: ``message`` is the reason of a refusal or the partial success's
    message; ``rejected`` the spans refused individually in a stored export."""

    kind: OutcomeKind
    message: str = ""
    rejected: int = 0


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


class ReceiverLimits(Protocol):
    """What the receiver reads of the server's settings."""

    @property
    def max_body_bytes(self) -> int: ...

    @property
    def retry_after_seconds(self) -> int: ...


class Receiver:
    """The ``/v1/traces`` handler of one app: :meth:`traces` answers one export.

    Without worker processes (``pool`` None) bodies are decoded and priced in one ingest thread of its
    own (one, so the normalizer is never shared between threads); :meth:`close` stops it.
    """

    def __init__(
        self,
        limits: ReceiverLimits,
        store: Store,
        normalizer: Normalizer,
        pool: ProcessPoolExecutor | None,
        forwarder: Forwarder | None,
    ) -> None:
        self.limits = limits
        self.store = store
        self.normalizer = normalizer
        self.pool = pool
        self.forwarder = forwarder
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="costspan-ingest") if pool is None else None
        #: False: cost tracking is off, exports are answered and nothing is decoded, priced or stored
        self.tracking = True

    def close(self) -> None:
        """Stop the ingest thread once the bodies it has are done. Safe twice."""
        if self._thread is not None:
            self._thread.shutdown(wait=True)

    def _forward(self, body: bytes, content_type: str, encoding: str, batch: PreparedBatch, tenant: str) -> None:
        """Queue the export, enriched (and without the spans a bound key may not send), for the forward
        endpoint; never fails the export itself."""
        if self.forwarder is None:
            return
        try:
            request = decode_request(decompress(body, encoding, self.limits.max_body_bytes), content_type)
            enrich(request, records_of(batch, list(range(len(batch)))))
            if tenant:
                drop_other_tenants(request, tenant)
            self.forwarder.submit(request.SerializeToString())
        except Exception:
            self._count("forward", error=True)
            logger.exception("preparing an export for forwarding failed")

    def _count(self, key: str, n: int = 1, *, error: bool = False) -> None:
        self.store.count(key, n, error=error)

    def _error(self, content_type: str, status: int, code: int, message: str, **headers: str) -> Response:
        media = content_type if content_type in (PROTOBUF, JSON) else JSON
        return Response(encode_error(media, code, message), status_code=status, media_type=media, headers=headers)

    async def _read_body(self, request: Request) -> bytes:
        limit = self.limits.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise BodyTooLargeError(f"body of {length} bytes is above the limit of {limit}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLargeError(f"body is above the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _process(self, body: bytes, content_type: str, encoding: str, tenant: str) -> BodyResult:
        limit = self.limits.max_body_bytes
        loop = asyncio.get_running_loop()
        if self._thread is not None:
            work = functools.partial(process_body, self.normalizer, body, content_type, encoding, limit, tenant=tenant)
            return await loop.run_in_executor(self._thread, work)
        volume = self.normalizer.volume
        spend = volume.snapshot() if isinstance(volume, MonthSpend) else None  # volume tiers, for the worker
        return await loop.run_in_executor(
            self.pool, process_in_worker, body, content_type, encoding, limit, tenant, spend
        )

    async def export(self, body: bytes, content_type: str, encoding: str, tenant: str = "") -> ExportOutcome:
        """Decode, price and store one export body already read, and say how it ended; never raises.

        Shared by OTLP/HTTP (:meth:`traces`) and OTLP/gRPC: "stored" only once the store says the batch is
        durable. ``tenant`` is the tenant the sending key is bound to (``""``: none).
        """
        if not self.tracking:
            self._count("untracked_exports")
            return ExportOutcome("stored", "cost tracking is off: nothing was recorded")
        try:
            result = await self._process(body, content_type, encoding, tenant)
        except BodyTooLargeError as exc:
            self._count("rejected_too_large")
            return ExportOutcome("too_large", str(exc))
        except BrokenProcessPool:
            self._count("receiver", error=True)
            logger.error("an ingest worker process died; answering unavailable")
            return ExportOutcome("unavailable", "ingest worker unavailable")
        except Exception as exc:  # a bug, not bad input: not retried, and counted
            self._count("receiver", error=True)
            logger.exception("processing an export failed")
            return ExportOutcome("internal", f"internal error: {type(exc).__name__}")
        if result.status == 413:
            self._count("rejected_too_large")
            return ExportOutcome("too_large", result.message)
        if result.status != 200 or result.batch is None:
            self._count("rejected_bad_request")
            return ExportOutcome("bad_request", result.message)
        if result.rejected > result.rejected_tenant:
            self._count("rejected_invalid_span", result.rejected - result.rejected_tenant)
        if result.rejected_tenant:
            self._count("rejected_tenant", result.rejected_tenant)
        for reason, n in result.screened:  # refused or changed by the edge's rules: costspan_rejected_total
            self._count(REJECTED_PREFIX + reason, n)
        if result.normalize_errors:
            self._count("normalize", result.normalize_errors, error=True)
        try:
            future = self.store.submit(result.batch)
        except QueueFullError as exc:
            return ExportOutcome("unavailable", str(exc))
        try:
            await asyncio.wrap_future(future)
        except Exception:
            logger.warning("storing a batch failed; answered unavailable so the exporter retries")
            return ExportOutcome("unavailable", "ledger write failed")
        if self.forwarder is not None:  # decoding it again for the forward is CPU work too: off the loop
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._thread, self._forward, body, content_type, encoding, result.batch, tenant)
        return ExportOutcome("stored", result.message, result.rejected)

    async def traces(self, request: Request, tenant: str = "") -> Response:
        """Answer one OTLP/HTTP export; ``tenant`` is the tenant the sending key is bound to (``""``: none)."""
        content_type = _content_type(request)
        if content_type not in (PROTOBUF, JSON):
            self._count("rejected_bad_request")
            return self._error(JSON, 415, _INVALID_ARGUMENT, f"unsupported Content-Type {content_type or '(none)'!r}")
        retry_after = {"Retry-After": str(self.limits.retry_after_seconds)}
        if not self.store.has_room():  # refuse before spending CPU on a body that cannot be queued
            return self._error(content_type, 503, _UNAVAILABLE, "ingest queue is full", **retry_after)
        try:
            body = await self._read_body(request)
        except BodyTooLargeError as exc:
            self._count("rejected_too_large")
            return self._error(content_type, 413, _RESOURCE_EXHAUSTED, str(exc))
        except Exception as exc:  # a bug, not bad input: answer 500 (not retried) and count it
            self._count("receiver", error=True)
            logger.exception("reading an export failed")
            return self._error(content_type, 500, _INTERNAL, f"internal error: {type(exc).__name__}")
        outcome = await self.export(body, content_type, request.headers.get("content-encoding", ""), tenant)
        if outcome.kind == "stored":
            answer = encode_response(content_type, outcome.rejected, outcome.message)
            return Response(answer, media_type=content_type)
        status, code = _HTTP_ANSWERS[outcome.kind]
        return self._error(content_type, status, code, outcome.message, **(retry_after if status == 503 else {}))
