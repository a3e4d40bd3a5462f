"""One session (conversation) by its id: ``GET /v1/sessions/{session_id}``.

What the MDMAI cost library's ``get_session`` answered in-process, over HTTP: the session's calls,
tokens and cost in a window of UTC days, per tenant (a session belongs to its tenant). A tenant key
sees its own tenant's session only; an admin key sees every tenant's session of that id (one row per
tenant) unless it names a tenant. Unknown (or another tenant's) session: 404.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from typing_extensions import TypedDict

from costspan.processor.api._common import DaysParam, JSONBody, Window, sums_json, tenants_of
from costspan.processor.api._deps import Currency, TenantScope
from costspan.processor.api._schemas import AggFigures
from costspan.processor.store._sums import Sums

__all__ = ["router"]

router = APIRouter(tags=["sessions"], default_response_class=JSONBody)

SessionId = Annotated[str, Path(min_length=1, max_length=256, description="the session id (costspan.session.id)")]


class SessionTenantRow(AggFigures):
    tenant_id: str
    first_day: str
    last_day: str


class SessionOut(TypedDict):
    session_id: str
    days: int
    currency: str
    tenants: list[SessionTenantRow]
    total: AggFigures


@router.get("/v1/sessions/{session_id}", response_model=SessionOut)
async def session(session_id: SessionId, scope: TenantScope, money: Currency, days: DaysParam = 30) -> JSONBody:
    """A session's calls, tokens and cost over the last ``days`` UTC days (404 when it has none)."""
    window = Window.last_days(days)
    total = Sums()
    rows: list[SessionTenantRow] = []
    with scope.index.read():
        for tenant in tenants_of(scope.index, scope.tenant):
            found = Sums()
            seen: list[int] = []
            for day, td in scope.index.day_range(tenant, window.first, window.last):
                agg = td.by_session.get(session_id)
                if agg is not None:
                    found.merge(agg, histogram=False)
                    seen.append(day)
            if found.requests:
                total.merge(found, histogram=False)
                row: SessionTenantRow = {
                    **sums_json(found, money),
                    "tenant_id": tenant,
                    "first_day": _day(min(seen)),
                    "last_day": _day(max(seen)),
                }
                rows.append(row)
    if not rows:
        raise HTTPException(404, f"no calls recorded for session {session_id!r} in the last {days} day(s)")
    body: SessionOut = {
        "session_id": session_id,
        "days": days,
        "currency": money.currency,
        "tenants": rows,
        "total": sums_json(total, money),
    }
    return JSONBody(body)


def _day(start: int) -> str:
    return datetime.fromtimestamp(start, UTC).date().isoformat()
