"""The whole ``costspan serve`` app: the OTLP receiver and store, budgets, the usage API, the dashboard.

:func:`build_server_app` composes the pieces on one FastAPI app (one port): ``create_app`` (receiver,
``/metrics``, health), the budget routes and their metrics, the usage API with API-key auth, and
``/dashboard``. Each priced record the store commits settles the budget reservation made for it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final, cast

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from costspan.pricing import Pricer
from costspan.processor._lifespan import add_lifespan
from costspan.processor.api._auth import require_admin, require_ingest, require_workspace_reader
from costspan.processor.api._keys import KeyStore
from costspan.processor.api._mount import include_usage_api
from costspan.processor.api._page import dashboard_router
from costspan.processor.api._routes_usage import BudgetShown, BudgetView, Status, UsagePeriod
from costspan.processor.budgets import (
    BudgetAccess,
    BudgetBook,
    BudgetCheckEndpoint,
    BudgetCollector,
    Period,
    StoredSpend,
    Unit,
    apply_env,
    budget_router,
    budgets_from_env,
    settle_committed,
)
from costspan.processor.budgets._email import EmailNotifier
from costspan.processor.cluster._mount import include_cluster
from costspan.processor.serve._app import create_app
from costspan.processor.serve._leases import add_spend_leases
from costspan.processor.serve._reprice_api import add_repricing
from costspan.processor.serve._settings import Settings
from costspan.processor.store._store import Store

__all__ = ["BUDGET_ACCESS", "build_server_app"]

logger = logging.getLogger(__name__)


def _budget_view(book: BudgetBook) -> BudgetView:
    """The usage API's view of budgets: of the USD budgets of the period asked for that apply to a tenant
    (or, for ``None``, to every call), the strictest, with its status — one rule for every route."""

    def view(tenant: str | None, period: UsagePeriod) -> BudgetShown | None:
        row = book.scope_status(
            {"tenant": tenant} if tenant else {},
            period=Period.DAY if period == "daily" else Period.MONTH,
            unit=Unit.USD,
        )
        if row is None:
            return None
        return BudgetShown(row.budget.limit, row.spent, row.utilization, cast(Status, row.state))

    return view


#: Who may call the budget routes: checking, settling and releasing need an ingest (or admin) key, a
#: workspace's budget and status may be read with its tenant's key, everything else needs an admin key.
BUDGET_ACCESS: Final = BudgetAccess(send=require_ingest, read_workspace=require_workspace_reader, manage=require_admin)


def _email_alerts(settings: Settings, book: BudgetBook) -> EmailNotifier | None:
    """E-mail a budget's threshold alerts to its ``alert_emails`` (None: no SMTP host set)."""
    smtp = settings.smtp()
    if smtp is None:
        return None

    def recipients(budget_id: str) -> tuple[str, ...]:
        budget = book.get_budget(budget_id)
        return () if budget is None else budget.alert_emails

    emails = EmailNotifier(smtp, recipients)
    book.alert_sinks.append(emails)
    return emails


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
    # cluster: reads routed across shards, inside the edge added below (docs/scale-out.md)
    include_cluster(app, settings, store, metrics)
    if book is None:
        book = BudgetBook(data_dir=settings.data_dir / "budgets")
    book.spend_source = StoredSpend(store)  # a budget created mid-period starts from the stored spend
    env = budgets_from_env()
    notifier = apply_env(book, env)
    # QLens' COST_TRACKING_ENABLED=false or cost_tracking_enabled=false: no pricing, recording or enforcing
    tracking = env.enabled and settings.cost_tracking_enabled
    book.enabled = tracking
    app.state.cost_tracking = tracking
    if not tracking:
        logger.warning("cost tracking is OFF: calls are neither priced nor recorded, budgets do not enforce")
    emails = _email_alerts(settings, book)
    metrics.register(BudgetCollector(book, notifier, emails))
    store.add_sums_listener(lambda committed: settle_committed(book, committed))
    app.state.budget_book = book
    app.include_router(budget_router(book, notifier=notifier, access=BUDGET_ACCESS))
    # the pre-call check answered before FastAPI routes it (same JSON, the same rule as the route's);
    # the route above documents it
    app.add_middleware(BudgetCheckEndpoint, book=book, authorize=BUDGET_ACCESS.send)
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
    add_repricing(app, store, book, pricer)

    @asynccontextmanager
    async def close_budgets(_: FastAPI) -> AsyncIterator[None]:
        """Stopped first: webhook deliveries and the book close before the index and the store."""
        try:
            yield
        finally:
            if notifier is not None:
                notifier.shutdown()
            if emails is not None:
                emails.shutdown()
            book.close()

    add_lifespan(app, close_budgets)
    add_spend_leases(app, settings, book, metrics)  # with peers, its lessee stops before the book closes
    return app
