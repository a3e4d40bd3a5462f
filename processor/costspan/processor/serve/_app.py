"""The HTTP app of `costspan serve`: OTLP ``/v1/traces``, ``/metrics``, ``/healthz``, ``/readyz``
(and, in its lifespan, the OTLP/gRPC receiver: serve/_grpc.py).

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
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.concurrency import run_in_threadpool

from costspan.pricing import Pricer as CatalogPricer
from costspan.processor._lifespan import add_lifespan, composed_lifespan
from costspan.processor.api._binding import sending_tenant
from costspan.processor.ingest._forward import Forwarder
from costspan.processor.ingest._normalize import Normalizer, Pricer
from costspan.processor.ingest._otlp import JSON, PROTOBUF
from costspan.processor.ingest._receiver import Receiver
from costspan.processor.ingest._volume import MonthSpend
from costspan.processor.ingest._worker import init_worker, process_in_worker
from costspan.processor.serve._grpc import with_grpc_receiver
from costspan.processor.serve._metrics import StoreCollector
from costspan.processor.serve._settings import Settings
from costspan.processor.store._store import Store

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    store: Store,
    *,
    pricer: Pricer | None = None,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """The processor's app. Its lifespan starts the store (load snapshot, replay) and closes it; the
    pieces added later join it with :func:`~costspan.processor._lifespan.add_lifespan`.

    ``pricer`` replaces the default pricer (ingest then runs in-process: a custom pricer is not
    shipped to worker processes); ``registry`` is where ``/metrics`` collects from.
    """
    metrics_registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
    metrics_registry.register(StoreCollector(store))

    @asynccontextmanager
    async def ingest(app: FastAPI) -> AsyncIterator[None]:
        """The receiver's piece of the lifespan: start the store, the ingest workers and the forwarder."""
        chosen = pricer
        if chosen is None:
            from costspan.pricing import default_pricer

            chosen = default_pricer()
        normalizer = Normalizer(
            chosen,
            default_tenant=settings.default_tenant,
            max_value_length=settings.max_value_length,
            # volume tiers: a tenant's month to date, from the rollups (a catalog pricer's terms)
            volume=MonthSpend(store, chosen) if isinstance(chosen, CatalogPricer) else None,
        )
        app.state.normalizer = normalizer
        pool: ProcessPoolExecutor | None = None
        if settings.ingest_workers and pricer is None:  # workers price with the default pricer
            context = multiprocessing.get_context("spawn")
            # bumped by a pricing reload: each worker re-reads the catalog before its next body
            app.state.pricing_generation = context.Value("i", 0, lock=False)
            pool = ProcessPoolExecutor(
                settings.ingest_workers,
                mp_context=context,
                initializer=init_worker,
                initargs=(settings.default_tenant, settings.max_value_length, app.state.pricing_generation),
            )
        forwarder = None
        if settings.forward_endpoint:
            forwarder = Forwarder(
                settings.forward_endpoint,
                max_queue=settings.forward_queue,
                on_drop=lambda: store.count("forward_dropped"),
            )
        app.state.receiver = Receiver(settings, store, normalizer, pool, forwarder)
        app.state.receiver.tracking = getattr(app.state, "cost_tracking", True)  # off: see _server
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
            app.state.receiver.close()
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            if forwarder is not None:
                await run_in_threadpool(forwarder.close)
            await run_in_threadpool(store.close)

    # OTLP/gRPC (settings.grpc_port) serves once every piece has started, and stops before they stop
    lifespan = with_grpc_receiver(composed_lifespan)
    app = FastAPI(title="costspan", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    add_lifespan(app, ingest)
    app.state.settings = settings
    app.state.store = store
    app.state.registry = metrics_registry

    @app.post("/v1/traces", include_in_schema=False)
    async def traces(request: Request) -> Response:
        receiver: Receiver = request.app.state.receiver
        return await receiver.traces(request, sending_tenant(request))

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
