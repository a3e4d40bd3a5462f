"""Merge the JSON answers of one admin query from every shard into the answer one node would give.

Every shard answers for the calls it stored; the merged answer sums them: counts and tokens as
integers, money as ``Decimal`` (rendered with the places the shards used), rows of a list by their
group key (``provider``, ``period``, ``(provider, model)`` …), objects key by key. Averages are
weighted by the calls behind them, percentages are recomputed from the merged sums. A route in the
seed's envelope (``{"success": true, "data": {...}}``) keeps it: its ``data`` is merged, and the
seed's USD numbers (``total_cost_usd``, ``by_provider``, ``cost_usd`` …) are recomputed from the
exact sums beside them (when the answer is in USD; otherwise, and for ``by_operation``, which has no
exact string, summed as the decimals the shards printed).

What cannot be merged exactly is said so: latency percentiles come from the shard holding the most
calls (``exact: false`` beside ``success``); the "top N" lists are the top N of the shards' own top N
(exact unless a name is just outside the top N on every shard); ``active_services`` is the largest
shard's count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Final

__all__ = ["MERGED_PATHS", "JSONObject", "merge_answers"]

JSONObject = dict[str, Any]

_SUMMED: Final = frozenset(
    {
        "request_count",
        "error_count",
        "input_tokens",
        "output_tokens",
        "tokens_used",
        "ok_count",
        "degraded_count",
        "blocked_count",
        "unpriced_calls",
        "unpriced_tokens",
        "calls",
        "blocked_calls",
        "total_calls",
        "active_tenants",
        "ok",
        "degraded",
        "blocked",
        "error",
        "requests",
        "total_requests",
        "total_tokens",
    }
)
_MONEY: Final = frozenset(
    {"cost", "total_cost", "total_cost_today", "total_cost_usd", "cost_usd", "daily_cost", "monthly_cost"}
)
#: QLens' money: a JSON number ``cost`` beside the exact string ``cost_exact`` (summed, the number follows).
_EXACT: Final = "_exact"
_LARGEST: Final = frozenset({"active_services"})
#: A list's rows are merged by these fields of each row.
_ROW_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "providers": ("provider",),
    "data": ("period",),
    "hourly": ("hour",),
    "daily": ("date",),
    "by_tenant": ("tenant",),
    "by_model": ("provider", "model"),
    "unpriced_models": ("provider", "model"),
    "top_workflows": ("workflow",),
    "top_users": ("user",),
    "operations": ("provider", "model", "operation"),
    "aggregates": ("period",),
}
#: Lists ordered by cost, most first (the rest keep their keys' order).
_BY_COST: Final = frozenset({"providers", "by_tenant", "by_model", "top_workflows", "top_users", "operations"})
#: Lists the shards cut to their top N: the merged list is cut to N (see :func:`merge_answers`).
_TOP: Final = frozenset({"top_workflows", "top_users", "operations"})


def _money(values: Sequence[Any]) -> str | None:
    """Money strings summed; None (no priced call) only when every shard said None."""
    given = [v for v in values if v is not None]
    if not given:
        return None
    try:
        return format(sum((Decimal(str(v)) for v in given), Decimal(0)), "f")
    except InvalidOperation:
        return str(given[0])


def _number(value: Any) -> Decimal:
    try:
        return Decimal(str(value)) if value is not None else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


def _plain_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number_sum(values: Sequence[Any]) -> float:
    """Money given only as JSON numbers (no exact string beside it): summed as the decimals they print as."""
    return float(sum((_number(v) for v in values), Decimal(0)))


def _usd_number(exact: Any) -> float:
    """A seed's USD number from the exact sum it stands for (0 when nothing was priced, as the routes say)."""
    return float(_number(exact))


def _merge_field(name: str, values: list[Any]) -> Any:
    first = values[0]
    if name in _SUMMED and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return sum(values)
    if (name in _MONEY or name.endswith(_EXACT)) and all(v is None or isinstance(v, str) for v in values):
        return _money(values)
    if name in _MONEY and all(_plain_number(v) for v in values):  # recomputed from an exact sum where there is one
        return _number_sum(values)
    if name in _LARGEST and all(isinstance(v, int) for v in values):
        return max(values)
    if all(isinstance(v, dict) for v in values):
        return _merge_objects(values, money_values=name == "daily" and _is_cost_trend(values))
    if name in _ROW_KEYS and all(isinstance(v, list) for v in values):
        return _merge_rows(name, values)
    return first


