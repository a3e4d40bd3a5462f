"""A key's tenant binding on every write: which tenant a write goes to, and the refusal for another.

A tenant key, or an ingest key created with a tenant, is *bound*: everything it writes is its tenant's.
A write that names no tenant goes to the key's tenant; a write naming another tenant (a body field,
``X-Tenant-ID``, an OTLP span or resource attribute) is refused — 403 on the JSON routes, a refused
span in the OTLP partial success. Unbound ingest keys and admin keys write for the tenant they name.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import HTTPException, Request

from costspan.processor.api._auth import principal_of
from costspan.processor.api._keys import Principal

__all__ = ["named_tenant", "sending_tenant", "write_tenant"]

_TENANT_HEADER = "x-tenant-id"


def sending_tenant(request: Request) -> str:
    """The tenant the key of an OTLP export is bound to (``""``: unbound, or a server without keys).

    The principal is the one an edge middleware verified and left in ``scope["state"]["principal"]``,
    or, when none did, the request's key verified now (401 without a valid key).
    """
    state = request.scope.get("state")
    principal = state.get("principal") if isinstance(state, Mapping) else None
    if not isinstance(principal, Principal):
        if getattr(request.app.state, "api_keys", None) is None:  # --insecure-no-auth, or no usage API
            return ""
        principal = principal_of(request)
    return principal.tenant


def named_tenant(request: Request, field: str) -> str:
    """The tenant a write names: its body's tenant ``field`` and/or the ``X-Tenant-ID`` header (400 if
    they disagree); ``""`` when it names none."""
    header = request.headers.get(_TENANT_HEADER, "")
    if field and header and field != header:
        raise HTTPException(400, "the body's tenant and X-Tenant-ID disagree")
    return field or header


def write_tenant(principal: Principal, named: str, *, refusal: str) -> str:
    """The tenant a write goes to: a bound key's own tenant (403 with ``refusal`` when ``named`` is
    another), else ``named`` (``""``: the caller's default applies)."""
    if principal.tenant:
        if named and named != principal.tenant:
            raise HTTPException(403, refusal)
        return principal.tenant
    return named
