"""Join a node to its peers: :func:`include_cluster` (called by ``build_server_app``).

Ownership: :meth:`Peers.owner` names one shard per tenant (rendezvous hashing over ``--peers``): the
shard that hands out the tenant's budget leases. Where the tenant's calls are stored is the
Collector's choice (its ``load_balancing`` ring), which is a different hash: reads never assume the
owner holds the data (``_fanout``).

Foreign tenants: a shard that receives spans of a tenant it does not own accepts and stores them like
its own — acknowledged once durable, nothing lost — and counts them
(``costspan_foreign_tenant_spans_total``). It does not forward them to the owner: forwarding would add
a hop that can fail after the exporter was acknowledged, and the Collector's ring differs from
:meth:`Peers.owner`, so spans would be moved on every export (and two rings that disagree could bounce
a span back and forth). Reads merge or ask every shard, so totals stay exact (docs/scale-out.md).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Final, Protocol

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from costspan.processor._lifespan import add_lifespan
from costspan.processor.cluster._fanout import ClusterRouting, PeerClient
from costspan.processor.cluster._holders import router as holders_router
from costspan.processor.cluster._peers import Peers, PeerSettings, peers_from_settings
from costspan.processor.store._batch import Committed
from costspan.processor.store._store import Store

__all__ = ["CLUSTER_STATE", "ClusterSettings", "include_cluster"]

logger = logging.getLogger(__name__)

#: Where the app keeps its :class:`Peers` (``app.state``).
CLUSTER_STATE: Final = "peers"
_FOREIGN: Final = "foreign_tenant_spans"


class ClusterSettings(PeerSettings, Protocol):
    @property
    def peer_key(self) -> str | None: ...
    @property
    def peer_timeout_seconds(self) -> float: ...


def count_foreign(peers: Peers, store: Store, committed: Committed) -> None:
    """A commit listener: count the stored calls of tenants this node does not own."""
    foreign = sum(
        len(s.rows) for _, sums in committed.sums() for dims, s in sums.items() if not peers.owns(dims.tenant)
    )
    if foreign:
        store.count(_FOREIGN, foreign)


class ClusterCollector(Collector):
    """``costspan_foreign_tenant_spans_total`` and ``costspan_peer_failures_total{peer}``."""

    def __init__(self, store: Store, client: PeerClient) -> None:
        self._store = store
        self._client = client

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        counters, _ = self._store.counts()
        foreign = CounterMetricFamily(
            "costspan_foreign_tenant_spans",
            "Calls stored for tenants another shard owns (the Collector re-balanced): kept, not forwarded.",
        )
        foreign.add_metric([], counters.get(_FOREIGN, 0))
        yield foreign
        failures = CounterMetricFamily(
            "costspan_peer_failures", "Peer calls that failed or timed out, by peer.", labels=["peer"]
        )
        for peer, n in sorted(self._client.failures.items()):
            failures.add_metric([peer], n)
        yield failures


def include_cluster(app: FastAPI, settings: ClusterSettings, store: Store, registry: CollectorRegistry) -> Peers:
    """Routing of reads across shards, the foreign-tenant count and the peer metrics. Call before the
    usage API is included (the routing runs inside its edge). A single node gets the metrics only."""
    peers = peers_from_settings(settings)
    setattr(app.state, CLUSTER_STATE, peers)
    client = PeerClient(peers, settings.peer_key, settings.peer_timeout_seconds)
    registry.register(ClusterCollector(store, client))
    app.include_router(holders_router)
    if peers.single:
        return peers
    if not settings.peer_key:
        logger.warning("peers are set but no peer key (--peer-key): peers will refuse this node's queries")
    store.add_sums_listener(lambda committed: count_foreign(peers, store, committed))
    app.add_middleware(ClusterRouting, client=client)

    @asynccontextmanager
    async def peer_client(_: FastAPI) -> AsyncIterator[None]:
        await client.open()
        try:
            yield
        finally:
            await client.close()

    add_lifespan(app, peer_client)
    logger.info("shard %s of %d: %s", peers.self_url, len(peers.urls), ", ".join(peers.urls))
    return peers
