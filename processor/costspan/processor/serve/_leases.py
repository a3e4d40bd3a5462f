"""Spend leases in ``costspan serve``: the lease routes, the lessee thread (with peers), their metrics,
and (with peers) budget definitions forwarded to every peer (serve/_budget_peers.py).

A single node (no peers) mounts the routes and answers for the budgets it owns (all of them), but
runs no lessee: its budgets behave exactly as without leases.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool

from costspan.processor._lifespan import add_lifespan
from costspan.processor.api._auth import require_admin
from costspan.processor.budgets._book import BudgetBook
from costspan.processor.budgets._lease_api import http_owner_client, lease_router
from costspan.processor.budgets._leases import LeaseBook, LeaseTerms
from costspan.processor.budgets._lessee import Lessee
from costspan.processor.cluster import Peers
from costspan.processor.serve._budget_peers import BudgetDefinitionsToPeers
from costspan.processor.serve._settings import Settings

__all__ = ["LeaseCollector", "add_spend_leases"]

logger = logging.getLogger(__name__)


class LeaseCollector(Collector):
    """``costspan_budget_leases_*``: grants made as owner, renewals that failed, leases outstanding."""

    def __init__(self, owner_book: LeaseBook, lessee: Lessee | None) -> None:
        self._owner = owner_book
        self._lessee = lessee

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        granted = CounterMetricFamily(
            "costspan_budget_leases_granted", "Spend leases this instance granted as a budget's owner (slice > 0)."
        )
        granted.add_metric([], self._owner.granted_total)
        yield granted
        lessee = self._lessee
        failures = CounterMetricFamily(
            "costspan_budget_leases_renew_failures", "Lease asks this instance could not get answered by the owner."
        )
        failures.add_metric([], lessee.renew_failures_total if lessee is not None else 0)
        yield failures
        opened = CounterMetricFamily(
            "costspan_budget_leases_fail_open",
            "Times a leased counter was opened because its owner was down (lease_owner_down=open).",
        )
        opened.add_metric([], lessee.open_total if lessee is not None else 0)
        yield opened
        outstanding = GaugeMetricFamily(
            "costspan_budget_leases_outstanding",
            "Unspent part of the live leases this instance granted, in the budget's unit.",
            labels=["counter"],
        )
        for key, amount in sorted(self._owner.outstanding().items()):
            outstanding.add_metric([key], float(amount))
        yield outstanding
        held = GaugeMetricFamily(
            "costspan_budget_leases_unspent_usd", "Unspent part of the USD leases this instance holds."
        )
        held.add_metric([], float(lessee.unspent()) if lessee is not None else 0.0)
        yield held


def add_spend_leases(app: FastAPI, settings: Settings, book: BudgetBook, registry: CollectorRegistry) -> None:
    """Mount the lease routes (admin keys) and, with peers, run the lessee for the server's lifetime."""
    peers = Peers.from_settings(settings)
    terms = LeaseTerms(
        fraction=settings.lease_fraction,
        min_share=settings.lease_min_share,
        max_share=settings.lease_max_share,
        ttl_seconds=settings.lease_ttl_seconds,
    )
    owner_book = LeaseBook(terms)
    lessee: Lessee | None = None
    close_client = None
    if not peers.single:
        ask, close_client = http_owner_client(settings.peer_key, settings.peer_timeout_seconds)
        lessee = Lessee(
            book,
            shard=peers.self_url,
            owner_of=peers.owner,
            is_self=peers.is_self,
            owner_book=owner_book,
            ask_remote=ask,
            owner_down=settings.lease_owner_down,
        )
    app.state.lease_book, app.state.lessee = owner_book, lessee
    app.include_router(
        lease_router(
            book,
            owner_book,
            owner_of=peers.owner,
            is_self=peers.is_self,
            lessee=lessee,
            dependencies=[Depends(require_admin)],
        )
    )
    registry.register(LeaseCollector(owner_book, lessee))
    if lessee is None:
        return
    app.add_middleware(
        BudgetDefinitionsToPeers,
        peers=peers,
        peer_key=settings.peer_key,
        timeout=settings.peer_timeout_seconds,
        book=book,
    )
    running = lessee

    @asynccontextmanager
    async def run_lessee(_: FastAPI) -> AsyncIterator[None]:
        running.start()
        try:
            yield
        finally:
            await run_in_threadpool(running.stop)
            if close_client is not None:
                close_client()

    add_lifespan(app, run_lessee)
