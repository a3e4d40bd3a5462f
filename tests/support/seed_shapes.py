"""Compare an answer with a seed's documented example: every documented field is there, with the
example's JSON type (a documented number is a number, never a string; ``null`` is allowed only where
the example shows it). Extra fields beside them are costspan's own and allowed."""

from __future__ import annotations

from typing import Any

__all__ = ["assert_shape"]


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    raise TypeError(f"not a JSON value: {value!r}")


def assert_shape(example: Any, actual: Any, *, dynamic: frozenset[str] | set[str] = frozenset(), at: str = "$") -> None:
    """``dynamic``: names of objects keyed by data (models, dates), each of whose entries must have the
    shape of the example's first entry."""
    assert _kind(actual) == _kind(example), f"{at}: documented {_kind(example)}, answered {actual!r}"
    if isinstance(example, dict):
        for key, documented in example.items():
            if key in dynamic:
                assert isinstance(actual.get(key), dict), f"{at}.{key}: missing or not an object"
                entries = list(documented.values())
                for name, entry in actual[key].items():
                    if entries:
                        assert_shape(entries[0], entry, dynamic=dynamic, at=f"{at}.{key}.{name}")
                continue
            assert key in actual, f"{at}: the documented field {key!r} is missing (has {sorted(actual)})"
            assert_shape(documented, actual[key], dynamic=dynamic, at=f"{at}.{key}")
    elif isinstance(example, list) and example:
        for i, item in enumerate(actual):
            assert_shape(example[0], item, dynamic=dynamic, at=f"{at}[{i}]")
