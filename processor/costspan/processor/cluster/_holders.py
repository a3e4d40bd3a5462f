"""Where a tenant's calls are: ``GET /api/cluster/tenant-calls`` (how many this shard holds).

The Collector's ``load_balancing`` exporter picks a shard for a tenant with a ring of its own, so the
shard holding a tenant's calls is not :meth:`Peers.owner` in general (and after a re-balance, several
shards hold some). A read that cannot be merged across shards asks every peer this and is answered by
the shard holding the most (``ClusterRouting``).
"""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, HTTPException, Request
from typing_extensions import TypedDict

from costspan.processor.api._auth import read_scope
from costspan.processor.api._common import JSONBody
from costspan.processor.api._deps import TenantParam
from costspan.processor.api._index import UsageIndex

__all__ = ["TENANT_CALLS_PATH", "TenantCallsOut", "router", "tenant_calls"]

TENANT_CALLS_PATH: Final = "/api/cluster/tenant-calls"
_EVER: Final = (0, 1 << 40)

router = APIRouter(tags=["cluster"], default_response_class=JSONBody)


class TenantCallsOut(TypedDict):
    tenant: str
    calls: int


def tenant_calls(index: UsageIndex, tenant: str) -> int:
    """The calls of ``tenant`` this shard's usage index holds (every day it keeps)."""
    with index.read():
        return sum(td.total.calls for _, td in index.day_range(tenant, *_EVER))


@router.get(TENANT_CALLS_PATH, response_model=TenantCallsOut)
async def tenant_calls_here(request: Request, tenant: TenantParam = None) -> JSONBody:
    """How many calls of a tenant this shard holds (its own data only: never fanned out)."""
    scope = read_scope(request, tenant)
    if scope is None:
        raise HTTPException(400, "name a tenant: send tenant or X-Tenant-ID")
    body: TenantCallsOut = {"tenant": scope, "calls": tenant_calls(request.app.state.usage_index, scope)}
    return JSONBody(body)
