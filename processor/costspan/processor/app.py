"""The HTTP app of `costspan serve`: OTLP ``/v1/traces``, ``/metrics``, ``/healthz``, ``/readyz``.

``create_app(settings, store)`` builds it; nothing is built at import time. Later issues add their
routers to the app it returns (``app.include_router``); the store and normalizer live on
``app.state``.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import asynccontextmanager
from typing import Final

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.concurrency import run_in_threadpool

from costspan.processor.batch import PreparedBatch, records_of
from costspan.processor.forward import Forwarder, enrich
from costspan.processor.ingest import BodyResult, init_worker, process_body, process_in_worker
from costspan.processor.metrics import StoreCollector
from costspan.processor.normalize import Normalizer, Pricer
from costspan.processor.otlp import (
    JSON,
    PROTOBUF,
    BodyTooLargeError,
    decode_request,
    decompress,
    encode_error,
    encode_response,
)
from costspan.processor.settings import Settings
from costspan.processor.store import QueueFullError, Store

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

# google.rpc.Code values used in OTLP error bodies
_INVALID_ARGUMENT: Final = 3
_RESOURCE_EXHAUSTED: Final = 8
_UNAVAILABLE: Final = 14
_INTERNAL: Final = 13


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


class _Receiver:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        normalizer: Normalizer,
        pool: ProcessPoolExecutor | None,
        forwarder: Forwarder | None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.normalizer = normalizer
        self.pool = pool
        self.forwarder = forwarder

    def _forward(self, body: bytes, content_type: str, encoding: str, batch: PreparedBatch) -> None:
        """Queue the export, enriched, for the forward endpoint; never fails the export itself."""
        if self.forwarder is None:
            return
        try:
            request = decode_request(decompress(body, encoding, self.settings.max_body_bytes), content_type)
            enrich(request, records_of(batch, list(range(len(batch)))))
            self.forwarder.submit(request.SerializeToString())
        except Exception:
            self._count("forward", error=True)
            logger.exception("preparing an export for forwarding failed")

    def _count(self, key: str, n: int = 1, *, error: bool = False) -> None:
        with self.store.lock:
            (self.store.errors if error else self.store.counters)[key] += n

    def _error(self, content_type: str, status: int, code: int, message: str, **headers: str) -> Response:
        media = content_type if content_type in (PROTOBUF, JSON) else JSON
        return Response(encode_error(media, code, message), status_code=status, media_type=media, headers=headers)

    async def _read_body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
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

    async def _process(self, body: bytes, content_type: str, encoding: str) -> BodyResult:
        limit = self.settings.max_body_bytes
        if self.pool is None:
            return process_body(self.normalizer, body, content_type, encoding, limit)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, process_in_worker, body, content_type, encoding, limit)

    async def traces(self, request: Request) -> Response:
        content_type = _content_type(request)
        if content_type not in (PROTOBUF, JSON):
            self._count("rejected_bad_request")
            return self._error(JSON, 415, _INVALID_ARGUMENT, f"unsupported Content-Type {content_type or '(none)'!r}")
        retry_after = {"Retry-After": str(self.settings.retry_after_seconds)}
        if not self.store.has_room():  # refuse before spending CPU on a body that cannot be queued
            return self._error(content_type, 503, _UNAVAILABLE, "ingest queue is full", **retry_after)
        try:
            body = await self._read_body(request)
            result = await self._process(body, content_type, request.headers.get("content-encoding", ""))
        except BodyTooLargeError as exc:
            self._count("rejected_too_large")
            return self._error(content_type, 413, _RESOURCE_EXHAUSTED, str(exc))
        except BrokenProcessPool:
            self._count("receiver", error=True)
            logger.error("an ingest worker process died; answering 503")
            return self._error(content_type, 503, _UNAVAILABLE, "ingest worker unavailable", **retry_after)
        except Exception as exc:  # a bug, not bad input: answer 500 (not retried) and count it
            self._count("receiver", error=True)
            logger.exception("processing an export failed")
            return self._error(content_type, 500, _INTERNAL, f"internal error: {type(exc).__name__}")
        if result.status == 413:
            self._count("rejected_too_large")
            return self._error(content_type, 413, _RESOURCE_EXHAUSTED, result.message)
        if result.status != 200 or result.batch is None:
            self._count("rejected_bad_request")
            return self._error(content_type, 400, _INVALID_ARGUMENT, result.message)
        if result.rejected:
            self._count("rejected_invalid_span", result.rejected)
        if result.normalize_errors:
            self._count("normalize", result.normalize_errors, error=True)
        try:
            future = self.store.submit(result.batch)
        except QueueFullError as exc:
            return self._error(content_type, 503, _UNAVAILABLE, str(exc), **retry_after)
        try:
            await asyncio.wrap_future(future)
        except Exception:
            logger.warning("storing a batch failed; answered 503 so the exporter retries")
            return self._error(content_type, 503, _UNAVAILABLE, "ledger write failed", **retry_after)
        self._forward(body, content_type, request.headers.get("content-encoding", ""), result.batch)
        return Response(encode_response(content_type, result.rejected, result.message), media_type=content_type)


def create_app(
    settings: Settings,
    store: Store,
    *,
    pricer: Pricer | None = None,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """The processor's app. The lifespan starts the store (load snapshot, replay) and closes it.

    ``pricer`` replaces the default pricer (ingest then runs in-process: a custom pricer is not
    shipped to worker processes); ``registry`` is where ``/metrics`` collects from.
    """
    metrics_registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
    metrics_registry.register(StoreCollector(store))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        chosen = pricer
        if chosen is None:
            from costspan.pricing import default_pricer

            chosen = default_pricer()
        normalizer = Normalizer(chosen, default_tenant=settings.default_tenant)
        app.state.normalizer = normalizer
        pool: ProcessPoolExecutor | None = None
        if settings.ingest_workers and pricer is None:  # workers price with the default pricer
            pool = ProcessPoolExecutor(
                settings.ingest_workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=init_worker,
                initargs=(settings.default_tenant,),
            )
        forwarder = None
        if settings.forward_endpoint:

            def dropped() -> None:
                with store.lock:
                    store.counters["forward_dropped"] += 1

            forwarder = Forwarder(settings.forward_endpoint, max_queue=settings.forward_queue, on_drop=dropped)
        app.state.receiver = _Receiver(settings, store, normalizer, pool, forwarder)
        await run_in_threadpool(store.start)
        if pool is not None:  # start every worker (and load its catalog) before we are ready
            loop = asyncio.get_running_loop()
            warm = [
                loop.run_in_executor(pool, process_in_worker, b"", PROTOBUF, "", settings.max_body_bytes)
                for _ in range(settings.ingest_workers)
            ]
            await asyncio.gather(*warm)
        try:
            yield
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            if forwarder is not None:
                await run_in_threadpool(forwarder.close)
            await run_in_threadpool(store.close)

    app = FastAPI(title="costspan", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.store = store
    app.state.registry = metrics_registry

    @app.post("/v1/traces", include_in_schema=False)
    async def traces(request: Request) -> Response:
        receiver: _Receiver = request.app.state.receiver
        return await receiver.traces(request)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        body = await run_in_threadpool(generate_latest, metrics_registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        ready = store.started and not store.closing
        return Response(
            b'{"status":"ready"}' if ready else b'{"status":"starting"}',
            status_code=200 if ready else 503,
            media_type=JSON,
        )

    return app
