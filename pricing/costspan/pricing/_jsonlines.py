"""Find the line of a value inside a JSON text by its path, to point catalog errors at a line."""

from __future__ import annotations

import json
import json.decoder
import re
from collections.abc import Callable, Sequence

__all__ = ["line_of"]

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
_scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


def _skip_ws(text: str, pos: int) -> int:
    match = _WS.match(text, pos)
    return match.end() if match else pos


def _value_start(text: str, pos: int, path: Sequence[str | int]) -> int:
    """Offset where the value at ``path`` starts, or the deepest offset reached."""
    pos = _skip_ws(text, pos)
    if not path:
        return pos
    head, rest = path[0], path[1:]
    if text.startswith("{", pos) and isinstance(head, str):
        pos = _skip_ws(text, pos + 1)
        while pos < len(text) and text[pos] != "}":
            key, pos = _scanstring(text, pos + 1)
            pos = _skip_ws(text, pos)
            pos = _skip_ws(text, pos + 1)  # the colon
            if key == head:
                return _value_start(text, pos, rest)
            _, pos = _DECODER.raw_decode(text, pos)
            pos = _skip_ws(text, pos)
            if text.startswith(",", pos):
                pos = _skip_ws(text, pos + 1)
        return pos
    if text.startswith("[", pos) and isinstance(head, int):
        pos = _skip_ws(text, pos + 1)
        index = 0
        while pos < len(text) and text[pos] != "]":
            if index == head:
                return _value_start(text, pos, rest)
            _, pos = _DECODER.raw_decode(text, pos)
            pos = _skip_ws(text, pos)
            if text.startswith(",", pos):
                pos = _skip_ws(text, pos + 1)
            index += 1
    return pos


def line_of(text: str, path: Sequence[str | int]) -> int:
    """1-based line of the value at ``path`` in a valid JSON ``text`` (best effort)."""
    try:
        offset = _value_start(text, 0, path)
    except (ValueError, IndexError):
        return 1
    return text.count("\n", 0, offset) + 1
