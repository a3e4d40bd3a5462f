"""What the UsageTracker seed's ``/api/usage/*`` routes answer: ``{"success": true, "data": {...}}``.

``data`` holds the seed's fields under the seed's names (money as JSON numbers in USD, as the seed
wrote them) and, beside them, costspan's own richer figures (exact decimal-string costs in the asked
currency, outcomes, unpriced counts). See docs/compatibility.md, "UsageTracker".
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from typing_extensions import TypedDict

from costspan.processor.api._schemas import (
    AggFigures,
    CostOrNull,
    HourRow,
    LatencyFigures,
    ProviderCostRow,
    RealtimeTotals,
)

__all__ = [
    "SeedAggregatesOk",
    "SeedByProviderOk",
    "SeedLatencyOk",
    "SeedRealtimeOk",
]

UsdNumber = Annotated[float, Field(description="USD as a JSON number (the seed's type); exact figures are beside it")]


class SeedProviderRow(AggFigures):
    requests: int
    cost_usd: UsdNumber


class SeedOperationRow(TypedDict):
    requests: int
    cost_usd: UsdNumber


class SeedRealtime(TypedDict):
    total_cost: UsdNumber
    total_requests: int
    avg_latency_ms: int
    by_provider: dict[str, SeedProviderRow]
    by_operation: Annotated[
        dict[str, SeedOperationRow], Field(description="per operation, over the UTC days the 24 hours touch")
    ]
    cached_at: str
    window_hours: int
    currency: str
    totals: RealtimeTotals
    hourly: list[HourRow]


class SeedRealtimeOk(TypedDict):
    success: bool
    data: SeedRealtime


class SeedPeriodRow(AggFigures):
    period: Annotated[str, Field(description="ISO 8601 start of the hour, day or month (UTC)")]
    total_requests: int
    total_cost_usd: UsdNumber
    total_tokens: int


class SeedAggregates(TypedDict):
    start_date: str
    end_date: str
    interval: str
    provider: str | None
    aggregates: list[SeedPeriodRow]
    days: int
    project: str | None
    currency: str


class SeedAggregatesOk(TypedDict):
    success: bool
    data: SeedAggregates


class SeedByProvider(TypedDict):
    total_cost_usd: UsdNumber
    by_provider: dict[str, UsdNumber]
    period_days: int
    days: int
    project: str | None
    currency: str
    total_cost: CostOrNull
    unpriced_calls: int
    blocked_count: int
    providers: list[ProviderCostRow]


class SeedByProviderOk(TypedDict):
    success: bool
    data: SeedByProvider


class Percentiles(TypedDict):
    p50: int
    p95: int
    p99: int


class SeedLatency(LatencyFigures):
    latency_percentiles_ms: Percentiles
    period_days: int
    provider: str | None
    days: int
    by_provider: dict[str, LatencyFigures]


class SeedLatencyOk(TypedDict):
    success: bool
    data: SeedLatency
