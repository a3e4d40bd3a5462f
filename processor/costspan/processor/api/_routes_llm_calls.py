"""``POST /api/llm-calls``: the Phase 17 seed's ``LLMCall`` record, stored as any logged call.

The seed recorded a call with ``workspace_id``, ``execution_id``, ``provider``, ``model``,
``tokens_prompt``, ``tokens_completion`` (``tokens_total`` their sum), ``latency_ms`` and free
``metadata``. This route takes those names, maps them onto :class:`CallIn` (workspace = tenant,
execution = workflow) and stores the call through :func:`store_call`: the same tenant binding,
validation, pricing, dedupe and budgets as ``POST /api/usage/calls``. ``metadata`` is checked
(flat, small) and never stored: it may hold request parameters, and no content is ever kept.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from costspan.processor.api._auth import require_ingest
from costspan.processor.api._keys import Principal
from costspan.processor.api._routes_calls import CallIn, store_call
from costspan.processor.api._schemas import Identifier, Name, TenantId, TokenCount
from costspan.processor.store._validate import MAX_LATENCY_S

__all__ = ["LLMCallIn", "router"]

router = APIRouter(tags=["calls"])

#: At most this many ``metadata`` entries, each value a scalar.
MAX_METADATA_KEYS: Final = 64
_Scalar = str | int | float | bool | None


class LLMCallIn(BaseModel):
    """One LLM call under the Phase 17 seed's ``LLMCall`` names."""

    model_config = ConfigDict(extra="forbid")

    workspace_id: TenantId = Field("", description="the workspace (= tenant); tenant-bound keys imply it")
    execution_id: Identifier = Field("", description="task run or workflow execution (= workflow)")
    project_id: Identifier = ""
    provider: Name
    model: Name
    tokens_prompt: TokenCount
    tokens_completion: TokenCount
    tokens_total: TokenCount | None = Field(None, description="if sent, must equal prompt + completion")
    latency_ms: float = Field(0.0, ge=0, le=MAX_LATENCY_S * 1000, allow_inf_nan=False)
    timestamp: datetime | None = None
    operation_type: Name = "chat"
    user_id: Identifier = ""
    session_id: Identifier = ""
    success: bool = True
    error_message: str = Field("", max_length=1000, description="stored as the error type's first 100 characters")
    metadata: dict[Annotated[str, Field(max_length=100)], _Scalar] = Field(
        default_factory=dict, description="checked, not stored (at most 64 flat entries)"
    )
    id: str = Field("", max_length=200, description="idempotency key: the same id is stored once")


def _as_call(body: LLMCallIn) -> CallIn:
    if body.tokens_total is not None and body.tokens_total != body.tokens_prompt + body.tokens_completion:
        raise HTTPException(422, "tokens_total must equal tokens_prompt + tokens_completion")
    if len(body.metadata) > MAX_METADATA_KEYS:
        raise HTTPException(422, f"metadata holds at most {MAX_METADATA_KEYS} entries")
    try:
        return CallIn.model_validate(
            {
                "provider": body.provider,
                "model": body.model,
                "prompt_tokens": body.tokens_prompt,
                "completion_tokens": body.tokens_completion,
                "latency_ms": body.latency_ms,
                "operation_type": body.operation_type,
                "user_id": body.user_id,
                "session_id": body.session_id,
                "workflow_id": body.execution_id,
                "project_id": body.project_id,
                "tenant_id": body.workspace_id,
                "success": body.success,
                "error_message": body.error_message,
                "timestamp": body.timestamp,
                "call_id": body.id,
            }
        )
    except ValidationError as exc:  # the same limits as POST /api/usage/calls
        raise HTTPException(422, exc.errors()[0]["msg"]) from None


@router.post("/api/llm-calls", status_code=201)
async def record_llm_call(
    request: Request, body: LLMCallIn, principal: Annotated[Principal, Depends(require_ingest)]
) -> dict[str, Any]:
    """Price and store one call sent under the seed's ``LLMCall`` names; answered once it is durable.

    The answer is the stored call under the same names (``cost_usd`` a JSON number, ``null`` when the
    model has no price; ``cost_usd_exact`` the exact decimal string) and costspan's ``id``, ``stored``,
    ``duplicate``, ``cost_status`` and ``outcome``.
    """
    done = await store_call(request, _as_call(body), principal)
    if isinstance(done, str):  # cost tracking is off: answered, neither priced nor stored
        return {"id": "", "workspace_id": done, "stored": False, "duplicate": False, "cost_status": "untracked"}
    record, stored = done
    cost = record.cost_total
    return {
        "id": record.trace_id + record.span_id,
        "workspace_id": record.tenant,
        "execution_id": record.workflow,
        "project_id": record.project,
        "provider": record.provider,
        "model": record.model,
        "tokens_prompt": record.tokens.input,
        "tokens_completion": record.tokens.output,
        "tokens_total": record.tokens.input + record.tokens.output,
        "cost_usd": None if cost is None else float(cost),
        "cost_usd_exact": None if cost is None else format(cost, "f"),
        "latency_ms": body.latency_ms,
        "timestamp": datetime.fromtimestamp(record.start_ns / 1e9, UTC).isoformat(),
        "stored": stored,
        "duplicate": not stored,
        "cost_status": record.cost_status,
        "outcome": record.outcome,
    }
