"""The server's side of repricing: ``POST /v1/reprice``, ``POST /v1/pricing/reload`` and SIGHUP.

:func:`add_repricing` wires a running server for corrections: the store's correction listener feeds
the usage index and the budgets (a repriced call's cost change is charged or credited in the period
of its start time), and the two admin routes are added. A reprice runs in a worker thread, one at a
time; the catalog it prices with is the server's (reload it first after changing the catalog file).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from costspan.pricing import CatalogError, Pricer, load_catalog
from costspan.processor._lifespan import add_lifespan
from costspan.processor.api._auth import require_admin
from costspan.processor.api._index import UsageIndex
from costspan.processor.api._keys import Principal
from costspan.processor.budgets import BudgetBook
from costspan.processor.budgets._stored_calls import settle_corrections
from costspan.processor.serve._reprice import Window, parse_time, reprice
from costspan.processor.store._corrections import Correction
from costspan.processor.store._ledger import Position
from costspan.processor.store._store import Store

__all__ = ["RepriceRequest", "add_repricing", "reload_pricing"]

logger = logging.getLogger(__name__)


class RepriceRequest(BaseModel):
    """``POST /v1/reprice``: the calls started in ``[since, until)`` (of ``tenant``, if given)."""

    model_config = {"extra": "forbid"}

    since: str = Field(description="ISO date or date-time (UTC unless it has an offset), or a duration: 7d, 12h")
    until: str | None = Field(default=None, description="as since; default now")
    tenant: str | None = Field(default=None, min_length=1, max_length=200)
    dry_run: bool = False


def _pricers(app: FastAPI) -> list[Pricer]:
    """The distinct catalog pricers the server prices with (ingest and the usage API)."""
    found: list[Pricer] = []
    for pricer in (getattr(app.state, "api_pricer", None), getattr(app.state, "reprice_pricer", None)):
        if isinstance(pricer, Pricer) and all(pricer is not p for p in found):
            found.append(pricer)
    return found


def reload_pricing(app: FastAPI) -> tuple[str, str]:
    """Re-read the catalog (packaged + ``$COSTSPAN_PRICING_FILE``) into the server's pricers and tell
    the ingest workers to do the same. Returns (previous version, new version); raises CatalogError
    (the old catalog stays in use)."""
    catalog = load_catalog()
    pricers = _pricers(app)
    previous = pricers[0].catalog_version if pricers else ""
    for pricer in pricers:
        pricer.reload(catalog)
    generation = getattr(app.state, "pricing_generation", None)
    if generation is not None:  # ingest worker processes reload before their next body (any change will do)
        generation.value += 1
    logger.info("pricing catalog reloaded: %s -> %s", previous, catalog.version)
    return previous, catalog.version


def add_repricing(app: FastAPI, store: Store, book: BudgetBook | None, pricer: Pricer | None = None) -> None:
    """Feed corrections to the usage index (``app.state.usage_index``) and ``book``; add the routes
    and the SIGHUP handler (on the main thread's event loop only)."""
    index: UsageIndex | None = getattr(app.state, "usage_index", None)
    if index is not None:
        store.add_correction_listener(index.on_corrected)
    if book is not None:
        budget_book = book

        def settle(corrections: list[Correction], _: Position) -> None:
            settle_corrections(budget_book, corrections)

        store.add_correction_listener(settle)
    if pricer is not None:
        app.state.reprice_pricer = pricer
    running = threading.Lock()  # one reprice at a time: each compares calls with their current cost
    router = APIRouter(tags=["pricing"])

    @router.post("/v1/reprice")
    async def reprice_route(
        request: Request, body: RepriceRequest, _: Annotated[Principal, Depends(require_admin)]
    ) -> dict[str, Any]:
        """Recompute the cost of stored calls with the server's current catalog (admin key)."""
        try:
            until = parse_time(body.until) if body.until else None
            since = parse_time(body.since)
            window = Window(since, until if until is not None else time.time(), body.tenant)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        pricers = _pricers(request.app)
        if not pricers:
            raise HTTPException(503, "the server has no catalog pricer to reprice with")

        def run() -> dict[str, Any]:
            if not running.acquire(blocking=False):
                raise HTTPException(409, "a reprice is already running; try again when it is done")
            try:
                apply = None if body.dry_run else store.correct
                return reprice(store.ledger.directory, pricers[0], window, apply).to_json()
            finally:
                running.release()

        return await run_in_threadpool(run)

    @router.post("/v1/pricing/reload")
    async def reload_route(request: Request, _: Annotated[Principal, Depends(require_admin)]) -> dict[str, str]:
        """Re-read the catalog for new calls without a restart (admin key); answers the new version."""
        try:
            previous, version = await run_in_threadpool(reload_pricing, request.app)
        except CatalogError as exc:
            problem = exc.problems[0] if exc.problems else "invalid"
            raise HTTPException(400, f"catalog not reloaded: {exc.source}: {problem}") from None
        return {"catalog_version": version, "previous_version": previous}

    app.include_router(router)

    @asynccontextmanager
    async def on_sighup(started: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()

        def reload() -> None:
            try:
                reload_pricing(started)
            except CatalogError as exc:
                logger.error("SIGHUP: catalog not reloaded (%s: %s)", exc.source, "; ".join(exc.problems))

        try:
            loop.add_signal_handler(signal.SIGHUP, reload)
            installed = True
        except (ValueError, RuntimeError, NotImplementedError, AttributeError):
            installed = False  # not the main thread (a test's server thread) or no SIGHUP here
        try:
            yield
        finally:
            if installed:
                loop.remove_signal_handler(signal.SIGHUP)

    add_lifespan(app, on_sighup)
