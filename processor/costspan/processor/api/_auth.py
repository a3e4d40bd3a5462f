"""Who may ask what: API key → principal, and tenant scoping.

Keys come as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``. ``admin`` reads everything,
``tenant`` reads its own tenant only (an ``X-Tenant-ID`` header or a tenant parameter naming another
tenant is refused with 403), ``ingest`` may only send data (OTLP, ``POST /api/usage/calls``),
``metrics`` may only scrape ``/metrics``. The key itself is checked once, at the edge
(:class:`~costspan.processor.api._edge.EdgeGuard`), before the body is read.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import MutableMapping
from typing import Any, Final

from fastapi import HTTPException, Request

from costspan.processor.api._keys import KeyStore, Principal

__all__ = [
    "NO_AUTH",
    "PRINCIPAL_STATE",
    "authenticate",
    "check_startup",
    "is_loopback",
    "principal_of",
    "read_scope",
    "require_admin",
    "require_ingest",
    "require_workspace_reader",
]

logger = logging.getLogger(__name__)

#: The principal of every request when the server runs with ``--insecure-no-auth``.
NO_AUTH: Final = Principal("insecure-no-auth", "admin")
_TENANT_HEADER: Final = "x-tenant-id"
#: Where the edge leaves the verified principal in ``scope["state"]``.
PRINCIPAL_STATE: Final = "costspan_principal"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_startup(keys: KeyStore, *, host: str, insecure_no_auth: bool) -> None:
    """Refuse (``ValueError``) to serve without keys, or without auth on a non-loopback address."""
    if insecure_no_auth:
        if not is_loopback(host):
            raise ValueError(f"--insecure-no-auth is only allowed on a loopback address, not {host!r}")
        logger.warning("the usage API runs WITHOUT authentication (--insecure-no-auth, %s only)", host)
        return
    if not keys.has_keys():
        raise ValueError(
            "no API key exists: create one with `costspan keys create --role admin`, set COSTSPAN_ADMIN_KEY, "
            "or run on a loopback address with --insecure-no-auth"
        )


def _presented(headers: MutableMapping[str, str] | Any) -> str | None:
    key: str | None = headers.get("x-api-key")
    if key:
        return key.strip()
    auth: str | None = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


def authenticate(keys: KeyStore | None, headers: Any) -> Principal:
    """The principal of the key in ``headers`` (``HTTPException`` 401 without a valid one, 403 for an
    ``X-Tenant-ID`` naming another tenant than the key's)."""
    if keys is None:
        return NO_AUTH
    presented = _presented(headers)
    if presented is None:
        raise HTTPException(
            401, "missing API key: send X-API-Key or Authorization: Bearer", {"WWW-Authenticate": "Bearer"}
        )
    principal = keys.verify(presented)
    if principal is None:
        raise HTTPException(401, "invalid or revoked API key", {"WWW-Authenticate": "Bearer"})
    header_tenant = headers.get(_TENANT_HEADER)
    if header_tenant and principal.tenant and header_tenant != principal.tenant:
        raise HTTPException(403, "X-Tenant-ID does not match this key's tenant")
    return principal


def principal_of(request: Request) -> Principal:
    """FastAPI dependency: the authenticated caller (401 without a valid key): the one the edge
    verified, else (an app without the edge) verified here."""
    verified = request.scope.get("state", {}).get(PRINCIPAL_STATE)
    if isinstance(verified, Principal):
        return verified
    keys: KeyStore | None = request.app.state.api_keys
    return authenticate(keys, request.headers)


def require_ingest(request: Request) -> Principal:
    principal = principal_of(request)
    if principal.role not in ("admin", "ingest"):
        raise HTTPException(403, "this key may not send usage (admin or ingest key required)")
    return principal


def require_admin(request: Request) -> Principal:
    principal = principal_of(request)
    if principal.role != "admin":
        raise HTTPException(403, "admin key required")
    return principal


def require_workspace_reader(request: Request, workspace_id: str) -> Principal:
    """A workspace's own reads (``workspace_id`` is the path's): its tenant's key, or an admin key."""
    principal = principal_of(request)
    if principal.role == "admin" or (principal.role == "tenant" and principal.tenant == workspace_id):
        return principal
    raise HTTPException(403, "admin key required")


def read_scope(request: Request, requested: str | None) -> str | None:
    """The tenant a read is limited to (None: every tenant, admin only).

    ``requested`` is the route's tenant parameter; the ``X-Tenant-ID`` header counts as one too.
    A tenant key is always limited to its tenant and may not name another; an ingest key may not read.
    """
    principal = principal_of(request)
    if principal.role == "metrics":
        raise HTTPException(403, "a metrics key may only scrape /metrics")
    if principal.role == "ingest":
        raise HTTPException(403, "an ingest key may not read usage")
    header = request.headers.get(_TENANT_HEADER) or None
    if requested is not None and header is not None and requested != header:
        raise HTTPException(400, "the tenant parameter and X-Tenant-ID disagree")
    wanted = requested if requested is not None else header
    if principal.role == "admin":
        return wanted
    if wanted is not None and wanted != principal.tenant:
        raise HTTPException(403, "this key may only read its own tenant")
    return principal.tenant
