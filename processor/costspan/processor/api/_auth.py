"""Who may ask what: API key → principal, tenant scoping, and the ingest guard on ``/v1/traces``.

Keys come as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``. ``admin`` reads everything,
``tenant`` reads its own tenant only (an ``X-Tenant-ID`` header or a tenant parameter naming another
tenant is refused with 403), ``ingest`` may only send data (OTLP, ``POST /api/usage/calls``).
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from fastapi import HTTPException, Request

from costspan.processor.api._keys import KeyStore, Principal

__all__ = [
    "NO_AUTH",
    "IngestGuard",
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


def _authenticate(keys: KeyStore | None, headers: Any) -> Principal:
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
    """FastAPI dependency: the authenticated caller (401 without a valid key)."""
    keys: KeyStore | None = request.app.state.api_keys
    return _authenticate(keys, request.headers)


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


_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_App = Callable[[MutableMapping[str, Any], _Receive, _Send], Awaitable[None]]


class IngestGuard:
    """ASGI middleware: ``POST /v1/traces`` needs an admin or ingest key (tenant keys only read)."""

    def __init__(self, app: _App, keys: KeyStore | None, paths: tuple[str, ...] = ("/v1/traces",)) -> None:
        self.app = app
        self.keys = keys
        self.paths = paths

    async def __call__(self, scope: MutableMapping[str, Any], receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http" or self.keys is None or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        status, message = 0, ""
        try:
            principal = _authenticate(self.keys, headers)
            if principal.role not in ("admin", "ingest"):
                status, message = 403, "this key may not send traces"
        except HTTPException as exc:
            status, message = exc.status_code, str(exc.detail)
        if not status:
            await self.app(scope, receive, send)
            return
        body = json.dumps({"code": 16 if status == 401 else 7, "message": message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
