"""Merging the shards' answers of one admin query: sums exact, rows by key, averages weighted."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from costspan.processor.cluster._merge import MERGED_PATHS, merge_answers
from costspan.processor.cluster._usable import usable


def _figures(requests: int, errors: int, cost: str | None, latency: float | None) -> dict[str, Any]:
    return {
        "request_count": requests,
        "error_count": errors,
        "cost": cost,
        "input_tokens": 10 * requests,
        "output_tokens": requests,
        "tokens_used": 11 * requests,
        "avg_latency_ms": latency,
        "ok_count": requests - errors,
        "degraded_count": 0,
        "blocked_count": 1,
        "unpriced_calls": 0 if cost is not None else requests,
        "unpriced_tokens": 0,
    }


def test_costs_by_provider_sums_money_exactly_and_merges_rows_by_provider() -> None:
    a = {
        "days": 30,
        "project": None,
        "currency": "USD",
        "total_cost": "0.10000001",
        "unpriced_calls": 0,
        "blocked_count": 1,
        "providers": [{"provider": "openai", **_figures(3, 1, "0.10000001", 100.0), "cost_percent": 100.0}],
    }
    b = {
        "days": 30,
        "project": None,
        "currency": "USD",
        "total_cost": "0.30000002",
        "unpriced_calls": 2,
        "blocked_count": 1,
        "providers": [
            {"provider": "anthropic", **_figures(1, 0, "0.20000000", 50.0), "cost_percent": 66.67},
            {"provider": "openai", **_figures(1, 0, "0.10000002", 200.0), "cost_percent": 33.33},
            {"provider": "local", **_figures(2, 0, None, None), "cost_percent": 0.0},
        ],
    }
    merged = merge_answers("/api/usage/costs/by-provider", [a, b])
    assert merged["total_cost"] == "0.40000003" and merged["days"] == 30 and merged["currency"] == "USD"
    assert (merged["unpriced_calls"], merged["blocked_count"]) == (2, 2)
    openai, anthropic, local = merged["providers"]  # most cost first
    assert openai["provider"] == "openai" and openai["cost"] == "0.20000003"
    assert (openai["request_count"], openai["error_count"], openai["tokens_used"]) == (4, 1, 44)
    assert openai["avg_latency_ms"] == 125.0  # (3 x 100 + 1 x 200) / 4
    assert openai["cost_percent"] == 50.0 and anthropic["cost_percent"] == 50.0
    assert local["cost"] is None and local["avg_latency_ms"] is None


def test_daily_rows_merge_by_date_and_keep_their_places() -> None:
    a = {"total_cost_usd": "1.000000", "total_calls": 2, "daily": [{"date": "2026-12-04", "cost": "1.000000"}]}
    b = {
        "total_cost_usd": "0.500000",
        "total_calls": 1,
        "daily": [{"date": "2026-12-05", "cost": "0.250000"}, {"date": "2026-12-04", "cost": "0.250000"}],
    }
    merged = merge_answers("/api/dashboard/summary", [a, b])
    assert merged["total_cost_usd"] == "1.500000" and merged["total_calls"] == 3
    assert merged["daily"] == [{"date": "2026-12-04", "cost": "1.250000"}, {"date": "2026-12-05", "cost": "0.250000"}]


def test_top_lists_keep_the_shards_length() -> None:
    a = {"top_users": [{"user": f"a{i}", "cost_usd": f"{i}.000000"} for i in range(3)]}
    b = {"top_users": [{"user": "a1", "cost_usd": "5.000000"}, {"user": "b", "cost_usd": "0.500000"}]}
    merged = merge_answers("/api/dashboard/summary", [a, b])
    assert [(r["user"], r["cost_usd"]) for r in merged["top_users"]] == [
        ("a1", "6.000000"),
        ("a2", "2.000000"),
        ("b", "0.500000"),
    ]


def test_cost_trend_sums_each_day_and_provider() -> None:
    a = {"days": 7, "currency": "USD", "daily": {"2026-12-05": {"openai": "1.00000000"}}}
    b = {"days": 7, "currency": "USD", "daily": {"2026-12-05": {"openai": "0.5", "anthropic": None}}}
    merged = merge_answers("/api/usage/costs/trend", [a, b])
    assert merged["daily"] == {"2026-12-05": {"openai": "1.50000000", "anthropic": None}}


def test_error_rates_are_recomputed_from_the_merged_counts() -> None:
    a = {"providers": [{"provider": "openai", "request_count": 1, "error_count": 1, "error_rate_percent": 100.0}]}
    b = {"providers": [{"provider": "openai", "request_count": 3, "error_count": 0, "error_rate_percent": 0.0}]}
    (row,) = merge_answers("/api/usage/errors/by-provider", [a, b])["providers"]
    assert (row["request_count"], row["error_rate_percent"]) == (4, 25.0)


def test_global_usage_sums_tenants_and_takes_the_largest_service_count() -> None:
    a = {"total_cost_today": "1.00000000", "request_count": 2, "active_tenants": 2, "active_services": 3}
    b = {"total_cost_today": None, "request_count": 1, "active_tenants": 1, "active_services": 2}
    merged = merge_answers("/v1/usage", [a, b])
    assert merged == {"total_cost_today": "1.00000000", "request_count": 3, "active_tenants": 3, "active_services": 3}


def test_latency_percentiles_are_the_busiest_shards_and_say_so() -> None:
    a = {"request_count": 5, "p50_ms": 10.0}
    b = {"request_count": 50, "p50_ms": 99.0}
    assert merge_answers("/api/usage/performance/latency", [a, b]) == {**b, "exact": False}


@pytest.mark.parametrize("path", sorted(MERGED_PATHS))
def test_one_answer_merges_to_itself(path: str) -> None:
    answer = {"request_count": 2, "cost": "0.5", "providers": [{"provider": "x", "request_count": 2}]}
    merged = merge_answers(path, [answer])
    assert {k: v for k, v in merged.items() if k != "exact"} == answer
    assert Decimal(merged["cost"]) == Decimal("0.5")


def test_qlens_money_numbers_follow_their_exact_sums() -> None:
    """``/v1/usage`` carries money as a number beside an exact string: both are merged, not the first's."""
    a = {
        "daily_cost": 0.1,
        "daily_cost_exact": "0.10000000",
        "request_count": 1,
        "model_usage": {"m": {"request_count": 1, "cost": 0.1, "cost_exact": "0.10000000", "avg_latency_ms": 10.0}},
    }
    b = {
        "daily_cost": 0.2,
        "daily_cost_exact": "0.20000000",
        "request_count": 3,
        "model_usage": {"m": {"request_count": 3, "cost": 0.2, "cost_exact": "0.20000000", "avg_latency_ms": 30.0}},
    }
    merged = merge_answers("/v1/usage", [a, b])
    assert merged["daily_cost_exact"] == "0.30000000" and merged["daily_cost"] == 0.3
    assert merged["request_count"] == 4
    assert merged["model_usage"]["m"] == {
        "request_count": 4,
        "cost": 0.3,
        "cost_exact": "0.30000000",
        "avg_latency_ms": 25.0,
    }


