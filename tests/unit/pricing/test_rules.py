"""Exact Decimal prices for every pricing rule, computed by hand against a small test catalog."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costspan.pricing import Pricer, PricingError, Usage, load_catalog

CATALOG = Path(__file__).parent / "data" / "rules_catalog.json"
M = 1_000_000
D = Decimal


@pytest.fixture(scope="module")
def pricer() -> Pricer:
    return Pricer(load_catalog([CATALOG], packaged=False))


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# (model, provider, usage, options, expected total)
CASES: list[tuple[str, str | None, dict[str, int], dict[str, Any], str]] = [
    # flat prices, spelling
    ("simple-1", None, {"input_tokens": 1000, "output_tokens": 500}, {}, "0.002"),
    ("simple-1", None, {}, {}, "0"),
    ("simple-1", None, {"input_tokens": M, "output_tokens": M}, {}, "3"),
    ("simple-1", None, {"input_tokens": 1, "output_tokens": 1}, {}, "0.000003"),
    ("simple-1", "acme-ai", {"input_tokens": 2000}, {}, "0.002"),
    ("SIMPLE-1", None, {"input_tokens": 1000}, {}, "0.001"),
    (" simple-1 ", None, {"input_tokens": 1000}, {}, "0.001"),
    # cache reads and writes are inside input_tokens and never billed twice
    ("cached-1", None, {"input_tokens": 10000, "cache_read_tokens": 4000, "output_tokens": 1000}, {}, "0.0342"),
    ("cached-1", None, {"input_tokens": 10000, "cache_write_tokens": 2000}, {}, "0.0315"),
    (
        "cached-1",
        None,
        {"input_tokens": 10000, "cache_write_tokens": 2000, "cache_write_1h_tokens": 500},
        {},
        "0.032625",
    ),
    ("cached-1", None, {"input_tokens": 10000, "cache_read_tokens": 5000, "cache_write_tokens": 5000}, {}, "0.02025"),
    ("cached-1", None, {"input_tokens": 1000, "cache_write_tokens": 1000, "cache_write_1h_tokens": 1000}, {}, "0.006"),
    # long-context cliff: strictly above the threshold, every token of the call at the tier price
    ("tiered-1", None, {"input_tokens": 200000, "output_tokens": 1000}, {}, "0.26"),
    ("tiered-1", None, {"input_tokens": 200001, "output_tokens": 1000}, {}, "0.5150025"),
    ("tiered-1", None, {"input_tokens": 300000, "cache_read_tokens": 100000}, {}, "0.525"),
    ("tiered-1", None, {"input_tokens": 150000, "cache_read_tokens": 100000}, {}, "0.075"),
    ("tiered-1", None, {"input_tokens": 250000, "cache_write_tokens": 100000}, {}, "0.625"),
    ("multi-tier-1", None, {"input_tokens": 100000}, {}, "0.1"),
    ("multi-tier-1", None, {"input_tokens": 100001}, {}, "0.200002"),
    ("multi-tier-1", None, {"input_tokens": 600000}, {}, "1.8"),
    # prices that change over time: priced by the call's start time
    ("dated-1", None, {"input_tokens": M, "output_tokens": M}, {"at": utc(2025, 6, 9, 23, 59, 59)}, "50"),
    ("dated-1", None, {"input_tokens": M, "output_tokens": M}, {"at": utc(2025, 6, 10)}, "10"),
    ("dated-1", None, {"input_tokens": M, "output_tokens": M}, {"at": 1_700_000_000.0}, "50"),
    (
        "dated-1",
        None,
        {"input_tokens": M, "output_tokens": M},
        {"at": datetime(2025, 6, 10, 1, 0, tzinfo=timezone(timedelta(hours=2)))},
        "50",
    ),
    # reasoning is inside output; priced apart only where its price differs
    ("reasoner-1", None, {"input_tokens": 1000, "output_tokens": 3000, "reasoning_tokens": 2000}, {}, "0.021"),
    ("reasoner-1", None, {"input_tokens": 1000, "output_tokens": 3000}, {}, "0.013"),
    ("cached-1", None, {"input_tokens": 1000, "output_tokens": 2000, "reasoning_tokens": 1500}, {}, "0.033"),
    # audio tokens inside input/output at their own prices
    (
        "audio-1",
        None,
        {"input_tokens": 10000, "input_audio_tokens": 2000, "output_tokens": 1000, "output_audio_tokens": 500},
        {},
        "0.145",
    ),
    # per request (Cerebras-style), per image, per web search
    ("perreq-1", None, {"input_tokens": 1000, "output_tokens": 1000}, {}, "0.0007"),
    ("perreq-1", None, {"requests": 3}, {}, "0.0015"),
    ("images-1", None, {"input_tokens": 100, "images": 4}, {}, "0.1605"),
    ("search-1", None, {"input_tokens": 1000, "output_tokens": 1000, "web_searches": 3}, {}, "0.032"),
    ("search-1", None, {"input_tokens": 1000, "output_tokens": 1000}, {}, "0.002"),
    # service tiers: explicit variants (field by field, dated) and provider multipliers
    ("variant-1", None, {"input_tokens": M, "output_tokens": M}, {}, "10"),
    ("variant-1", None, {"input_tokens": M, "output_tokens": M}, {"tier": "priority"}, "17.5"),
    ("variant-1", None, {"input_tokens": M, "output_tokens": M}, {"tier": "batch", "at": utc(2025, 6, 1)}, "8.5"),
    # before the tier's first dated price, the provider's batch multiplier (0.5) applies
    ("variant-1", None, {"input_tokens": M, "output_tokens": M}, {"tier": "batch", "at": utc(2024, 6, 1)}, "5"),
    ("variant-1", None, {"input_tokens": M, "output_tokens": M}, {"tier": "flex"}, "5"),
    ("simple-1", None, {"input_tokens": M, "output_tokens": M}, {"tier": "batch"}, "1.5"),
    # daily peak-hour windows (UTC), start inclusive, end exclusive
    ("peak-1", None, {"input_tokens": M, "output_tokens": M}, {"at": utc(2025, 3, 1, 12)}, "1.37"),
    ("peak-1", None, {"input_tokens": M, "output_tokens": M}, {"at": utc(2025, 3, 1, 20)}, "0.685"),
    ("peak-1", None, {"input_tokens": M, "output_tokens": M}, {"at": utc(2025, 3, 1, 0, 30)}, "1.37"),
    ("peak-1", None, {"input_tokens": M, "output_tokens": M}, {"at": utc(2025, 3, 1, 16, 30)}, "0.685"),
    # matching: clauses, vendor prefixes, fallbacks, free local runtimes
    ("matchy-1-20250101", None, {"input_tokens": M}, {}, "7"),
    ("acmeai/matchy-1", None, {"input_tokens": M}, {}, "7"),
    ("acme-ai/matchy-1", None, {"input_tokens": M}, {}, "7"),
    ("anything-at-all", "local", {"input_tokens": M, "output_tokens": M}, {}, "0"),
    ("simple-1", "gateway", {"input_tokens": 1000}, {}, "0.001"),
    # currencies with dated rates; before the first rate the earliest one applies
    ("simple-1", None, {"input_tokens": M, "output_tokens": M}, {"currency": "EUR", "at": utc(2024, 6, 1)}, "2.7"),
    ("simple-1", None, {"input_tokens": M, "output_tokens": M}, {"currency": "EUR", "at": utc(2025, 6, 1)}, "2.4"),
    ("simple-1", None, {"input_tokens": M, "output_tokens": M}, {"currency": "JPY", "at": utc(2025, 6, 1)}, "450"),
    ("simple-1", None, {"input_tokens": M, "output_tokens": M}, {"currency": "EUR", "at": utc(2023, 1, 1)}, "2.7"),
    # tenant overrides: discount, explicit prices, both, and currency on top
    ("simple-1", None, {"input_tokens": M, "output_tokens": M}, {"tenant": "bigco"}, "2.55"),
    ("simple-1", None, {"input_tokens": M, "output_tokens": M}, {"tenant": "vip"}, "1.5"),
    ("simple-1", None, {"input_tokens": M, "output_tokens": M}, {"tenant": "both"}, "1.35"),
    ("cached-1", None, {"input_tokens": M}, {"tenant": "vip"}, "3"),
    (
        "simple-1",
        None,
        {"input_tokens": M, "output_tokens": M},
        {"tenant": "bigco", "currency": "EUR", "at": utc(2025, 6, 1)},
        "2.04",
    ),
    ("simple-1", None, {"input_tokens": M, "output_tokens": M}, {"tenant": "nobody"}, "3"),
    ("tiered-1", None, {"input_tokens": 300000, "output_tokens": 10000}, {"tenant": "bigco"}, "0.765"),
]


@pytest.mark.parametrize(("model", "provider", "usage", "options", "expected"), CASES)
def test_price_rules(
    pricer: Pricer, model: str, provider: str | None, usage: dict[str, int], options: dict[str, Any], expected: str
) -> None:
    result = pricer.price_call(model, Usage(**usage), provider=provider, **options)
    assert result.status == "priced", result.reason
    assert result.total == D(expected)
    assert result.total == result.input + result.cache_read + result.cache_write + result.output + result.other
    assert result.catalog_version == "test.1"


def test_components_are_split_by_kind(pricer: Pricer) -> None:
    usage = Usage(
        input_tokens=10000,
        cache_read_tokens=4000,
        cache_write_tokens=2000,
        cache_write_1h_tokens=500,
        output_tokens=1000,
    )
    r = pricer.price_call("cached-1", usage)
    # 4000 uncached x 3/M; 4000 read x 0.3/M; 1500 x 3.75/M + 500 x 6/M; 1000 x 15/M
    assert (r.input, r.cache_read, r.cache_write, r.output, r.other) == (
        D("0.012"),
        D("0.0012"),
        D("0.008625"),
        D("0.015"),
        D("0"),
    )
    assert (r.model, r.provider, r.currency, r.rule) == ("cached-1", "acmeai", "USD", "acmeai/cached-1")


def test_tier_rule_is_named(pricer: Pricer) -> None:
    r = pricer.price_call("tiered-1", Usage(input_tokens=200001), at=utc(2025, 1, 1))
    assert r.rule == "acmeai/tiered-1 input>200000"
    r = pricer.price_call("simple-1", Usage(input_tokens=1), tier="batch")
    assert r.rule == "acmeai/simple-1 batch x0.5"


@pytest.mark.parametrize(
    ("model", "provider", "options", "reason"),
    [
        ("nope-9", None, {}, "unknown model 'nope-9'"),
        ("", None, {}, "unknown model ''"),
        ("simple-1", None, {"tier": "priority"}, "no priority price for acmeai/simple-1"),
        ("simple-1", None, {"tier": "turbo"}, "unknown service tier 'turbo'"),
    ],
)
def test_unpriced_has_no_total(
    pricer: Pricer, model: str, provider: str | None, options: dict[str, Any], reason: str
) -> None:
    r = pricer.price_call(model, Usage(input_tokens=10, output_tokens=10), provider=provider, **options)
    assert (r.status, r.reason, r.total, r.priced) == ("unpriced", reason, None, False)


def test_unknown_currency_is_a_clear_error(pricer: Pricer) -> None:
    with pytest.raises(PricingError, match="unknown currency 'XYZ'; known: USD, EUR, JPY"):
        pricer.price_call("simple-1", Usage(input_tokens=1), currency="XYZ")


def test_azure_deployment_mapping() -> None:
    pricer = Pricer(load_catalog([CATALOG], packaged=False), azure_deployments={"Prod-Chat": "simple-1"})
    r = pricer.price_call("prod-chat", Usage(input_tokens=M, output_tokens=M), provider="azure.ai.openai")
    assert (r.model, r.total) == ("simple-1", D("3"))


@pytest.mark.parametrize(
    ("resource", "amount", "options", "expected"),
    [
        ("cpu_core_hour", "10", {}, "0.4"),
        ("memory_gb_hour", "32", {}, "0.16"),
        ("gpu_hour", "1.5", {}, "3.75"),
        ("storage_gb_month", "100", {}, "2.3"),
        ("bandwidth_gb", "12", {}, "1.08"),
        ("sandbox_minute", "30", {}, "0.06"),
        ("cpu_core_hour", "10", {"currency": "EUR", "at": utc(2025, 6, 1)}, "0.32"),
        ("gpu_hour", "2", {"tenant": "bigco"}, "4.25"),
    ],
)
def test_compute_resources(pricer: Pricer, resource: str, amount: str, options: dict[str, Any], expected: str) -> None:
    cost = pricer.price_resource(resource, amount, **options)
    assert cost.total == D(expected)


@pytest.mark.parametrize(
    ("resource", "amount", "message"),
    [
        ("tpu_hour", "1", "unknown resource 'tpu_hour'"),
        ("gpu_hour", "-1", "finite non-negative"),
        ("gpu_hour", "lots", "must be a number"),
        ("gpu_hour", "NaN", "finite non-negative"),
    ],
)
def test_bad_resource_input(pricer: Pricer, resource: str, amount: str, message: str) -> None:
    with pytest.raises(PricingError, match=message):
        pricer.price_resource(resource, amount)
