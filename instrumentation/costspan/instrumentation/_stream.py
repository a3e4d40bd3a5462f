"""Watching a response body as it streams to the application.

:class:`BodyTap` sees the raw (possibly compressed) bytes, keeps only what the call record needs — the
first event, the last usage event, finish events and a bounded copy of the events for token
estimation — and, when costspan injected ``stream_options.include_usage``, removes the extra
usage-only chunk so the application receives the chunks it would receive uninstrumented.
Per chunk it does a few byte searches; JSON is parsed once, when the stream ends.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Callable
from typing import Any

from costspan.instrumentation._providers import Route

__all__ = ["BodyTap"]

logger = logging.getLogger(__name__)

_KEEP_BYTES = 1024 * 1024  # events kept for a token estimate, per call (the rest are only counted)
_JSON_MAX = 32 * 1024 * 1024  # a non-streamed body larger than this is not parsed
_MAX_FINISH_EVENTS = 64
_OPENAI_SPECIAL_PREFIXES = (b"data: [", b'data: {"error"', b"event: error", b"event: response.")


_Decoder = Callable[[bytes], bytes]


def _decoder_for(encoding: str) -> _Decoder | None:
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


def _is_value_start(data: bytes, key: bytes, start_chars: bytes) -> bool:
    """Whether ``key`` occurs in ``data`` followed (after ``:`` and spaces) by one of ``start_chars``."""
    i = data.find(key)
    while i >= 0:
        j = i + len(key)
        rest = data[j : j + 8].lstrip(b": ")
        if rest[:1] and rest[:1] in start_chars:
            return True
        i = data.find(key, j)
    return False


class BodyTap:
    """What one response body showed; ``on_done(tap, error)`` is called exactly once when it ends."""

    __slots__ = (
        "_buf",
        "_decode",
        "_fbuf",
        "_json",
        "_json_size",
        "_kept",
        "_on_done",
        "_parse",
        "_usage_seen",
        "broken",
        "complete",
        "done",
        "dropped_events",
        "error_event",
        "events",
        "filter_usage",
        "finish_events",
        "first",
        "first_chunk_at",
        "mode",
        "route",
        "start_event",
        "usage_event",
    )

    def __init__(
        self,
        route: Route,
        content_type: str,
        content_encoding: str,
        filter_usage: bool,
        on_done: Callable[[BodyTap, BaseException | None], None],
    ) -> None:
        self.route = route
        ct = content_type.lower()
        if "event-stream" in ct:
            self.mode = "sse"
        elif "ndjson" in ct or (route.family == "ollama" and "json" not in ct.replace("ndjson", "")):
            self.mode = "ndjson"
        else:
            self.mode = "json"
        self._decode = _decoder_for(content_encoding)  # ValueError → caller does not tap
        self.filter_usage = filter_usage and self.mode == "sse"
        self._on_done = on_done
        self._buf = b""
        self._fbuf = b""
        self._json: list[bytes] = []
        self._json_size = 0
        self._kept = 0
        self.dropped_events = 0
        self.events: list[bytes] = []
        self.first: bytes | None = None
        self.usage_event: bytes | None = None
        self.start_event: bytes | None = None
        self.error_event: bytes | None = None
        self.finish_events: list[bytes] = []
        self.first_chunk_at: float | None = None
        self.complete = False  # the body ended normally (EOF or the provider's terminal event)
        self.done = False
        self.broken = False  # an internal error: stop watching, pass bytes through
        self._usage_seen = False
        self._parse: Callable[[bytes], None] = {
            "openai": self._on_openai,
            "anthropic": self._on_anthropic,
            "gemini": self._on_gemini,
            "ollama": self._on_ollama,
        }[route.family]

    # --- the byte stream ----------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> bytes:
        """Watch one raw chunk; return the bytes to hand on (the chunk itself unless filtering)."""
        if self.first_chunk_at is None:
            self.first_chunk_at = time.perf_counter()
        if self.filter_usage:
            return self._feed_filtering(chunk)
        if self.done or self.broken:
            return chunk
        try:
            data = self._decode(chunk) if self._decode is not None else chunk
            if self.mode == "json":
                self._json_size += len(data)
                if self._json_size <= _JSON_MAX:
                    self._json.append(data)
            else:
                self._split(data)
        except Exception as exc:  # never break the stream: stop watching, pass through
            self._break(exc)
        return chunk

    def end_of_body(self) -> bytes:
        """The body ended normally: flush, finish, and return any bytes still held back."""
        out = b""
        if self.filter_usage and self._fbuf:
            out, self._fbuf = self._fbuf, b""
        if not (self.done or self.broken):
            try:
                if out:
                    self._split(out + b"\n\n")
                elif self._buf:
                    self._split(b"\n\n" if self.mode == "sse" else b"\n")
            except Exception as exc:
                self._break(exc)
        self.complete = True
        self.finish(None)
        return out

    def finish(self, error: BaseException | None) -> None:
        if self.done:
            return
        self.done = True
        self._on_done(self, error)

    def _break(self, exc: Exception) -> None:
        self.broken = True
        logger.debug("costspan stopped watching a response body: %s", type(exc).__name__)

    def _feed_filtering(self, chunk: bytes) -> bytes:
        # Content-Encoding was removed from the response: always hand on decoded bytes.
        data = self._decode(chunk) if self._decode is not None else chunk
        if self.done or self.broken:
            pending, self._fbuf = self._fbuf, b""
            return pending + data
        buf = self._fbuf + data if self._fbuf else data
        try:
            if b"\r" in buf:
                buf = buf.replace(b"\r\n", b"\n")
            cut = buf.rfind(b"\n\n")
            if cut < 0:
                self._fbuf = buf
                return b""
            if cut == len(buf) - 2:  # the usual case: the chunk ends on an event boundary
                ready, self._fbuf = buf, b""
            else:
                ready, self._fbuf = buf[: cut + 2], buf[cut + 2 :]
            self._usage_seen = False
            parts = ready.split(b"\n\n")
            parts.pop()
            parse = self._parse
            for part in parts:
                if part and not self.done:
                    parse(part)
            if not self._usage_seen:  # chunks carry "usage":null until the usage chunk
                return ready
            return b"\n\n".join(ev for ev in ready.split(b"\n\n") if not _is_usage_only_event(ev))
        except Exception as exc:
            self._break(exc)
            self._fbuf = b""
            return buf

    def _split(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        if self.mode == "sse":
            if b"\r" in buf:
                buf = buf.replace(b"\r\n", b"\n")
            parts = buf.split(b"\n\n")
        else:
            parts = buf.split(b"\n")
        self._buf = parts.pop()
        parse = self._parse
        for part in parts:
            if part and not self.done:
                parse(part)

    def _keep(self, data: bytes) -> None:
        """Keep an event (raw SSE event, or a JSON line) for a token estimate, within a bound."""
        if self._kept < _KEEP_BYTES:
            self._kept += len(data)
            self.events.append(data)
        else:
            self.dropped_events += 1

    # --- per-family event handlers (cheap byte checks only) --------------------------------------
    def _terminal(self) -> None:
        self.complete = True
        self.finish(None)

    def _on_openai(self, ev: bytes) -> None:
        if self.first is not None:
            # The common content chunk: no usage object, no finish reason, no error, not the end.
            # Per chunk this is the whole cost: two substring searches and a prefix check.
            i = ev.find(b'"usage":')
            j = ev.find(b'"finish_reason":')
            if (
                (i < 0 or ev[i + 8 : i + 9] == b"n")
                and (j < 0 or ev[j + 16 : j + 17] == b"n")
                and not ev.startswith(_OPENAI_SPECIAL_PREFIXES)
            ):
                if self._kept < _KEEP_BYTES:
                    self._kept += len(ev)
                    self.events.append(ev)
                else:
                    self.dropped_events += 1
                return
        data = _sse_data(ev)
        if data[:1] != b"{":
            if data.startswith(b"[DONE]"):
                self._terminal()
            return
        if self.first is None:
            self.first = data
        if _is_value_start(data, b'"usage"', b"{"):
            self.usage_event = data
            self._usage_seen = True
            if self.route.kind == "responses":
                self._terminal()
                return
        if _is_value_start(data, b'"finish_reason"', b'"') and len(self.finish_events) < _MAX_FINISH_EVENTS:
            self.finish_events.append(data)
        if data.startswith(b'{"error"') or ev.startswith(b"event: error"):
            self.error_event = data
        if self.route.kind != "responses" or b'.delta"' in data:  # responses repeat the text in *.done
            self._keep(ev)

    def _on_anthropic(self, ev: bytes) -> None:
        if ev.startswith(b"event: "):
            nl = ev.find(b"\n")
            name = ev[7:nl].strip() if nl > 0 else ev[7:].strip()
        else:
            name = b""
        if name == b"content_block_delta":
            self._keep(ev)
        elif name == b"message_start":
            self.start_event = _sse_data(ev)
        elif name == b"message_delta":
            self.usage_event = _sse_data(ev)
        elif name == b"message_stop":
            self._terminal()
        elif name == b"error":
            self.error_event = _sse_data(ev)

    def _on_gemini(self, ev: bytes) -> None:
        data = _sse_data(ev) if self.mode == "sse" else ev
        if data[:1] != b"{":
            return
        if self.first is None:
            self.first = data
        if b'"usageMetadata"' in data:
            self.usage_event = data
        if b'"finishReason"' in data and len(self.finish_events) < _MAX_FINISH_EVENTS:
            self.finish_events.append(data)
        self._keep(data)

    def _on_ollama(self, ev: bytes) -> None:
        data = ev.strip()
        if data[:1] != b"{":
            return
        if self.first is None:
            self.first = data
        if _is_value_start(data, b'"done"', b"t"):
            self.usage_event = data
            self._terminal()
            return
        self._keep(data)

    # --- after the end ---------------------------------------------------------------------------------
    def json_body(self) -> Any:
        """The parsed non-streamed body, or None."""
        if self.mode != "json" or not self._json or self._json_size > _JSON_MAX:
            return None
        raw = b"".join(self._json)
        try:
            return json.loads(raw)
        except ValueError:
            return None


def _sse_data(ev: bytes) -> bytes:
    """The data of one SSE event (the common single ``data:`` line case is the fast path)."""
    if ev.startswith(b"data:") and b"\n" not in ev:
        return ev[5:].strip()
    lines = [ln[5:].strip() for ln in ev.split(b"\n") if ln.startswith(b"data:")]
    return b"\n".join(lines)


def _is_usage_only_event(ev: bytes) -> bool:
    """An OpenAI chunk with usage and no choices (the one include_usage adds)."""
    data = _sse_data(ev)
    if b'"usage"' not in data or data[:1] != b"{":
        return False
    try:
        obj = json.loads(data)
    except ValueError:
        return False
    return isinstance(obj, dict) and obj.get("choices") == [] and isinstance(obj.get("usage"), dict)