@pytest.mark.parametrize(
    "answer",
    [
        [1, 2],
        "text",
        None,
        {"request_count": "1"},
        {"request_count": True},
        {"cost": "NaN"},
        {"cost": "lots"},
        {"daily_cost": float("inf")},
        {"avg_latency_ms": float("nan")},
        {"providers": "rows"},
        {"providers": [{"provider": ["unhashable"], "request_count": 1}]},
        {"totals": {"request_count": 1.5}},
    ],
)
def test_an_answer_the_merge_cannot_rely_on_is_not_usable(answer: Any) -> None:
    own = {"request_count": 1, "cost": "0.1", "providers": [], "totals": {"request_count": 1}}
    assert not usable(own, answer)


def test_an_answer_nested_too_deep_is_not_usable() -> None:
    deep: dict[str, Any] = {}
    for _ in range(40):
        deep = {"a": deep}
    assert not usable({}, {"x": deep}) and usable({}, {"x": {"a": {"a": {}}}})


def test_a_shards_own_answers_are_usable() -> None:
    own: dict[str, Any] = {"request_count": 1, "cost": "0.1", "avg_latency_ms": 1.0}
    own["providers"] = [{"provider": "openai", "cost": None}]
    peer: dict[str, Any] = {"request_count": 7, "cost": None, "avg_latency_ms": 2, "providers": []}
    peer["extra"] = {"x": [1, "y"]}
    assert usable(own, peer) and usable(peer, own)


def test_names_chosen_by_tenants_never_decide_a_type() -> None:
    """A provider or model named like a field (``request_count``, ``cost``) is data, not a field."""
    own: dict[str, Any] = {
        "daily": {"2026-12-05": {"openai": "0.1"}},
        "by_provider": {"openai": {"request_count": 1, "cost": "0.1"}},
    }
    peer: dict[str, Any] = {
        "daily": {"2026-12-04": {"request_count": "0.2", "cost": "0.3"}},
        "by_provider": {"cost": {"request_count": 2, "cost": "0.2"}, "calls": {"request_count": 3, "cost": None}},
    }
    assert usable(own, peer)
    assert not usable(own, {"by_provider": {"cost": {"request_count": "2"}}})