def _is_cost_trend(values: list[Any]) -> bool:
    """``daily`` of ``/api/usage/costs/trend``: day → provider → money string."""
    return all(all(isinstance(day, dict) for day in v.values()) for v in values)


def _merge_objects(objects: Sequence[JSONObject], *, money_values: bool = False) -> JSONObject:
    out: JSONObject = {}
    for key in dict.fromkeys(k for obj in objects for k in obj):
        present = [obj[key] for obj in objects if key in obj]
        if money_values and all(isinstance(v, dict) for v in present):
            out[key] = {p: _money([v.get(p) for v in present]) for p in dict.fromkeys(p for v in present for p in v)}
        else:
            out[key] = _merge_field(key, present)
    _weigh(objects, out)
    _recompute(out)
    return out


def _weigh(objects: Sequence[JSONObject], out: JSONObject) -> None:
    """``avg_latency_ms`` weighted by each shard's ``request_count``."""
    if "avg_latency_ms" not in out or "request_count" not in out:
        return
    n = out["request_count"]
    if not isinstance(n, int) or not n or all(obj.get("avg_latency_ms") is None for obj in objects):
        out["avg_latency_ms"] = None
        return
    total = sum(
        (_number(obj.get("avg_latency_ms")) * int(obj.get("request_count") or 0) for obj in objects), Decimal(0)
    )
    out["avg_latency_ms"] = round(float(total / n), 3)


def _ratio(part: Decimal, whole: Decimal) -> float:
    return round(float(100 * part / whole), 2) if whole else 0.0


def _recompute(out: JSONObject) -> None:
    for key, value in list(out.items()):  # QLens' money number beside its exact string: from the exact sum
        if key.endswith(_EXACT) and isinstance(out.get(key[: -len(_EXACT)]), int | float):
            out[key[: -len(_EXACT)]] = float(_number(value))
    if "error_rate_percent" in out and isinstance(out.get("request_count"), int):
        n = out["request_count"]
        out["error_rate_percent"] = _ratio(_number(out.get("error_count")), Decimal(n))


def _row_key(name: str, row: Any) -> tuple[Any, ...]:
    return tuple(row.get(k) for k in _ROW_KEYS[name]) if isinstance(row, dict) else (repr(row),)


def _merge_rows(name: str, lists: Sequence[list[Any]]) -> list[Any]:
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for rows in lists:
        for row in rows:
            groups.setdefault(_row_key(name, row), []).append(row)
    merged = [_merge_objects(rows) if all(isinstance(r, dict) for r in rows) else rows[0] for rows in groups.values()]
    if name in _BY_COST:
        merged.sort(key=lambda r: _number(r.get("cost", r.get("cost_usd"))), reverse=True)
    elif name == "unpriced_models":
        merged.sort(key=lambda r: int(r.get("calls") or 0), reverse=True)
    else:
        merged.sort(key=lambda r: tuple(str(v) for v in _row_key(name, r)))
    return merged


def _summed(answers: Sequence[JSONObject]) -> JSONObject:
    merged = _merge_objects(answers)
    providers = merged.get("providers")
    if isinstance(providers, list) and "total_cost" in merged:
        whole = _number(merged["total_cost"])
        for row in providers:
            if isinstance(row, dict) and "cost_percent" in row:
                row["cost_percent"] = _ratio(_number(row.get("cost")), whole)
    return merged


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _weighted(figures: Sequence[JSONObject], name: str, digits: int) -> float | None:
    """``name`` (an average or a rate) over the calls of every shard, weighted by ``request_count``."""
    given = [f for f in figures if _plain_number(f.get(name)) and _count(f.get("request_count"))]
    n = sum(_count(f.get("request_count")) for f in given)
    if not n:
        return None
    total = sum((_number(f[name]) * _count(f.get("request_count")) for f in given), Decimal(0))
    return round(float(total / n), digits)


def _latency_figures(figures: Sequence[JSONObject]) -> JSONObject:
    """Latency figures of the shards: counts summed, the average and rates weighted by calls; the
    percentiles (which do not add up) are those of the shard holding the most calls."""
    chosen: JSONObject = max(figures, key=lambda f: _count(f.get("request_count")))
    out = dict(chosen)
    n = sum(_count(f.get("request_count")) for f in figures)
    out["request_count"] = n
    for name, digits in (("avg_ms", 3), ("success_rate_percent", 2), ("error_rate_percent", 2)):
        if n and name in out:
            out[name] = _weighted(figures, name, digits)
    return out


