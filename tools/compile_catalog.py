"""Compile costspan's packaged catalog from the genai-prices dataset plus costspan's own additions.

Run: ``.venv/bin/python -m tools.compile_catalog`` (genai-prices is a dev dependency). The output,
``pricing/costspan/pricing/data/catalog.json``, is committed: the package needs no network and no
genai-prices at run time. Only facts (prices, dates, ids, match rules, sources) are carried over.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import genai_prices
from genai_prices import types as gp
from genai_prices.data import providers

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "pricing/costspan/pricing/data/catalog.json"
ADDITIONS = ROOT / "tools/catalog_additions.json"

# genai-prices price keys → costspan price-set fields, with the divisor that turns them into our unit.
TOKEN_KEYS = {
    "input_mtok": "input",
    "output_mtok": "output",
    "cache_read_mtok": "cache_read",
    "cache_write_mtok": "cache_write",
    "cache_write_1h_mtok": "cache_write_1h",
    "output_reasoning_mtok": "reasoning",
    "input_audio_mtok": "input_audio",
    "output_audio_mtok": "output_audio",
    "cache_audio_read_mtok": "cache_audio_read",
    "input_image_mtok": "input_image",
}
PER_THOUSAND_KEYS = {"requests_kcount": "per_request", "web_searches_kcount": "per_web_search"}
# Variant conditions → costspan service tiers ("default" is the standard tier).
VARIANT_TIERS = {
    ("processing", "batch"): "batch",
    ("service_tier", "flex"): "flex",
    ("service_tier", "priority"): "priority",
    ("service_tier", "fast"): "fast",
}
SKIPPED: dict[str, int] = {}


def _add_names(provider: str, models: list[dict[str, Any]], names: dict[str, list[str]]) -> None:
    """Widen the match of ``provider``'s models by the exact names of ``names`` (model id -> names):
    the short names other gateways send for the same model (``claude-3-sonnet`` on Bedrock)."""
    by_id = {m["id"]: m for m in models}
    for model_id, extra in names.items():
        model = by_id.get(model_id)
        if model is None:
            raise SystemExit(f"catalog_additions.json: model_names names {provider}/{model_id}, not in the catalog")
        model["match"] = {"or": [model["match"], *({"equals": name} for name in extra)]}


def _num(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text


def _price(value: Decimal | gp.TieredPrices) -> Any:
    if isinstance(value, gp.TieredPrices):
        return {
            "base": _num(value.base),
            "tiers": [{"above": t.start, "price": _num(t.price)} for t in value.tiers],
        }
    return _num(value)


def _price_set(mp: gp.ModelPrice, start: date | None, *, variant: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if start is not None:
        out["from"] = start.isoformat()
    if not variant and all(v is None for k, v in mp.__dict__.items() if not k.startswith("_")):
        # An empty price in genai-prices is a free model (":free" routes, bundled subscriptions).
        out.update({"input": "0", "output": "0"})
        return out
    for key, value in mp.__dict__.items():
        if value is None or key.startswith("_"):
            continue
        if key in TOKEN_KEYS:
            out[TOKEN_KEYS[key]] = _price(value)
        elif key in PER_THOUSAND_KEYS and isinstance(value, Decimal):
            out[PER_THOUSAND_KEYS[key]] = _num(value / 1000)
        else:
            SKIPPED[key] = SKIPPED.get(key, 0) + 1
    return out


def _clause(c: Any) -> dict[str, Any]:
    if isinstance(c, gp.ClauseEquals):
        return {"equals": c.equals}
    if isinstance(c, gp.ClauseStartsWith):
        return {"starts_with": c.starts_with}
    if isinstance(c, gp.ClauseEndsWith):
        return {"ends_with": c.ends_with}
    if isinstance(c, gp.ClauseContains):
        return {"contains": c.contains}
    if isinstance(c, gp.ClauseRegex):
        return {"regex": c.regex}
    if isinstance(c, gp.ClauseOr):
        return {"or": [_clause(x) for x in c.or_]}
    if isinstance(c, gp.ClauseAnd):
        return {"and": [_clause(x) for x in c.and_]}
    raise TypeError(f"unknown clause {c!r}")


def _start(constraint: Any) -> date | bool | str | None:
    """A start date, None (always), "HH:MM-HH:MM" (a daily UTC window), or False (not modelled)."""
    if constraint is None:
        return None
    if isinstance(constraint, gp.StartDateConstraint):
        return constraint.start_date
    if isinstance(constraint, gp.TimeOfDateConstraint):
        start, end = (_utc(t) for t in (constraint.start_time, constraint.end_time))
        return f"{start}-{end}"
    return False


def _utc(value: time) -> str:
    if value.tzinfo is not None:
        value = datetime.combine(date(1970, 1, 1), value).astimezone(UTC).time()
    return f"{value.hour:02d}:{value.minute:02d}"


def _model(m: gp.ModelInfo, provider_source: str | None) -> dict[str, Any] | None:
    prices: list[dict[str, Any]] = []
    if isinstance(m.prices, gp.ModelPrice):
        prices.append(_price_set(m.prices, None))
    else:
        for cp in m.prices:
            start = _start(cp.constraint)
            if start is False:
                SKIPPED[f"constraint {cp.constraint!r}"] = SKIPPED.get(f"constraint {cp.constraint!r}", 0) + 1
                continue
            ps = _price_set(cp.prices, start if isinstance(start, date) else None)
            if isinstance(start, str):
                ps["hours"] = start
            prices.append(ps)
    prices = [p for p in prices if len(p.keys() - {"from"}) > 0]
    if not prices:
        return None
    entry: dict[str, Any] = {"id": m.id}
    if m.name:
        entry["name"] = m.name
    entry["match"] = _clause(m.match)
    entry["prices"] = prices
    variants: dict[str, list[dict[str, Any]]] = {}
    for v in m.price_variants or []:
        items = tuple(v.when.items())
        tier = VARIANT_TIERS.get(items[0]) if len(items) == 1 else None
        start = _start(v.constraint)
        if tier is None or start is False or isinstance(start, str):
            SKIPPED[f"variant {items}"] = SKIPPED.get(f"variant {items}", 0) + 1
            continue
        # An empty variant means the tier costs the standard price (from its date on).
        ps = _price_set(v.prices, start if isinstance(start, date) else None, variant=True)
        variants.setdefault(tier, []).append(ps)
    if variants:
        entry["variants"] = variants
    if m.context_window:
        entry["context_window"] = m.context_window
    if m.deprecated:
        entry["deprecated"] = True
    entry["source"] = provider_source or "genai-prices"
    return entry


def compile_catalog() -> dict[str, Any]:
    additions = json.loads(ADDITIONS.read_text(encoding="utf-8"))
    extra_providers = {p["id"]: p for p in additions.pop("providers")}
    max_output = additions.pop("max_output_tokens")
    model_names: dict[str, dict[str, list[str]]] = additions.pop("model_names")
    out_providers = []
    for p in providers:
        source = p.pricing_urls[0] if p.pricing_urls else None
        models = [e for m in p.models if (e := _model(m, source)) is not None]
        entry: dict[str, Any] = {"id": p.id, "name": p.name, "api_pattern": p.api_pattern}
        if p.model_match is not None:
            entry["model_match"] = _clause(p.model_match)
        if p.fallback_model_providers:
            entry["fallback_providers"] = p.fallback_model_providers
        if source:
            entry["source"] = source
        extra = extra_providers.pop(p.id, None)
        if extra is not None:
            added = extra.pop("models", [])
            entry.update(extra)
            models = added + models
        _add_names(p.id, models, model_names.pop(p.id, {}))
        for m in models:
            limit = max_output.get(f"{p.id}/{m['id']}")
            if limit is not None:
                m["max_output_tokens"] = limit
        entry["models"] = models
        out_providers.append(entry)
    out_providers.extend(extra_providers.values())
    if model_names:
        raise SystemExit(f"catalog_additions.json: model_names for unknown providers {sorted(model_names)}")
    return {
        "schema_version": 1,
        "version": additions.pop("version"),
        "source": f"compiled from genai-prices {genai_prices.__version__} (MIT) and tools/catalog_additions.json",
        **additions,
        "providers": out_providers,
    }


def main() -> None:
    catalog = compile_catalog()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(catalog, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    n = sum(len(p["models"]) for p in catalog["providers"])
    print(f"wrote {OUT.relative_to(ROOT)}: {len(catalog['providers'])} providers, {n} models")
    for key, count in sorted(SKIPPED.items()):
        print(f"  not modelled: {key} ({count})")


if __name__ == "__main__":
    main()
