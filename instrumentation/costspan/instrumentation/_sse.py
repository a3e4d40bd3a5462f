"""Byte-level helpers of the body tap: content decoders, SSE event data and the cheap event checks."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable

__all__ = ["decoder_for", "is_usage_only_event", "is_value_start", "ordinary_events", "sse_data"]

_E = ord("e")

_Decoder = Callable[[bytes], bytes]


def decoder_for(encoding: str) -> _Decoder | None:
    """A decompressor for a Content-Encoding, ``None`` for identity; raises ValueError if unknown."""
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return None
    if enc in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress
    if enc == "deflate":
        return zlib.decompressobj().decompress
    if enc == "br":
        import brotli

        decompress: _Decoder = brotli.Decompressor().process
        return decompress
    raise ValueError(f"unsupported content-encoding {enc!r}")


def is_value_start(data: bytes, key: bytes, start_chars: bytes) -> bool:
    """Whether ``key`` occurs in ``data`` followed (after ``:`` and spaces) by one of ``start_chars``."""
    i = data.find(key)
    while i >= 0:
        j = i + len(key)
        rest = data[j : j + 8].lstrip(b": ")
        if rest[:1] and rest[:1] in start_chars:
            return True
        i = data.find(key, j)
    return False


def ordinary_events(chunk: bytes) -> bool:
    """Whether a chunk is only whole single-line OpenAI ``data: {...}`` events, none an error, each with
    its usage and finish_reason null or absent (the multi-event form of the checks in ``feed``)."""
    # It ends with a blank line (checked by the caller), starts an event, and every other newline pair
    # starts the next one: k events with 2k newlines in all, so none inside an event.
    newlines = chunk.count(b"\n")
    return (
        chunk.startswith(b'data: {"')
        and chunk.count(b'\n\ndata: {"') * 2 + 2 == newlines
        and chunk[8] != _E
        and b'\n\ndata: {"e' not in chunk
        and chunk.count(b'"usage":') == chunk.count(b'"usage":n')
        and chunk.count(b'"finish_reason":') == chunk.count(b'"finish_reason":n')
    )


def sse_data(ev: bytes) -> bytes:
    """The data of one SSE event (the common single ``data:`` line case is the fast path)."""
    if ev.endswith(b"\n\n"):  # kept whole by the quick path in BodyTap.feed
        ev = ev[:-2]
    if ev.startswith(b"data:") and b"\n" not in ev:
        return ev[5:].strip()
    lines = [ln[5:].strip() for ln in ev.split(b"\n") if ln.startswith(b"data:")]
    return b"\n".join(lines)


def is_usage_only_event(ev: bytes) -> bool:
    """An OpenAI chunk with usage and no choices (the one include_usage adds)."""
    data = sse_data(ev)
    if b'"usage"' not in data or data[:1] != b"{":
        return False
    try:
        obj = json.loads(data)
    except ValueError:
        return False
    return isinstance(obj, dict) and obj.get("choices") == [] and isinstance(obj.get("usage"), dict)
