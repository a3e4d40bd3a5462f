"""The whole ``costspan serve`` app: the OTLP receiver and store, budgets, the usage API, the dashboard.

:func:`build_server_app` composes the pieces on one FastAPI app (one port): ``create_app`` (receiver,
``/metrics``, health), the budget routes and their metrics, the usage API with API-key auth, and
``/dashboard``. Each priced record the store commits settles the budget reservation made for it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

from fastapi import Depends, FastAPI, Request
from prometheus_client import CollectorRegistry

from costspan.pricing import Pricer
from costspan.processor.api._auth import principal_of, require_admin, require_ingest
from costspan.processor.api._keys import KeyStore
from costspan.processor.api._mount import include_usage_api
from costspan.processor.api._page import dashboard_router
from costspan.processor.budgets import (
    BudgetBook,
    BudgetCheckEndpoint,
    BudgetCollector,
    apply_env,
    budget_router,
    budgets_from_env,
    settle_committed,
)
from costspan.processor.serve._app import create_app
from costspan.processor.serve._settings import Settings
from costspan.processor.store._store import Store

__all__ = ["build_server_app"]

logger = logging.getLogger(__name__)


def _budget_view(book: BudgetBook) -> Any:
    """The usage API's view of budgets: a tenant's (or the global) first USD budget in its period."""

    def view(tenant: str | None) -> tuple[Decimal | None, Decimal | None]:
        wanted = {"tenant": tenant} if tenant else {}
        for status in book.status():
            if status.scope == wanted and status.budget.unit.value == "usd":
                return status.budget.limit, status.spent
        return None, None

    return view


def _check_access(request: Request) -> None:
    """Budget routes: checking and settling need an ingest (or admin) key; everything else admin."""
    path = request.url.path
    if path.startswith(("/v1/budgets/check", "/v1/budgets/settle", "/v1/budgets/reservations/")):
        require_ingest(request)
    elif request.method == "GET" and "/api/workspaces/" in path:
        principal = principal_of(request)
        workspace = path.split("/api/workspaces/", 1)[1].split("/", 1)[0]
        if principal.role != "admin" and (principal.role != "tenant" or principal.tenant != workspace):
            require_admin(request)
    else:
        require_admin(request)


def build_server_app(
    settings: Settings,
    store: Store,
    *,
    keys: KeyStore | None = None,
    insecure_no_auth: bool = False,
    pricer: Pricer | None = None,
    registry: CollectorRegistry | None = None,
    book: BudgetBook | None = None,
) -> FastAPI:
    """Raises ``ValueError`` for a server that would start without keys (see ``include_usage_api``)."""
    metrics = registry if registry is not None else CollectorRegistry(auto_describe=False)
    app = create_app(settings, store, pricer=pricer, registry=metrics)
    if book is None:
        book = BudgetBook(data_dir=settings.data_dir / "budgets")
    notifier = apply_env(book, budgets_from_env())
    metrics.register(BudgetCollector(book, notifier))
    store.add_sums_listener(lambda committed: settle_committed(book, committed))
    app.state.budget_book = book
    app.include_router(budget_router(book, notifier=notifier, dependencies=[Depends(_check_access)]))
    # the pre-call check answered before FastAPI routes it (same JSON; the auth _check_access gives that
    # path); the route above documents it
    app.add_middleware(BudgetCheckEndpoint, book=book, authorize=require_ingest)
    include_usage_api(
        app,
        store,
        settings,
        keys=keys,
        insecure_no_auth=insecure_no_auth,
        pricer=pricer,
        budget_view=_budget_view(book),
    )
    app.include_router(dashboard_router())
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[Any]:
        async with inner(a) as state:
            try:
                yield state
            finally:
                if notifier is not None:
                    notifier.shutdown()
                book.close()

    app.router.lifespan_context = lifespan
    return app
