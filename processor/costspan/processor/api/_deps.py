"""What every read route starts with, as FastAPI dependencies: the caller's scope and the currency.

A route names what it needs by type — ``scope: TenantScope`` (the key checked, the tenant parameter
or ``X-Tenant-ID`` applied, the usage index to read), ``money: Currency`` (the ``currency``
parameter, validated against the catalog) — and FastAPI resolves it before the route runs. The
dependencies are ``async`` functions, so none hops to the thread pool. Their query parameters are
documented as the route's own; FastAPI lists them after the route's own parameters, wherever the
route names the dependency. A dependency runs before the route's own parameters are validated, so an
unauthenticated request is answered 401 before any 422.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Final

from fastapi import Depends, Path, Query, Request

from costspan.processor.api._auth import read_scope
from costspan.processor.api._common import CurrencyParam, Money, index_of, money_of
from costspan.processor.api._index import UsageIndex

__all__ = [
    "Currency",
    "Scope",
    "TenantIdScope",
    "TenantParam",
    "TenantScope",
    "WorkspaceId",
    "WorkspaceScope",
    "scope_of",
]

_TENANT_DOC: Final = "tenant (admin keys)"
TenantParam = Annotated[str | None, Query(min_length=1, max_length=200, description=_TENANT_DOC)]
WorkspaceId = Annotated[str, Path(min_length=1, max_length=200)]


@dataclass(frozen=True, slots=True)
class Scope:
    """What a caller may read: the usage index's sums of one tenant (``tenant``), or of every
    tenant (None: admin keys only)."""

    tenant: str | None
    index: UsageIndex

    @property
    def one_tenant(self) -> str:
        """The tenant of a scope that names one (a workspace's)."""
        assert self.tenant is not None, "this scope covers every tenant"
        return self.tenant


def scope_of(request: Request, tenant: str | None) -> Scope:
    """The caller's :class:`Scope` for a route's ``tenant`` parameter (401/403/400 as :func:`read_scope`)."""
    return Scope(read_scope(request, tenant), index_of(request))


async def _tenant_scope(request: Request, tenant: TenantParam = None) -> Scope:
    return scope_of(request, tenant)


async def _tenant_id_scope(request: Request, tenant_id: TenantParam = None) -> Scope:
    return scope_of(request, tenant_id)


async def _workspace_scope(request: Request, workspace_id: WorkspaceId) -> Scope:
    return scope_of(request, workspace_id)


async def _currency(request: Request, currency: CurrencyParam = "USD") -> Money:
    return money_of(request, currency)


#: The scope of a route with a ``tenant`` query parameter.
TenantScope = Annotated[Scope, Depends(_tenant_scope)]
#: The scope of a route with a ``tenant_id`` query parameter (the seeds' ``/v1`` and ``/api/v2`` routes).
TenantIdScope = Annotated[Scope, Depends(_tenant_id_scope)]
#: The scope of a ``/api/workspaces/{workspace_id}/...`` route: that workspace (= tenant).
WorkspaceScope = Annotated[Scope, Depends(_workspace_scope)]
#: Money in the route's ``currency`` (400 for a currency the catalog has no rate for).
Currency = Annotated[Money, Depends(_currency)]
