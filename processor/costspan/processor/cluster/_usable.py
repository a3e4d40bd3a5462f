"""Whether a peer's answer can be merged with this node's own: the same shape, bounded, finite."""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from costspan.processor.cluster._merge import _EXACT, _LARGEST, _MONEY, _ROW_KEYS, _SUMMED, JSONObject

__all__ = ["usable"]

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
        if value and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value.values()):
            # numbers keyed by data (the seed's ``by_provider`` USD amounts): a provider named
            # ``calls`` is not a count
            return all(_unknown_ok("", v, depth + 1) for v in value.values())
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
        if not mine:  # an empty map of ours (no calls here): the peer's is checked as it stands
            return _unknown_ok(name, value, depth)
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
    if not isinstance(answer, dict):
        return False
    if "success" in own and "data" in own:  # the seed's envelope: its data is what merges
        return answer.get("success") is True and isinstance(answer.get("data"), dict) and _like(own, answer, "", 0)
    return _like(own, answer, "", 0)
