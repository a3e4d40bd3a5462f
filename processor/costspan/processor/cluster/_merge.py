"""Merge the JSON answers of one admin query from every shard into the answer one node would give.

Every shard answers for the calls it stored; the merged answer sums them: counts and tokens as
integers, money as ``Decimal`` (rendered with the places the shards used), rows of a list by their
group key (``provider``, ``period``, ``(provider, model)`` …), objects key by key. Averages are
weighted by the calls behind them, percentages are recomputed from the merged sums.

What cannot be merged exactly is said so: latency percentiles come from the shard holding the most
calls (``exact: false``); the "top N" lists are the top N of the shards' own top N (exact unless a
name is just outside the top N on every shard); ``active_services`` is the largest shard's count.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Final

__all__ = ["MERGED_PATHS", "merge_answers", "usable"]

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
}
#: Lists ordered by cost, most first (the rest keep their keys' order).
_BY_COST: Final = frozenset({"providers", "by_tenant", "by_model", "top_workflows", "top_users", "operations"})
#: Lists the shards cut to their top N: the merged list is cut to the longest shard's length.
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


def _merge_field(name: str, values: list[Any]) -> Any:
    first = values[0]
    if name in _SUMMED and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return sum(values)
    if (name in _MONEY or name.endswith(_EXACT)) and all(v is None or isinstance(v, str) for v in values):
        return _money(values)
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
    if name in _TOP:
        merged = merged[: max(len(rows) for rows in lists)]
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


def _most_calls(answers: Sequence[JSONObject]) -> JSONObject:
    """Percentiles do not add up: the answer of the shard that holds the most calls, marked inexact."""
    chosen = max(answers, key=lambda a: int(a.get("request_count") or 0))
    return {**chosen, "exact": len(answers) == 1}


#: Admin routes answered across shards, and how their answers merge.
MERGED_PATHS: Final[dict[str, Callable[[Sequence[JSONObject]], JSONObject]]] = {
    "/v1/usage": _summed,
    "/api/usage/metrics/realtime": _summed,
    "/api/usage/metrics/aggregates": _summed,
    "/api/usage/costs/by-provider": _summed,
    "/api/usage/costs/trend": _summed,
    "/api/usage/errors/by-provider": _summed,
    "/api/usage/operations/top": _summed,
    "/api/dashboard/summary": _summed,
    "/api/usage/performance/latency": _most_calls,
}


_MAX_DEPTH: Final = 16
_COUNTS: Final = _SUMMED | _LARGEST
_KEY_TYPES: Final = (str, int, type(None))


def _finite_money(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, int | float) and not isinstance(value, bool):
        return math.isfinite(value)
    if not isinstance(value, str):
        return False
    try:
        return Decimal(value).is_finite()
    except InvalidOperation:
        return False


def _unknown_ok(name: str, value: Any, depth: int) -> bool:
    """A value with nothing of ours to compare it to: bounded, counts integers, numbers finite, money a
    finite amount (a name decides only for a plain value: a map's key is data, and may be any name)."""
    if depth > _MAX_DEPTH:
        return False
    if isinstance(value, dict):
        return all(_unknown_ok(str(k), v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        keys = _ROW_KEYS.get(name, ())
        return all(_row_keys_ok(row, keys) and _unknown_ok("", row, depth + 1) for row in value)
    if name in _COUNTS:
        return isinstance(value, int) and not isinstance(value, bool)
    if name in _MONEY or name.endswith(_EXACT):
        return _finite_money(value)
    return not isinstance(value, float) or math.isfinite(value)


def _row_keys_ok(row: Any, keys: tuple[str, ...]) -> bool:
    return not isinstance(row, dict) or all(isinstance(row.get(k), _KEY_TYPES) for k in keys)


def _like(mine: Any, value: Any, name: str, depth: int) -> bool:
    """``value`` (a peer's) has the shape of ``mine`` (ours, at the same place): the same JSON kind (an
    integer where we have a count, a finite number where we have a number), objects and rows alike. A map
    keyed by data (providers, days, models) is compared entry by entry with one of our entries, so
    names chosen by tenants never decide a type."""
    if depth > _MAX_DEPTH:
        return False
    if value is None:
        return True
    if mine is None:
        return _unknown_ok(name, value, depth)
    if isinstance(mine, bool) or isinstance(value, bool):
        return type(mine) is type(value)
    if isinstance(mine, int) and isinstance(value, int):
        return True
    if isinstance(mine, int | float):  # a count is an integer everywhere; other numbers may be either
        return (
            isinstance(value, int | float) and math.isfinite(value) and (isinstance(mine, float) or name not in _COUNTS)
        )
    if isinstance(mine, str):
        return isinstance(value, str) and (not (name in _MONEY or name.endswith(_EXACT)) or _finite_money(value))
    if isinstance(mine, dict):
        if not isinstance(value, dict):
            return False
        values = list(mine.values())
        # values all of one kind: a map keyed by data (providers, days, models …), entries alike
        data_map = bool(values) and all(type(v) is type(values[0]) for v in values)
        return all(
            _like(mine[k], v, k, depth + 1)
            if k in mine
            else _like(values[0], v, k, depth + 1)
            if data_map
            else _unknown_ok(k, v, depth + 1)
            for k, v in value.items()
        )
    if isinstance(mine, list):
        if not isinstance(value, list):
            return False
        sample, keys = (mine[0] if mine else None), _ROW_KEYS.get(name, ())
        return all(_row_keys_ok(row, keys) and _like(sample, row, "", depth + 1) for row in value)
    return False


def usable(own: JSONObject, answer: Any) -> bool:
    """Whether a peer's ``answer`` can be merged with this node's ``own`` answer to the same request:
    an object of the same shape (see :func:`_like`), bounded in depth, its numbers finite and its
    amounts of money amounts. An answer that is not is a failed peer: the merged answer is partial,
    never a 500."""
    return isinstance(answer, dict) and _like(own, answer, "", 0)


def merge_answers(path: str, answers: Sequence[JSONObject]) -> JSONObject:
    """The merged answer of ``path`` (one of :data:`MERGED_PATHS`); ``answers[0]`` is this node's own."""
    return MERGED_PATHS[path](answers)
