"""The JSON bodies of the budget routes: a pre-call check, a settlement, a seed gateway's budget.

Identifiers and counts follow the edge's rules (:mod:`costspan.processor.store._fields`), the same as
a span's: a check cannot name a tenant no span could, nor open counters for unbounded garbage.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from costspan.pricing import MAX_COUNT
from costspan.processor.budgets._model import DEFAULT_THRESHOLDS, EMAIL_PATTERN, MAX_ALERT_EMAILS, Mode
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


#: Phase 17's default ``alert_threshold_percent``.
PHASE17_ALERT_PERCENT = 80


class SeedBudget(BaseModel):
    """A seed's budget body for a workspace or project.

    The gateway's: daily and/or monthly USD limits, ``alert_thresholds``, ``mode``. Phase 17's:
    ``monthly_budget_usd`` (the monthly limit), ``alert_threshold_percent`` (alerts at it and at
    100 %; default 80), ``alert_emails``, ``hard_limit`` (true: calls over the limit are refused; false,
    the default: alerts only). Both spellings of one thing in one body is an error, not a guess.
    """

    model_config = ConfigDict(extra="forbid")

    daily_limit: Decimal | None = Field(default=None, ge=0, allow_inf_nan=False)
    monthly_limit: Decimal | None = Field(default=None, ge=0, allow_inf_nan=False)
    alert_thresholds: list[int] = Field(default_factory=lambda: list(DEFAULT_THRESHOLDS))
    mode: Mode = Mode.HARD
    timezone: str = "UTC"
    monthly_budget_usd: Decimal | None = Field(default=None, ge=0, le=MAX_COST_USD, allow_inf_nan=False)
    alert_threshold_percent: int | None = Field(default=None, ge=1, le=100)
    alert_emails: list[Annotated[str, Field(max_length=254, pattern=EMAIL_PATTERN)]] = Field(
        default_factory=list, max_length=MAX_ALERT_EMAILS
    )
    hard_limit: bool | None = None

    @model_validator(mode="after")
    def _one_spelling_each(self) -> SeedBudget:
        given = self.model_fields_set
        for seed, ours in (
            ("monthly_budget_usd", "monthly_limit"),
            ("alert_threshold_percent", "alert_thresholds"),
            ("hard_limit", "mode"),
        ):
            if seed in given and ours in given:
                raise ValueError(f"give {seed} or {ours}, not both")
        return self

    @property
    def monthly(self) -> Decimal | None:
        return self.monthly_budget_usd if "monthly_budget_usd" in self.model_fields_set else self.monthly_limit

    @property
    def seed_spelling(self) -> bool:
        """Phase 17's body: ``monthly_budget_usd`` given (its defaults then apply to what is left out)."""
        return "monthly_budget_usd" in self.model_fields_set

    @property
    def thresholds(self) -> list[int]:
        if self.alert_threshold_percent is None:
            if self.seed_spelling and "alert_thresholds" not in self.model_fields_set:
                return [PHASE17_ALERT_PERCENT, 100]  # Phase 17's documented default: 80 %
            return self.alert_thresholds
        return sorted({self.alert_threshold_percent, 100})

    @property
    def budget_mode(self) -> Mode:
        if self.hard_limit is None:
            if self.seed_spelling and "mode" not in self.model_fields_set:
                return Mode.SOFT  # Phase 17: a hard limit is opted into with hard_limit: true
            return self.mode
        return Mode.HARD if self.hard_limit else Mode.SOFT
