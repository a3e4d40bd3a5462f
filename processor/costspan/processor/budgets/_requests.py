"""The JSON bodies of the budget routes: a pre-call check, a settlement, a seed gateway's budget.

Identifiers and counts follow the edge's rules (:mod:`costspan.processor.store._fields`), the same as
a span's: a check cannot name a tenant no span could, nor open counters for unbounded garbage.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from costspan.pricing import MAX_COUNT
from costspan.processor.budgets._model import DEFAULT_THRESHOLDS, Mode
from costspan.processor.store._fields import Identifier, TenantId, TokenCount
from costspan.processor.store._validate import EARLIEST_START_NS, MAX_COST_USD

__all__ = ["CheckRequest", "SeedBudget", "SettleRequest"]

#: The tokens of one call, as pricing takes them (a stored call may carry more: it is then unpriced).
CallTokens = Annotated[int, Field(ge=0, le=MAX_COUNT, description=f"tokens of one call, 0 to {MAX_COUNT}")]


class CheckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: TenantId | None = None
    service: Identifier | None = None
    workflow: Identifier | None = None
    user: Identifier | None = None
    project: Identifier | None = None
    provider: Identifier | None = None
    model: Identifier | None = None
    input_tokens: CallTokens | None = None
    max_tokens: CallTokens | None = None


class SettleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reservation_id: Identifier
    cost_usd: Decimal | None = Field(default=None, ge=0, le=MAX_COST_USD, allow_inf_nan=False)
    tokens: TokenCount | None = None
    requests: int = Field(default=1, ge=0, le=1_000_000)
    start_time: float | None = Field(
        default=None,
        ge=EARLIEST_START_NS / 1e9,
        allow_inf_nan=False,
        description="when the call started (Unix seconds): the budget periods containing it are charged; "
        "default now; a time ahead of the server's clock is taken as now",
    )


class SeedBudget(BaseModel):
    """The seed gateway's budget body: daily and/or monthly USD limits for a workspace or project."""

    model_config = ConfigDict(extra="forbid")

    daily_limit: Decimal | None = Field(default=None, ge=0, allow_inf_nan=False)
    monthly_limit: Decimal | None = Field(default=None, ge=0, allow_inf_nan=False)
    alert_thresholds: list[int] = Field(default_factory=lambda: list(DEFAULT_THRESHOLDS))
    mode: Mode = Mode.HARD
    timezone: str = "UTC"
