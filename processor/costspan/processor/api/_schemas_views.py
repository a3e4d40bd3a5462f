"""What the workspace, execution, analytics and dashboard routes answer (see :mod:`._schemas`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from typing_extensions import TypedDict

from costspan.processor.api._schemas import AggFigures, CostOrNull, DecimalStr, Percent

__all__ = [
    "DashboardOut",
    "ExecutionCostsOut",
    "ForecastFigures",
    "ProvidersOut",
    "SessionsOut",
    "StatsOut",
    "TokenEfficiencyOut",
    "TopUsersOut",
    "WorkspaceCostsOut",
    "WorkspaceForecastOut",
]


# --- workspaces and executions ----------------------------------------------------------------------
class NamedCost(TypedDict):
    cost: CostOrNull
    request_count: int
    tokens: int
    unpriced_calls: int
    blocked_count: int


class TrendDay(TypedDict):
    date: str
    llm_cost: DecimalStr
    compute_cost: DecimalStr


Number = Annotated[float, Field(description="money as a JSON number (the seed's type); *_exact: the exact decimal")]


class LlmPart(TypedDict):
    total: Number
    total_exact: DecimalStr
    tokens: int
    calls: int


class ComputePart(TypedDict):
    total: Number
    total_exact: DecimalStr
    records: int


class Breakdown(TypedDict):
    llm: LlmPart
    compute: ComputePart


class ModelCostRow(TypedDict):
    provider: str
    model: str
    cost: Annotated[float | None, Field(description="null when calls were sent and none could be priced")]
    cost_exact: CostOrNull
    tokens: int
    calls: int
    unpriced_calls: int
    blocked_count: int


class ResourceCostRow(TypedDict):
    resource_type: str
    cost: Number
    cost_exact: DecimalStr
    usage: Annotated[float, Field(description="the sum of the reported usage values (amount / usage_value)")]
    count: int


class Trends(TypedDict):
    daily: list[TrendDay]
    forecast_eom: float
    forecast_confidence: Literal["high", "medium", "low"]


class CostsBody(TypedDict):
    total_cost: Number
    llm_cost: Number
    compute_cost: Number
    total_cost_exact: DecimalStr
    llm_cost_exact: DecimalStr
    compute_cost_exact: DecimalStr
    request_count: int
    unpriced_calls: Annotated[int, Field(description="LLM calls with no known price: nothing in llm_cost")]
    blocked_count: Annotated[int, Field(description="LLM calls a budget refused before they were sent")]
    breakdown: Breakdown
    by_model: list[ModelCostRow]
    by_resource: list[ResourceCostRow]
    by_project: dict[str, NamedCost]
    daily_trend: list[TrendDay]


class WorkspaceCostsOut(CostsBody):
    workspace_id: str
    period: Literal["day", "week", "month"]
    currency: str
    forecast_eom: float
    trends: Trends


class ForecastFigures(TypedDict):
    """A statistical estimate: money here is a number, not an exact decimal string."""

    current_month_spent: float
    llm_cost: float
    compute_cost: float
    days_elapsed: int
    total_days: int
    daily_average: float
    forecast_end_of_month: float
    forecast_confidence: Annotated[float, Field(description="0 to 1: confidence_score")]
    projection_accuracy: Literal["high", "medium", "low"]
    month_to_date: float
    days_left_in_month: int
    forecast_eom: float
    forecast_low: float
    forecast_high: float
    confidence: Literal["high", "medium", "low"]
    confidence_score: float
    days_of_data: int
    note: str


class WorkspaceForecastOut(ForecastFigures):
    workspace_id: str
    currency: str


class DayCost(TypedDict):
    date: str
    cost: DecimalStr


class StatsOut(TypedDict):
    workspace_id: str
    days: int
    currency: str
    total_cost: Annotated[CostOrNull, Field(description="LLM + compute")]
    llm_cost: CostOrNull
    compute_cost: DecimalStr
    request_count: int
    error_count: int
    unpriced_count: int
    unpriced_calls: Annotated[int, Field(description="the same as unpriced_count, named as in every aggregate")]
    blocked_count: int
    compute_records: int
    avg_cost_per_request: Annotated[DecimalStr | None, Field(description="of the priced LLM calls")]
    max_day: Annotated[DayCost | None, Field(description="LLM + compute")]
    min_day: DayCost | None
    by_operation: dict[str, CostOrNull]
    by_resource: dict[str, DecimalStr]
    models_used: int


class ExecutionLlm(TypedDict):
    cost: Number
    tokens: int
    calls: int


class ExecutionCompute(TypedDict):
    cost: Number
    by_type: dict[str, dict[str, float]]


class ExecutionBreakdown(TypedDict):
    llm: ExecutionLlm
    compute: ExecutionCompute


class ExecutionCostsOut(TypedDict):
    execution_id: str
    currency: str
    total_cost: Number
    llm_cost: Number
    compute_cost: Number
    total_cost_exact: DecimalStr
    llm_cost_exact: DecimalStr
    compute_cost_exact: DecimalStr
    breakdown: ExecutionBreakdown
    request_count: int
    unpriced_calls: int
    blocked_count: int
    input_tokens: int
    output_tokens: int
    by_resource: dict[str, DecimalStr]


# --- analytics ---------------------------------------------------------------------------------------
class UserRow(AggFigures):
    user_id: str


class TopUsersOut(TypedDict):
    days: int
    currency: str
    users: list[UserRow]


class ProviderRow(AggFigures):
    provider: str
    avg_cost_per_request: DecimalStr | None
    cost_per_1k_tokens: DecimalStr | None
    p95_latency_ms: float | None
    error_rate_percent: Percent


class ProvidersOut(TypedDict):
    days: int
    currency: str
    providers: list[ProviderRow]


class Efficiency(TypedDict):
    cost_per_1k_tokens: DecimalStr | None
    output_input_ratio: float | None


class ModelEfficiency(Efficiency):
    provider: str
    model: str
    request_count: int
    input_tokens: int
    output_tokens: int
    cache_read_percent: Percent
    avg_tokens_per_request: float | None
    unpriced_calls: int
    unpriced_tokens: int


class TokenEfficiencyOut(TypedDict):
    days: int
    currency: str
    overall: Efficiency
    models: list[ModelEfficiency]


class SessionRow(AggFigures):
    session_id: str
    tenant_id: str


class SessionsOut(TypedDict):
    days: int
    currency: str
    session_count: int
    avg_cost_per_session: DecimalStr | None
    avg_calls_per_session: float | None
    top_sessions: list[SessionRow]


# --- the dashboard -----------------------------------------------------------------------------------
Usd6 = Annotated[str, Field(description="USD, 6 decimals, as a string")]


class DashDay(TypedDict):
    date: str
    cost: Usd6


class DashTenant(TypedDict):
    tenant: str
    calls: int
    cost_usd: Usd6 | None
    unpriced_calls: int
    blocked_calls: int


class DashModel(TypedDict):
    provider: str
    model: str
    calls: int
    cost_usd: Usd6 | None
    unpriced_calls: int
    blocked_calls: int


class DashBudget(TypedDict):
    id: str
    scope: str
    unit: str
    period: str
    spent: Usd6
    limit: DecimalStr
    utilization_percent: float
    status: str


class DashWorkflow(TypedDict):
    workflow: str
    cost_usd: Usd6


class DashUser(TypedDict):
    user: str
    cost_usd: Usd6


class DashUnpriced(TypedDict):
    provider: str
    model: str
    calls: int


class DashboardOut(TypedDict):
    tenant: str | None
    days: int
    currency: Literal["USD"]
    total_cost_usd: Usd6
    total_calls: int
    unpriced_calls: int
    blocked_calls: int
    outcomes: Annotated[dict[str, int], Field(description="calls by outcome: ok, degraded, blocked, error")]
    daily: list[DashDay]
    by_tenant: list[DashTenant]
    by_model: list[DashModel]
    budgets: list[DashBudget]
    top_workflows: list[DashWorkflow]
    top_users: list[DashUser]
    unpriced_models: list[DashUnpriced]
    generated_at: str
