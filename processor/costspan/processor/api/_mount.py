"""Mount the usage API on the processor's app: :func:`include_usage_api`."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from costspan.pricing import Pricer
from costspan.processor._lifespan import add_lifespan
from costspan.processor.api import (
    _routes_analytics,
    _routes_calls,
    _routes_llm_calls,
    _routes_monitoring,
    _routes_optimization,
    _routes_qlens,
    _routes_resources,
    _routes_sessions,
    _routes_usage,
    _routes_v2,
    _routes_workspaces,
)
from costspan.processor.api._auth import check_startup
from costspan.processor.api._common import FOLLOWS_STORE
from costspan.processor.api._edge import EdgeGuard
from costspan.processor.api._errors import install_error_handling
from costspan.processor.api._index import UsageIndex
from costspan.processor.api._index_snapshot import IndexSnapshots
from costspan.processor.api._keys import KeyStore
from costspan.processor.api._resources import ComputeCollector, ResourceLog
from costspan.processor.api._routes_usage import BudgetView
from costspan.processor.store._store import Store
from costspan.processor.store._validate import REJECTED_PREFIX, CardinalityLimits

__all__ = ["UsageApiSettings", "include_usage_api", "start_index"]

logger = logging.getLogger(__name__)

#: How often the index's thread looks at the ledger and the clock (see the lifespan below).
_FOLLOW_EVERY_S = 60.0


class UsageApiSettings(Protocol):
    """What the usage API reads of the server's settings (``costspan serve``'s ``Settings`` has them)."""

    @property
    def host(self) -> str: ...

    @property
    def data_dir(self) -> Path: ...

    def cardinality_limits(self) -> CardinalityLimits: ...

    @property
    def max_request_bytes(self) -> int: ...

    @property
    def metrics_public(self) -> bool: ...

    @property
    def session_detail_days(self) -> int: ...

    @property
    def keep_sessions_per_day(self) -> int: ...


def start_index(index: UsageIndex, snapshots: IndexSnapshots, store: Store) -> None:
    """Load the newest valid index snapshot, then replay the ledger after it (all of it without one)."""
    loaded = snapshots.load(index)
    if snapshots.corrupt:
        store.count("usage_index", snapshots.corrupt, error=True)
    t0 = time.perf_counter()
    replayed = index.catch_up()
    logger.info(
        "usage index ready: snapshot %s loaded in %.1f s, %d ledger record(s) replayed in %.1f s, %d record(s) in all",
        loaded.path.name if loaded.path is not None else "none",
        loaded.seconds,
        replayed,
        time.perf_counter() - t0,
        index.records,
    )


def include_usage_api(
    app: FastAPI,
    store: Store,
    settings: UsageApiSettings,
    *,
    keys: KeyStore | None = None,
    insecure_no_auth: bool = False,
    pricer: Pricer | None = None,
    budget_view: BudgetView | None = None,
) -> UsageIndex:
    """Add the usage API's routes, ``/docs`` and the edge (:class:`EdgeGuard`: keys, body limits) to ``app``.

    ``keys`` defaults to the data dir's key file plus ``COSTSPAN_ADMIN_KEY``. Raises ``ValueError``
    when there is no key and ``insecure_no_auth`` is not set, or when it is set for a non-loopback
    ``settings.host``. Returns the usage index: fed by the store's commit listener, loaded from its
    newest snapshot (``<data dir>/usage-index``) plus the ledger after it before the app serves,
    snapshotted hourly and after the store closes.
    """
    if keys is None:
        keys = KeyStore.from_env(settings.data_dir)
    check_startup(keys, host=settings.host, insecure_no_auth=insecure_no_auth)
    if pricer is None:
        from costspan.pricing import default_pricer

        pricer = default_pricer()
    index = UsageIndex(
        store.ledger.directory,
        cardinality=settings.cardinality_limits(),
        count=lambda reason, calls: store.count(REJECTED_PREFIX + reason, calls),
        session_detail_days=settings.session_detail_days,
        keep_sessions=settings.keep_sessions_per_day,
    )
    snapshots = IndexSnapshots(settings.data_dir / "usage-index")
    # the calls just made durable, summed, with the ledger position after them (the listener runs on
    # the store's writer, right after the append, so the position is exactly theirs)
    store.add_sums_listener(index.on_committed)
    setattr(app.state, FOLLOWS_STORE, True)  # so queries skip reading the ledger's tail themselves
    app.state.usage_index = index
    app.state.index_snapshots = snapshots
    app.state.api_keys = None if insecure_no_auth else keys
    app.state.api_pricer = pricer
    app.state.budget_view = budget_view
    app.state.resource_log = ResourceLog(settings.data_dir / "resources")
    registry = getattr(app.state, "registry", None)
    if registry is not None:  # compute resources on /metrics beside the LLM calls
        registry.register(ComputeCollector(app.state.resource_log))
    if settings.metrics_public:
        logger.warning("/metrics is served WITHOUT a key (--metrics-public): every tenant's spend is readable there")
    app.add_middleware(
        EdgeGuard,
        keys=app.state.api_keys,
        max_body_bytes=settings.max_request_bytes,
        metrics_public=settings.metrics_public,
    )

    def save() -> None:
        try:
            snapshots.save(index)
        except OSError:
            store.count("usage_index", error=True)
            logger.exception("usage index: snapshot failed")

    @asynccontextmanager
    async def load_and_follow(_: FastAPI) -> AsyncIterator[None]:
        """After the store started: load the index, then prune and snapshot it hourly until the app stops."""
        await run_in_threadpool(start_index, index, snapshots, store)  # before serving
        # the index's millions of long-lived objects need no cyclic GC passes (keeps query p99 flat)
        gc.collect()
        gc.freeze()
        # fed by the store's listener, the index never needs the ledger re-read: the thread only
        # prunes and snapshots hourly (its ledger check, ~0.5-1 ms under the index's lock at 10M
        # calls, ran 5 times a second and delayed the queries it overlapped)
        index.follow(_FOLLOW_EVERY_S, every_hour=save)
        try:
            yield
        finally:
            index.stop()

    @asynccontextmanager
    async def save_when_stopped(_: FastAPI) -> AsyncIterator[None]:
        """Outermost: the last snapshot once the store is closed (every acknowledged record is in)."""
        yield
        await run_in_threadpool(save)

    add_lifespan(app, load_and_follow)
    add_lifespan(app, save_when_stopped, outermost=True)
    for module in (
        _routes_usage,
        _routes_monitoring,
        _routes_qlens,
        _routes_calls,
        _routes_llm_calls,
        _routes_v2,
        _routes_workspaces,
        _routes_resources,
        _routes_optimization,
        _routes_analytics,
        _routes_sessions,
    ):
        app.include_router(module.router)

    # errors as ``{"detail": ..., "success": false}`` so both seeds' clients read them, documented
    # on every operation of the OpenAPI document
    install_error_handling(app, lambda: pricer.catalog.currencies)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> dict[str, Any]:
        return app.openapi()

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="costspan usage API")

    return index
