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


#: The routes answering in the UsageTracker seed's envelope ``{"success": true, "data": {...}}``.
SEED_ENVELOPED = frozenset(
    {
        "/api/usage/metrics/realtime",
        "/api/usage/metrics/aggregates",
        "/api/usage/costs/by-provider",
        "/api/usage/performance/latency",
    }
)


def _seed(data: dict[str, Any]) -> dict[str, Any]:
    return {"success": True, "data": data}


def test_costs_by_provider_sums_money_exactly_and_merges_rows_by_provider() -> None:
    a = {
        "total_cost_usd": 0.10000001,
        "by_provider": {"openai": 0.10000001},
        "period_days": 30,
        "days": 30,
        "project": None,
        "currency": "USD",
        "total_cost": "0.10000001",
        "unpriced_calls": 0,
        "blocked_count": 1,
        "providers": [{"provider": "openai", **_figures(3, 1, "0.10000001", 100.0), "cost_percent": 100.0}],
    }
    b = {
        "total_cost_usd": 0.30000002,
        "by_provider": {"anthropic": 0.2, "openai": 0.10000002, "local": 0.0},
        "period_days": 30,
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
    answer = merge_answers("/api/usage/costs/by-provider", [_seed(a), _seed(b)])
    assert set(answer) == {"success", "data"} and answer["success"] is True
    merged = answer["data"]
    assert list(merged) == list(a)  # the single-node shape, field for field
    assert merged["total_cost"] == "0.40000003" and merged["days"] == merged["period_days"] == 30
    # the seed's numbers are the exact sums as numbers, not sums of numbers
    assert merged["total_cost_usd"] == float(Decimal("0.40000003")) == 0.40000003
    assert merged["by_provider"] == {"openai": 0.20000003, "anthropic": 0.2, "local": 0.0}
    assert list(merged["by_provider"]) == ["openai", "anthropic", "local"]  # most cost first, as providers
    assert (merged["unpriced_calls"], merged["blocked_count"]) == (2, 2)
    openai, anthropic, local = merged["providers"]  # most cost first
    assert openai["provider"] == "openai" and openai["cost"] == "0.20000003"
    assert (openai["request_count"], openai["error_count"], openai["tokens_used"]) == (4, 1, 44)
    assert openai["avg_latency_ms"] == 125.0  # (3 x 100 + 1 x 200) / 4
    assert openai["cost_percent"] == 50.0 and anthropic["cost_percent"] == 50.0
    assert local["cost"] is None and local["avg_latency_ms"] is None


def test_seed_numbers_of_another_currency_are_summed_as_printed() -> None:
    """In EUR the USD numbers have no exact string beside them: summed as the decimals they print as."""
    a = {"total_cost_usd": 0.1, "by_provider": {"x": 0.1}, "currency": "EUR", "total_cost": "0.09", "providers": []}
    b = {"total_cost_usd": 0.2, "by_provider": {"x": 0.2}, "currency": "EUR", "total_cost": "0.18", "providers": []}
    merged = merge_answers("/api/usage/costs/by-provider", [_seed(a), _seed(b)])["data"]
    assert merged["total_cost_usd"] == 0.3 and merged["by_provider"] == {"x": 0.3} and merged["total_cost"] == "0.27"


def test_realtime_keeps_the_envelope_and_recomputes_the_seed_fields() -> None:
    def data(requests: int, cost: str, latency: float) -> dict[str, Any]:
        row = {"requests": requests, "cost_usd": float(cost), **_figures(requests, 0, cost, latency)}
        return {
            "total_cost": float(cost),
            "total_requests": requests,
            "avg_latency_ms": int(latency),
            "by_provider": {"openai": row},
            "by_operation": {"chat": {"requests": requests, "cost_usd": float(cost)}},
            "cached_at": "2026-12-05T08:00:00Z",
            "window_hours": 24,
            "currency": "USD",
            "totals": {**_figures(requests, 0, cost, latency), "error_rate_percent": 0.0},
            "hourly": [{"hour": "2026-12-05T08:00:00+00:00", **_figures(requests, 0, cost, latency)}],
        }

    a, b = data(1, "0.10000001", 100.0), data(3, "0.20000002", 201.0)
    answer = merge_answers("/api/usage/metrics/realtime", [_seed(a), _seed(b)])
    merged = answer["data"]
    assert set(answer) == {"success", "data"} and list(merged) == list(a)
    assert merged["total_cost"] == 0.30000003 and merged["total_requests"] == 4
    assert merged["avg_latency_ms"] == 175  # (100 + 3 x 201) / 4 = 175.75, as an integer
    assert merged["totals"]["cost"] == "0.30000003" and merged["totals"]["request_count"] == 4
    openai = merged["by_provider"]["openai"]
    assert (openai["requests"], openai["cost_usd"], openai["cost"]) == (4, 0.30000003, "0.30000003")
    assert merged["by_operation"] == {"chat": {"requests": 4, "cost_usd": 0.30000003}}
    (hour,) = merged["hourly"]
    assert hour["cost"] == "0.30000003" and hour["request_count"] == 4


def test_aggregates_merge_periods_and_recompute_the_usd_numbers() -> None:
    def data(period: str, requests: int, cost: str) -> dict[str, Any]:
        row = {
            "period": period,
            "total_requests": requests,
            "total_cost_usd": float(cost),
            "total_tokens": 11 * requests,
        }
        return {
            "start_date": "2026-11-29T00:00:00+00:00",
            "end_date": "2026-12-05T08:00:00+00:00",
            "interval": "day",
            "provider": None,
            "aggregates": [{**row, **_figures(requests, 0, cost, 10.0)}],
            "days": 7,
            "project": None,
            "currency": "USD",
        }

    a, b = data("2026-12-05T00:00:00+00:00", 1, "0.1"), data("2026-12-05T00:00:00+00:00", 2, "0.2")
    c = data("2026-12-04T00:00:00+00:00", 5, "1.00000001")
    merged = merge_answers("/api/usage/metrics/aggregates", [_seed(a), _seed(b), _seed(c)])["data"]
    assert list(merged) == list(a)
    day4, day5 = merged["aggregates"]
    assert (day4["period"], day4["total_cost_usd"], day4["total_requests"]) == (
        c["aggregates"][0]["period"],
        1.00000001,
        5,
    )
    assert (day5["total_cost_usd"], day5["cost"], day5["total_requests"], day5["total_tokens"]) == (0.3, "0.3", 3, 33)


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


def test_top_lists_are_cut_to_the_asked_n() -> None:
    a = {"top_users": [{"user": f"a{i}", "cost_usd": f"{i}.000000"} for i in range(3)]}
    b = {"top_users": [{"user": "a1", "cost_usd": "5.000000"}, {"user": "b", "cost_usd": "0.500000"}]}
    merged = merge_answers("/api/dashboard/summary", [a, b], top=3)
    assert [(r["user"], r["cost_usd"]) for r in merged["top_users"]] == [
        ("a1", "6.000000"),
        ("a2", "2.000000"),
        ("b", "0.500000"),
    ]
    # shards that held fewer than N names gave all of theirs: none is cut
    merged = merge_answers("/api/dashboard/summary", [a, b])
    assert [r["user"] for r in merged["top_users"]] == ["a1", "a2", "b", "a0"]


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


def _latency(requests: int, p50: float, avg: float, errors: int) -> dict[str, Any]:
    rate = round(100 * errors / requests, 2)
    return {
        "request_count": requests,
        "p50_ms": p50,
        "avg_ms": avg,
        "success_rate_percent": 100 - rate,
        "error_rate_percent": rate,
    }


def test_latency_percentiles_are_the_busiest_shards_and_say_so() -> None:
    a = {"latency_percentiles_ms": {"p50": 10}, "days": 7, **_latency(5, 10.0, 12.0, 1), "by_provider": {}}
    b = {"latency_percentiles_ms": {"p50": 99}, "days": 7, **_latency(15, 99.0, 100.0, 0), "by_provider": {}}
    a["by_provider"] = {"openai": _latency(5, 10.0, 12.0, 1)}
    b["by_provider"] = {"openai": _latency(15, 99.0, 100.0, 0), "anthropic": _latency(1, 5.0, 5.0, 0)}
    answer = merge_answers("/api/usage/performance/latency", [_seed(a), _seed(b)])
    assert answer["exact"] is False and set(answer) == {"success", "data", "exact"}
    merged = answer["data"]
    assert list(merged) == list(a)
    assert merged["latency_percentiles_ms"] == {"p50": 99} and merged["p50_ms"] == 99.0  # the busiest shard's
    assert merged["request_count"] == 20 and merged["avg_ms"] == 78.0  # (5 x 12 + 15 x 100) / 20
    assert (merged["error_rate_percent"], merged["success_rate_percent"]) == (5.0, 95.0)
    assert list(merged["by_provider"]) == ["anthropic", "openai"]
    assert merged["by_provider"]["openai"]["request_count"] == 20


@pytest.mark.parametrize("path", sorted(MERGED_PATHS))
def test_one_answer_merges_to_itself(path: str) -> None:
    answer: dict[str, Any] = {"request_count": 2, "cost": "0.5", "providers": [{"provider": "x", "request_count": 2}]}
    if path in SEED_ENVELOPED:
        answer = _seed(answer)
    merged = merge_answers(path, [answer])
    assert {k: v for k, v in merged.items() if k != "exact"} == answer
    assert Decimal(merged.get("data", merged)["cost"]) == Decimal("0.5")


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


def test_a_seed_answer_without_its_envelope_is_not_usable() -> None:
    own = {"success": True, "data": {"total_cost_usd": 0.1, "by_provider": {}, "providers": []}}
    peer = {"success": True, "data": {"total_cost_usd": 0.2, "by_provider": {"calls": 0.2}, "providers": []}}
    assert usable(own, peer)  # a provider named like a count, beside an empty map of ours
    assert not usable(own, {"success": True, "data": None})
    assert not usable(own, {"success": False, "data": peer["data"]})
    assert not usable(own, peer["data"])
    assert not usable(own, {"success": True, "data": {"by_provider": {"x": float("inf")}}})
