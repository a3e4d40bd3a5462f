"""``POST /api/resources/usage``: compute a workspace used (cpu, memory, gpu, storage, bandwidth, sandbox)."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from costspan.pricing import PricingError
from costspan.processor.api._auth import require_ingest
from costspan.processor.api._binding import named_tenant, write_tenant
from costspan.processor.api._common import pricer_of
from costspan.processor.api._keys import Principal
from costspan.processor.api._resources import RESOURCE_KINDS, ResourceEntry, ResourceLog
from costspan.processor.api._schemas import Identifier, TenantId
from costspan.processor.store._validate import MAX_COST_USD

__all__ = ["ResourceUsageIn", "router"]

router = APIRouter(tags=["workspaces"])


def _resources(request: Request) -> ResourceLog:
    log: ResourceLog = request.app.state.resource_log
    return log


class ResourceUsageIn(BaseModel):
    """Compute used by a workspace. ``amount`` (or the Phase 17 seed's ``usage_value``) is cores, GB,
    GPUs or sandboxes; bandwidth is GB moved.

    Catalog quantity: cpu/memory/gpu = amount × hours; storage = amount × months (30 days);
    bandwidth = amount; sandbox = amount × minutes. Without ``duration_seconds`` the amount is
    already in the catalog unit (core-hours, GB-hours, GPU-hours, GB-months, GB, minutes), as the
    seed priced it. ``unit`` (the seed's) is kept with the entry and does not change the price.
    """

    model_config = ConfigDict(extra="forbid")

    workspace_id: TenantId = ""
    execution_id: Identifier = ""
    project_id: Identifier = ""
    resource_type: Literal["cpu", "memory", "gpu", "storage", "bandwidth", "sandbox"]
    amount: Decimal | None = Field(None, ge=0, le=Decimal(10**9), allow_inf_nan=False)
    usage_value: Decimal | None = Field(
        None, ge=0, le=Decimal(10**9), allow_inf_nan=False, description="the seed's name for amount"
    )
    unit: str = Field("", max_length=50, pattern=r"^[A-Za-z0-9_./ -]*$", description="e.g. cores, gb, core-hour")
    duration_seconds: Decimal | None = Field(None, ge=0, le=Decimal(10**9), allow_inf_nan=False)
    timestamp: datetime | None = None
    id: Identifier = Field("", max_length=200, description="idempotency key")


_UNIT_SECONDS: Final = {"cpu": 3600, "memory": 3600, "gpu": 3600, "storage": 30 * 86400, "sandbox": 60}


@router.post("/api/resources/usage", status_code=201)
def resource_usage(
    request: Request, body: ResourceUsageIn, principal: Annotated[Principal, Depends(require_ingest)]
) -> dict[str, Any]:
    named = named_tenant(request, body.workspace_id)
    tenant = write_tenant(principal, named, refusal="this key may only report usage for its own workspace")
    if not tenant:
        raise HTTPException(422, "workspace_id is required")
    if not getattr(request.app.state, "cost_tracking", True):  # off: answered, neither priced nor stored
        return {"id": body.id, "stored": False, "workspace_id": tenant, "cost_status": "untracked"}
    if body.amount is not None and body.usage_value is not None and body.amount != body.usage_value:
        raise HTTPException(422, "amount and usage_value disagree: send one of them")
    amount = body.amount if body.amount is not None else body.usage_value
    if amount is None:
        raise HTTPException(422, "amount (or usage_value) is required")
    unit = _UNIT_SECONDS.get(body.resource_type)
    duration = body.duration_seconds
    quantity = amount if unit is None or duration is None else amount * duration / unit
    at = body.timestamp.timestamp() if body.timestamp else time.time()
    resource = RESOURCE_KINDS[body.resource_type]
    try:
        cost = pricer_of(request).price_resource(resource, quantity, at=at, tenant=tenant).total
    except PricingError as exc:
        raise HTTPException(422, str(exc)) from None
    if cost > MAX_COST_USD:  # each factor is bounded, their product need not be
        raise HTTPException(422, f"this usage would cost {cost:.2f} USD, above {MAX_COST_USD} for one report")
    entry = ResourceEntry(
        body.id or uuid.uuid4().hex,
        at,
        tenant,
        body.execution_id,
        body.project_id,
        body.resource_type,
        resource,
        quantity,
        cost,
        amount,
        body.unit,
    )
    stored = _resources(request).append(entry)
    return {
        "id": entry.id,
        "stored": stored,
        "workspace_id": tenant,
        "resource": resource,
        "resource_type": body.resource_type,
        "execution_id": body.execution_id,
        "usage_value": float(amount),
        "unit": body.unit,
        "duration_seconds": None if duration is None else float(duration),
        "quantity": format(quantity, "f"),
        "cost_usd": float(cost),
        "cost_usd_exact": format(cost, "f"),
    }