def _by_key(maps: Sequence[Any], merge: Callable[[list[Any]], Any]) -> JSONObject:
    """Maps keyed by data (provider, operation) merged key by key, keys sorted as the routes sort them."""
    dicts = [m for m in maps if isinstance(m, dict)]
    keys = sorted({k for m in dicts for k in m})
    return {k: merge([m[k] for m in dicts if k in m]) for k in keys}


def _seed_latency(datas: Sequence[JSONObject]) -> JSONObject:
    out = _latency_figures(datas)
    if "success_rate_percent" in out and out["success_rate_percent"] is None:
        out["success_rate_percent"] = 0.0  # the route's overall rate is never null
    if "by_provider" in out:
        out["by_provider"] = _by_key([d.get("by_provider") for d in datas], _latency_figures)
    return out


def _seed_realtime(datas: Sequence[JSONObject]) -> JSONObject:
    out = _merge_objects(datas)
    usd = out.get("currency") == "USD"
    totals = out.get("totals")
    if isinstance(totals, dict):
        if usd:
            out["total_cost"] = _usd_number(totals.get("cost"))
        avg = totals.get("avg_latency_ms")
        out["avg_latency_ms"] = int(avg) if isinstance(avg, int | float) else 0
    for name in ("by_provider", "by_operation"):
        if isinstance(out.get(name), dict):
            out[name] = _by_key([d.get(name) for d in datas], _merge_objects)
    for row in (out.get("by_provider") or {}).values():
        if usd and isinstance(row, dict) and "cost_usd" in row:
            row["cost_usd"] = _usd_number(row.get("cost"))
    return out


def _seed_aggregates(datas: Sequence[JSONObject]) -> JSONObject:
    out = _merge_objects(datas)
    if out.get("currency") == "USD" and isinstance(out.get("aggregates"), list):
        for row in out["aggregates"]:
            if isinstance(row, dict) and "total_cost_usd" in row:
                row["total_cost_usd"] = _usd_number(row.get("cost"))
    return out


def _seed_by_provider(datas: Sequence[JSONObject]) -> JSONObject:
    out = _summed(datas)
    rows = [r for r in out.get("providers") or [] if isinstance(r, dict)]
    if not isinstance(out.get("by_provider"), dict):
        return out
    if out.get("currency") == "USD":
        out["total_cost_usd"] = _usd_number(out.get("total_cost"))
        numbers: dict[Any, Any] = {r.get("provider"): _usd_number(r.get("cost")) for r in rows}
    else:  # the USD numbers of another currency's answer have no exact string beside them
        numbers = _by_key([d.get("by_provider") for d in datas], _number_sum)
    order = [r.get("provider") for r in rows]  # most cost first, as ``providers``
    out["by_provider"] = {p: numbers[p] for p in order if p in numbers} | numbers
    return out


def _enveloped(
    merge_data: Callable[[Sequence[JSONObject]], JSONObject],
) -> Callable[[Sequence[JSONObject]], JSONObject]:
    """A route answering in the seed's envelope ``{"success": true, "data": {...}}``: the ``data`` merged."""

    def merge(answers: Sequence[JSONObject]) -> JSONObject:
        return {**answers[0], "data": merge_data([a["data"] for a in answers])}

    return merge


def _latency_answer(answers: Sequence[JSONObject]) -> JSONObject:
    """Percentiles do not add up: ``exact`` (beside ``success``) says whether they are of every call."""
    return {**_enveloped(_seed_latency)(answers), "exact": len(answers) == 1}


#: Admin routes answered across shards, and how their answers merge.
MERGED_PATHS: Final[dict[str, Callable[[Sequence[JSONObject]], JSONObject]]] = {
    "/v1/usage": _summed,
    "/api/usage/metrics/realtime": _enveloped(_seed_realtime),
    "/api/usage/metrics/aggregates": _enveloped(_seed_aggregates),
    "/api/usage/costs/by-provider": _enveloped(_seed_by_provider),
    "/api/usage/costs/trend": _summed,
    "/api/usage/errors/by-provider": _summed,
    "/api/usage/operations/top": _summed,
    "/api/dashboard/summary": _summed,
    "/api/usage/performance/latency": _latency_answer,
}


def merge_answers(path: str, answers: Sequence[JSONObject], *, top: int = 10) -> JSONObject:
    """The merged answer of ``path`` (one of :data:`MERGED_PATHS`); ``answers[0]`` is this node's own.
    ``top``: the N of the "top N" lists (the request's ``limit`` of ``/api/usage/operations/top``; the
    dashboard's lists are its top 10)."""
    merged = MERGED_PATHS[path](answers)
    for name in _TOP:
        if isinstance(merged.get(name), list):
            merged[name] = merged[name][:top]
    return merged
