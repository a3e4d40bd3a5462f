"""What the usage API's read routes answer: one ``TypedDict`` per body, for the OpenAPI document and mypy.

The routes build their bodies as these types (mypy checks every key and value) and return them
encoded by :class:`~costspan.processor.api._common.JSONBody`, so FastAPI neither validates nor
re-encodes them: the types are the documentation (``response_model=``), not a runtime check.
Money is a decimal string (8 places unless said otherwise), never a float, except in forecasts.
This module: ``/health``, ``/v1/usage``, ``/api/usage/*``, ``/api/v2/*``; :mod:`._schemas_views`:
workspaces, executions, analytics and the dashboard.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from typing_extensions import TypedDict

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
    "LatencyFigures",
    "LatencyOut",
    "MetricsOk",
    "Percent",
    "RealtimeOut",
    "SummaryUsageOut",
    "TenantUsageOut",
    "TopOperationsOut",
    "V2CostsOk",
]

DecimalStr = Annotated[str, Field(description="an exact decimal amount, as a string", examples=["12.34567890"])]
Percent = Annotated[float, Field(description="percent, 2 decimals")]


class HealthOut(TypedDict):
    status: Literal["healthy", "starting"]
    timestamp: str


# --- /v1/usage ---------------------------------------------------------------------------------------
class ModelUsage(TypedDict):
    request_count: int
    tokens_used: int
    cost: DecimalStr
    avg_latency_ms: float | None


class TenantUsageOut(TypedDict):
    """``scope=tenant``: today, month to date, and per model (of today or of the month, by ``period``)."""

    tenant_id: str
    period: Literal["daily", "monthly"]
    daily_cost: DecimalStr
    monthly_cost: DecimalStr
    request_count: int
    model_usage: dict[str, ModelUsage]
    budget_limit: DecimalStr | None
    currency: str
    last_updated: str


class SummaryUsageOut(TypedDict):
    """``scope=summary``."""

    daily_cost: DecimalStr
    request_count: int
    active_tenants: int
    active_services: int
    budget_utilization_percent: Percent | None
    status: Literal["healthy", "warning", "critical", "blocked"]
    last_updated: str


class GlobalUsageOut(TypedDict):
    """``scope=global`` (admin keys)."""

    total_cost_today: DecimalStr
    request_count: int
    active_tenants: int
    active_services: int
    budget_utilization_percent: Percent | None
    last_updated: str


# --- /api/usage/* ------------------------------------------------------------------------------------
class AggFigures(TypedDict):
    """The common figures of a set of calls."""

    request_count: int
    error_count: int
    cost: DecimalStr
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
    total_cost: DecimalStr
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
    daily: Annotated[dict[str, dict[str, DecimalStr]], Field(description="date -> provider -> cost")]


class ProviderErrors(TypedDict):
    provider: str
    request_count: int
    error_count: int
    error_rate_percent: Percent


class ErrorsByProviderOut(TypedDict):
    days: int
    providers: list[ProviderErrors]


# --- /api/v2/* ---------------------------------------------------------------------------------------
class V2Costs(TypedDict):
    tenant_id: str | None
    workflow_id: str | None
    period_days: int
    currency: str
    total_requests: int
    total_cost_usd: DecimalStr
    total_cost: DecimalStr
    average_daily_cost: DecimalStr
    daily_breakdown: Annotated[dict[str, DecimalStr], Field(description="date -> cost")]
    projected_monthly_cost: DecimalStr


class V2CostsOk(TypedDict):
    success: bool
    data: V2Costs


class ModelEstimate(TypedDict):
    provider: str
    estimated_cost_usd: DecimalStr
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
    today: DecimalStr
    month_to_date: DecimalStr
    last_30_days: DecimalStr
    average_cost_per_request: DecimalStr
    unpriced_requests_30d: int
    by_provider_30d: dict[str, DecimalStr]


class MetricsRequests(TypedDict):
    today: int
    last_30_days: int
    errors_30d: int


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
