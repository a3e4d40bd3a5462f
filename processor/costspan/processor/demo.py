"""``costspan demo``: the main job on embedded defaults.

For now it prices a realistic multi-tenant day of LLM calls with the packaged catalog and prints
the cost table; the later issues grow it into the full server + instrumented workload demo.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import TextIO

from costspan.pricing import Pricer, TenantOverride, Usage, load_catalog
from costspan.pricing.cli import format_money

__all__ = ["DEMO_CALLS", "add_demo_command", "run_pricing_demo"]

# (tenant, service, provider, model, input, cached input, output, reasoning, tier, count)
DEMO_CALLS: tuple[tuple[str, str, str, str, int, int, int, int, str, int], ...] = (
    ("acme", "support-bot", "openai", "gpt-4o-2024-08-06", 1_800, 1_024, 350, 0, "standard", 1_200),
    ("acme", "support-bot", "anthropic", "claude-sonnet-4-5-20250929", 6_500, 5_000, 700, 0, "standard", 400),
    ("acme", "nightly-summaries", "openai", "gpt-4o-mini", 12_000, 0, 800, 0, "batch", 3_000),
    ("globex", "code-review", "openai", "o3", 9_000, 2_048, 4_000, 3_000, "standard", 150),
    (
        "globex",
        "code-review",
        "aws.bedrock",
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        20_000,
        0,
        1_500,
        0,
        "standard",
        90,
    ),
    ("globex", "search", "gcp.gemini", "gemini-2.5-pro", 250_000, 0, 2_000, 0, "standard", 12),
    ("initech", "chat", "deepseek", "deepseek-chat", 2_000, 500, 600, 0, "standard", 2_500),
    ("initech", "chat", "groq", "llama-3.3-70b-versatile", 1_500, 0, 400, 0, "standard", 4_000),
    ("initech", "local-rag", "ollama", "llama3.2", 3_000, 0, 300, 0, "standard", 800),
)


def add_demo_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser("demo", help="run the demo on embedded defaults")
    demo.add_argument("--currency", default="USD")
    demo.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace, out: TextIO) -> int:
    return run_pricing_demo(out, currency=args.currency.upper())


def run_pricing_demo(out: TextIO, *, currency: str = "USD") -> int:
    # globex has negotiated 12 % off list prices: shown as a tenant override.
    pricer = Pricer(load_catalog(), tenant_overrides={"globex": TenantOverride(discount_percent=Decimal(12))})
    at = datetime(2025, 11, 3, 14, 0, tzinfo=UTC)
    by_tenant_model: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    calls: dict[tuple[str, str], int] = defaultdict(int)
    unpriced = 0
    total_calls = sum(c[-1] for c in DEMO_CALLS)
    out.write(f"costspan demo: pricing {total_calls:,} calls with catalog {pricer.catalog_version}\n")
    for tenant, _service, provider, model, inp, cached, output, reasoning, tier, count in DEMO_CALLS:
        usage = Usage(input_tokens=inp, cache_read_tokens=cached, output_tokens=output, reasoning_tokens=reasoning)
        result = pricer.price_call(model, usage, provider=provider, at=at, tier=tier, tenant=tenant, currency=currency)
        key = (tenant, f"{result.provider}/{result.model}" + (f" [{tier}]" if tier != "standard" else ""))
        calls[key] += count
        if result.total is None:
            unpriced += count
            continue
        by_tenant_model[key] += result.total * count
    out.write(f"\n{'tenant':<9} {'model':<62} {'calls':>7} {'cost ' + currency:>14}\n")
    for (tenant, model), cost in sorted(by_tenant_model.items(), key=lambda kv: (kv[0][0], -kv[1])):
        out.write(f"{tenant:<9} {model:<62} {calls[(tenant, model)]:>7,} {format_money(cost, 4):>14}\n")
    total = sum(by_tenant_model.values(), Decimal(0))
    out.write(f"{'total':<9} {'':<62} {sum(calls.values()):>7,} {format_money(total, 4):>14}\n")
    if unpriced:
        out.write(f"{unpriced} calls were unpriced\n")
    return 0
