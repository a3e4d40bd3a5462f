"""The pricing commands of the ``costspan`` CLI: ``price`` and ``pricing list|show|validate``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from costspan.pricing._catalog import load_catalog, parse_catalog_text
from costspan.pricing._engine import PriceBreakdown, Pricer, default_pricer
from costspan.pricing._errors import CatalogError, PricingError, UnknownModelError
from costspan.pricing._schema import SERVICE_TIERS, PriceSet, TieredPrice
from costspan.pricing._usage import MAX_COUNT, Usage

__all__ = ["add_pricing_commands", "format_money", "plain", "run_handler"]

Handler = Callable[[argparse.Namespace, TextIO], int]


class UsageExitError(Exception):
    """A bad command line: printed as ``costspan: error: ...`` and exit status 2."""


def _count(flag: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a whole number, got {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{flag} must not be negative, got {value}")
        if value > MAX_COUNT:
            raise argparse.ArgumentTypeError(f"{flag}={value} is beyond {MAX_COUNT:,} tokens for one call")
        return value

    return parse


def _when(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--at must be a date or time like 2025-05-01, got {text!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_money(value: Decimal | None, places: int = 8) -> str:
    """Money as a plain decimal string (never exponent notation), trailing zeros trimmed."""
    if value is None:
        return ""
    text = format(value.quantize(Decimal(1).scaleb(-places)).normalize(), "f")
    return text


def add_pricing_commands(sub: argparse._SubParsersAction[Any]) -> None:
    price = sub.add_parser("price", help="price one call", description="Price one LLM call from the catalog.")
    price.add_argument("--model", required=True, help="model id as any client spells it")
    price.add_argument("--provider", help="provider (openai, anthropic, azure.ai.openai, aws.bedrock, ...)")
    tokens = (
        ("--input-tokens", "all input tokens, cached ones included"),
        ("--output-tokens", "all output tokens, reasoning included"),
        ("--cache-read-tokens", "input tokens read from the cache"),
        ("--cache-write-tokens", "input tokens written to the cache (5-minute lifetime)"),
        ("--cache-write-1h-tokens", "input tokens written to the cache with a 1-hour lifetime"),
        ("--reasoning-tokens", "output tokens spent on reasoning"),
    )
    for flag, help_text in tokens:
        price.add_argument(flag, type=_count(flag), default=0, help=help_text)
    price.add_argument("--at", type=_when, help="when the call started (default: now)")
    price.add_argument("--tier", default="standard", choices=SERVICE_TIERS, help="service tier (default standard)")
    price.add_argument("--currency", default="USD", help="USD, EUR, GBP, JPY, CNY or any in the catalog")
    price.add_argument("--tenant", help="apply this tenant's negotiated terms")
    price.add_argument("--json", action="store_true", help="one JSON object, money as decimal strings")
    price.set_defaults(handler=_price)

    pricing = sub.add_parser(
        "pricing",
        help="inspect the price catalog",
        description=(
            "Inspect the price catalog: the packaged one plus the files in COSTSPAN_PRICING_FILE. "
            "list: the priced models; show: one model's prices over time; validate: check a catalog file."
        ),
    )
    psub = pricing.add_subparsers(dest="pricing_command", required=True, metavar="ACTION")
    listing = psub.add_parser("list", help="list priced models", description="List the priced models, latest prices.")
    listing.add_argument("--provider", help="only this provider's models")
    listing.set_defaults(handler=_list)
    show = psub.add_parser(
        "show", help="show one model's prices over time", description="Show one model's prices over time, by tier."
    )
    show.add_argument("model", help="model id as any client spells it")
    show.add_argument("--provider", help="provider, when the model id alone is ambiguous")
    show.set_defaults(handler=_show)
    validate = psub.add_parser(
        "validate",
        help="check a user catalog file",
        description="Check a catalog file (the format of COSTSPAN_PRICING_FILE) and that it merges cleanly.",
    )
    validate.add_argument("file", type=Path, help="the JSON catalog file")
    validate.set_defaults(handler=_validate)


def _pricer() -> Pricer:
    return default_pricer()


def _price(args: argparse.Namespace, out: TextIO) -> int:
    pricer = _pricer()
    try:
        usage = Usage(
            input_tokens=args.input_tokens,
            output_tokens=args.output_tokens,
            cache_read_tokens=args.cache_read_tokens,
            cache_write_tokens=args.cache_write_tokens + args.cache_write_1h_tokens,
            cache_write_1h_tokens=args.cache_write_1h_tokens,
            reasoning_tokens=args.reasoning_tokens,
        )
    except PricingError as exc:
        raise UsageExitError(str(exc)) from None
    pricer.lookup(args.model, args.provider)  # unknown model: UnknownModelError, exit 2
    if args.currency.upper() not in pricer.catalog.currencies:
        raise UsageExitError(f"unknown currency {args.currency!r}; known: {', '.join(pricer.catalog.currencies)}")
    result = pricer.price_call(
        args.model,
        usage,
        provider=args.provider,
        at=args.at,
        tier=args.tier,
        tenant=args.tenant,
        currency=args.currency.upper(),
    )
    if args.json:
        json.dump(_as_json(result), out, indent=2)
        out.write("\n")
    else:
        _print_breakdown(result, out)
    return 0 if result.status == "priced" else 1


def plain(value: Decimal) -> str:
    """An exact decimal string without trailing zeros or exponent notation."""
    return format(value.normalize(), "f") if value else "0"


def _as_json(b: PriceBreakdown) -> dict[str, Any]:
    money = {k: plain(getattr(b, k)) for k in ("input", "cache_read", "cache_write", "output", "other")}
    return {
        "model": b.model,
        "provider": b.provider,
        "status": b.status,
        "reason": b.reason or None,
        "currency": b.currency,
        "total": None if b.total is None else plain(b.total),
        **money,
        "pricing_version": b.catalog_version,
        "rule": b.rule,
    }


def _print_breakdown(b: PriceBreakdown, out: TextIO) -> None:
    out.write(f"{b.provider}/{b.model}  ({b.rule or b.reason})\n")
    if b.total is None:
        out.write(f"unpriced: {b.reason}\n")
        return
    for label, value in (
        ("input", b.input),
        ("cache read", b.cache_read),
        ("cache write", b.cache_write),
        ("output", b.output),
        ("other", b.other),
    ):
        out.write(f"  {label:<12} {format_money(value):>16} {b.currency}\n")
    out.write(f"  {'total':<12} {format_money(b.total):>16} {b.currency}\n")
    out.write(f"catalog {b.catalog_version}\n")


def _fmt_price(value: Decimal | TieredPrice | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, TieredPrice):
        tiers = ", ".join(f">{t.above:,}: {t.price}" for t in value.tiers)
        return f"{value.base} ({tiers})"
    return str(value)


def _latest(prices: Sequence[PriceSet]) -> PriceSet:
    return max(prices, key=lambda s: (s.hours is None, s.effective_from or date.min))


def _list(args: argparse.Namespace, out: TextIO) -> int:
    catalog = _pricer().catalog
    if args.provider and catalog.provider(args.provider) is None:
        raise UsageExitError(f"unknown provider {args.provider!r}; known: {', '.join(catalog.provider_ids)}")
    out.write(f"{'provider':<12} {'model':<44} {'input/M':>10} {'output/M':>10} {'cached/M':>10}  since\n")
    for provider, model in catalog.models(args.provider):
        p = _latest(model.prices)
        since = p.effective_from.isoformat() if p.effective_from else "-"
        row = (
            f"{provider:<12} {model.id:<44} {_short(p.input):>10} {_short(p.output):>10} "
            f"{_short(p.cache_read):>10}  {since}\n"
        )
        out.write(row)
    return 0


def _short(value: Decimal | TieredPrice | None) -> str:
    if isinstance(value, TieredPrice):
        return f"{value.base}+"
    return "-" if value is None else str(value)


def _show(args: argparse.Namespace, out: TextIO) -> int:
    pricer = _pricer()
    priced, entry = pricer.lookup(args.model, args.provider)
    out.write(f"{priced.provider}/{priced.model}")
    if entry is not None and entry.name:
        out.write(f"  {entry.name}")
    out.write("\n")
    if entry is None:
        out.write("  free local model: every call is priced at zero\n")
        return 0
    if entry.source:
        out.write(f"  source: {entry.source}\n")
    if entry.max_output_tokens:
        out.write(f"  max output tokens: {entry.max_output_tokens:,}\n")
    tiers: list[tuple[str, Sequence[PriceSet]]] = [("standard", entry.prices), *entry.variants.items()]
    for tier, sets in tiers:
        for s in sorted(sets, key=lambda s: s.effective_from or date.min):
            when = f"from {s.effective_from}" if s.effective_from else "from launch"
            if s.hours:
                when += f", {s.hours} UTC daily"
            out.write(f"  [{tier}] {when} (USD per million tokens)\n")
            for field in ("input", "cache_read", "cache_write", "cache_write_1h", "output", "reasoning"):
                value = getattr(s, field)
                if value is not None:
                    out.write(f"      {field:<15} {_fmt_price(value)}\n")
            for field in ("per_request", "per_image", "per_web_search"):
                value = getattr(s, field)
                if value is not None:
                    out.write(f"      {field:<15} {value} USD\n")
    return 0


def _validate(args: argparse.Namespace, out: TextIO) -> int:
    try:
        text = args.file.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageExitError(f"cannot read {args.file}: {exc.strerror}") from None
    parsed = parse_catalog_text(text, str(args.file))
    load_catalog([args.file])  # merges cleanly over the packaged catalog
    models = sum(len(p.models) for p in parsed.providers)
    out.write(
        f"{args.file}: valid ({len(parsed.providers)} providers, {models} models, {len(parsed.tenants)} tenants)\n"
    )
    return 0


def run_handler(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run a parsed command; domain errors become one clear line and exit status 2 (1 for catalogs)."""
    handler: Handler = args.handler
    try:
        return handler(args, out)
    except UnknownModelError as exc:
        err.write(f"costspan: error: {exc}\n")
        return 2
    except CatalogError as exc:
        err.write(f"costspan: error: invalid catalog {exc.source}\n")
        for problem in exc.problems:
            err.write(f"  {exc.source}: {problem}\n")
        return 1
    except (UsageExitError, PricingError) as exc:
        err.write(f"costspan: error: {exc}\n")
        return 2
