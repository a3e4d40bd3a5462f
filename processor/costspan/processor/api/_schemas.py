"""What the usage API's read routes answer: one ``TypedDict`` per body, for the OpenAPI document and mypy.

The routes build their bodies as these types (mypy checks every key and value) and return them
encoded by :class:`~costspan.processor.api._common.JSONBody`, so FastAPI neither validates nor
re-encodes them: the types are the documentation (``response_model=``), not a runtime check.
Money is a decimal string (8 places unless said otherwise), never a float, except in forecasts.
The cost of a set of calls none of which could be priced is ``null``, never a made-up 0: see
:class:`OutcomeFigures` for how unpriced and blocked calls are counted beside it.
This module: ``/health``, ``/v1/usage``, ``/api/usage/*``, ``/api/v2/*``; :mod:`._schemas_views`:
workspaces, executions, analytics and the dashboard.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from typing_extensions import TypedDict

from costspan.processor.store._fields import Identifier, Name, TenantId, TokenCount

__all__ = [
    "AggFigures",
    "AggregatesOut",
    "CostTrendOut",
    "CostsByProviderOut",
    "DecimalStr",
    "ErrorsByProviderOut",
    "EstimateOk",
    "GlobalUsageOut",
    "HealthOut",
    "Identifier",
    "LatencyFigures",
    "LatencyOut",
    "MetricsOk",
    "ModelBreakdown",
    "Name",
    "OutcomeFigures",
    "Percent",
    "RealtimeOut",
    "SeedMoney",
    "SummaryUsageOut",
    "TenantId",
    "TenantUsageOut",
    "TokenCount",
    "TopOperationsOut",
    "V2CostsOk",
]

DecimalStr = Annotated[str, Field(description="an exact decimal amount, as a string", examples=["12.34567890"])]
Percent = Annotated[float, Field(description="percent, 2 decimals")]
CostOrNull = Annotated[
    str | None,
    Field(description="the priced calls' cost (decimal string); null when calls were sent and none could be priced"),
]


class HealthOut(TypedDict):
    status: Literal["healthy", "starting"]
    timestamp: str


class OutcomeFigures(TypedDict):
    """How a set of calls ended. ``request_count`` (the calls sent) = ``ok_count`` + ``degraded_count``
    + ``error_count``; ``blocked_count`` calls were refused by a budget before they were sent (no
    tokens, no cost, not among the requests). ``unpriced_calls`` of the sent calls have no known
    price: their ``unpriced_tokens`` (input + output) are in the token counts, nothing in the cost."""

    ok_count: int
    degraded_count: int
    blocked_count: int
    unpriced_calls: int
    unpriced_tokens: int


# --- /v1/usage (QLens) -------------------------------------------------------------------------------
#: A QLens money field: a JSON number in the asked currency (0 when nothing was priced); ``*_exact``
#: beside it is the decimal string (null when calls were sent and none could be priced).
QLensMoney = Annotated[float, Field(description="money as a JSON number (QLens' type); the exact string is beside")]


class ModelUsage(OutcomeFigures):
    request_count: int
    tokens_used: int
    cost: QLensMoney
    cost_exact: CostOrNull
    avg_latency_ms: float | None


class TenantUsageOut(TypedDict):
    """``scope=tenant``: today, month to date, and per model (of today or of the month, by ``period``)."""

    tenant_id: str
    period: Literal["daily", "monthly"]
    daily_cost: QLensMoney
    daily_cost_exact: CostOrNull
    monthly_cost: QLensMoney
    monthly_cost_exact: CostOrNull
    request_count: int
    unpriced_calls: Annotated[int, Field(description="of request_count (of the day or month, by period)")]
    blocked_count: Annotated[int, Field(description="calls a budget refused (of the day or month, by period)")]
    model_usage: dict[str, ModelUsage]
    budget_limit: QLensMoney | None
    budget_limit_exact: DecimalStr | None
    currency: str
    last_updated: str


class SummaryUsageOut(TypedDict):
    """``scope=summary``."""

    daily_cost: QLensMoney
    daily_cost_exact: CostOrNull
    request_count: int
    unpriced_calls: int
    blocked_count: int
    active_tenants: int
    active_services: int
    budget_utilization_percent: Percent | None
    status: Literal["healthy", "warning", "critical", "blocked"]
    currency: str
    last_updated: str


class GlobalUsageOut(TypedDict):
    """``scope=global`` (admin keys; every tenant, whatever ``X-Tenant-ID`` names)."""

    total_cost_today: QLensMoney
    total_cost_today_exact: CostOrNull
    request_count: int
    unpriced_calls: int
    blocked_count: int
    active_tenants: int
    active_services: int
    budget_utilization_percent: Percent | None
    currency: str
    last_updated: str


# --- /api/usage/* ------------------------------------------------------------------------------------
class AggFigures(OutcomeFigures):
    """The common figures of a set of calls."""

    request_count: int
    error_count: int
    cost: CostOrNull
    input_tokens: int
    output_tokens: int
    tokens_used: int
    avg_latency_ms: float | None


class RealtimeTotals(AggFigures):
    error_rate_percent: Percent


class HourRow(AggFigures):
    hour: str


class RealtimeOut(TypedDict):
    window_hours: int
    currency: str
    totals: RealtimeTotals
    by_provider: dict[str, AggFigures]
    hourly: list[HourRow]


class PeriodRow(AggFigures):
    period: Annotated[str, Field(description="ISO hour, date (YYYY-MM-DD) or month (YYYY-MM)")]


class AggregatesOut(TypedDict):
    interval: Literal["hour", "day", "month"]
    days: int
    provider: str | None
    project: str | None
    currency: str
    data: list[PeriodRow]


class ProviderCostRow(AggFigures):
    provider: str
    cost_percent: Percent


class CostsByProviderOut(TypedDict):
    days: int
    project: str | None
    currency: str
    total_cost: CostOrNull
    unpriced_calls: int
    blocked_count: int
    providers: list[ProviderCostRow]


class LatencyFigures(TypedDict):
    """Percentiles are the upper bound of a 5 %-wide histogram bucket."""

    request_count: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    avg_ms: float | None
    success_rate_percent: Percent | None
    error_rate_percent: Percent | None


class LatencyOut(LatencyFigures):
    days: int
    provider: str | None
    by_provider: dict[str, LatencyFigures]


class OperationRow(AggFigures):
    provider: str
    model: str
    operation: str


class TopOperationsOut(TypedDict):
    days: int
    currency: str
    operations: list[OperationRow]


class CostTrendOut(TypedDict):
    days: int
    currency: str
    daily: Annotated[
        dict[str, dict[str, CostOrNull]], Field(description="date -> provider -> cost (null: none of its calls priced)")
    ]


class ProviderErrors(TypedDict):
    provider: str
    request_count: int
    error_count: int
    error_rate_percent: Percent


class ErrorsByProviderOut(TypedDict):
    days: int
    providers: list[ProviderErrors]


# --- /api/v2/* ---------------------------------------------------------------------------------------
#: The seeds' money: a JSON number, as they wrote it (an exact decimal string is beside it).
SeedMoney = Annotated[float, Field(description="money as a JSON number (the seed's type); exact figure beside it")]


class ModelBreakdown(TypedDict):
    count: int
    input_tokens: int
    output_tokens: int
    cost_usd: SeedMoney
    unpriced_calls: int


class V2Costs(TypedDict):
    tenant_id: str | None
    workflow_id: str | None
    period_days: int
    currency: str
    total_requests: int
    total_input_tokens: int
    total_output_tokens: int
    total_tokens: int
    unpriced_calls: int
    blocked_count: int
    total_cost_usd: Annotated[SeedMoney, Field(description="USD of the priced calls (0 when none was priced)")]
    total_cost_usd_exact: CostOrNull
    total_cost: CostOrNull
    average_cost_per_request: Annotated[float | None, Field(description="USD per priced call; null: none")]
    average_daily_cost: SeedMoney
    average_daily_cost_exact: DecimalStr
    daily_breakdown: Annotated[dict[str, SeedMoney], Field(description="date -> cost, days with calls")]
    daily_breakdown_exact: Annotated[dict[str, CostOrNull], Field(description="date -> cost (null: none priced)")]
    model_breakdown: Annotated[
        dict[str, ModelBreakdown] | None, Field(description="per model (a tenant's report; null for a workflow)")
    ]
    projected_monthly_cost: SeedMoney
    projected_monthly_cost_exact: DecimalStr


class V2CostsOk(TypedDict):
    success: bool
    data: V2Costs


class ModelEstimate(TypedDict):
    provider: str
    estimated_cost_usd: SeedMoney
    estimated_cost_usd_exact: DecimalStr
    estimated_cost: Annotated[DecimalStr, Field(description="in the asked currency")]
    estimated_tokens: int


class Calibration(TypedDict):
    source: Literal["defaults", "ledger"]
    history_calls: int


class Estimate(TypedDict):
    complexity: str
    tech_stack: list[str]
    estimated_input_tokens: int
    estimated_output_tokens: int
    model_estimates: dict[str, ModelEstimate]
    recommended_model: str | None
    calibration: Calibration
    currency: str


class EstimateOk(TypedDict):
    success: bool
    data: Estimate


class MetricsCosts(TypedDict):
    llm_tokens: Annotated[int, Field(description="input + output tokens of the last 30 days")]
    compute_hours: Annotated[float, Field(description="CPU core-hours + GPU hours + sandbox hours, last 30 days")]
    storage_gb: Annotated[float, Field(description="GB-months of storage reported for the last 30 days")]
    estimated_cost: Annotated[SeedMoney, Field(description="USD of LLM calls + compute, last 30 days")]
    estimated_cost_exact: DecimalStr
    total_llm_cost_usd: Annotated[SeedMoney, Field(description="USD of the priced LLM calls, last 30 days")]
    total_llm_cost_usd_exact: DecimalStr
    compute_cost_usd: Annotated[SeedMoney, Field(description="USD of compute resources, last 30 days")]
    compute_costs_usd: Annotated[dict[str, SeedMoney], Field(description="catalog resource -> USD, last 30 days")]
    today: CostOrNull
    month_to_date: CostOrNull
    last_30_days: CostOrNull
    average_cost_per_request: Annotated[
        str | None, Field(description="of the priced calls of the last 30 days; null when none was priced")
    ]
    unpriced_requests_30d: int
    by_provider_30d: dict[str, CostOrNull]


class MetricsRequests(TypedDict):
    today: int
    last_30_days: int
    errors_30d: int
    blocked_30d: int


class MetricsTokens(TypedDict):
    input_30d: int
    output_30d: int


class Metrics(TypedDict):
    tenant_id: str | None
    currency: str
    costs: MetricsCosts
    requests: MetricsRequests
    tokens: MetricsTokens
    active_tenants_today: int


class MetricsOk(TypedDict):
    success: bool
    data: Metrics
    #: the same block as ``data.costs``, also at the top: the seed's guide shows ``{"costs": {...}}``
    costs: MetricsCosts
