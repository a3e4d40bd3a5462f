"""Watching a response body as it streams to the application.

:class:`BodyTap` sees the raw (possibly compressed) bytes, keeps only what the call record needs — the
first event, the last usage event, finish events and a bounded copy of the events for token
estimation — and, when costspan injected ``stream_options.include_usage``, removes the extra
usage-only chunk so the application receives the chunks it would receive uninstrumented.
Per chunk it does a few byte searches; JSON is parsed once, when the stream ends. The common OpenAI
chunk — one whole content event, no usage object, no finish reason — takes a quick path: three byte
searches over the chunk (one of them a memchr), then it is kept as it is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from costspan.instrumentation._providers import Route, loads
from costspan.instrumentation._sse import decoder_for, is_usage_only_event, is_value_start, ordinary_events, sse_data

__all__ = ["BodyTap"]

logger = logging.getLogger(__name__)

_KEEP_BYTES = 1024 * 1024  # events kept for a token estimate, per call (the rest are only counted)
_JSON_MAX = 32 * 1024 * 1024  # a non-streamed body larger than this is not parsed
_MAX_FINISH_EVENTS = 64
_OPENAI_SPECIAL_PREFIXES = (b"data: [", b'data: {"error"', b"event: error", b"event: response.")
_N, _LF, _E = b"n\ne"  # the first byte of ``null``, a newline, the first byte of ``error``
_HANDLERS = {"openai": "_on_openai", "anthropic": "_on_anthropic", "gemini": "_on_gemini", "ollama": "_on_ollama"}


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
        "_quick",
        "_quick_route",
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
        self._decode = decoder_for(content_encoding)  # ValueError → caller does not tap
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
        #: OpenAI chat/completions SSE, undecoded: ordinary content chunks may take the quick path ...
        self._quick_route = (
            route.family == "openai" and route.kind in ("chat", "completions") and self.mode == "sse"
        ) and self._decode is None
        #: ... once the first event is seen and no partial event is held back (see :meth:`_settle`).
        self._quick = False
        self._parse: Callable[[bytes], None] = getattr(self, _HANDLERS[route.family])

    # --- the byte stream ----------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> bytes:
        """Watch one raw chunk; return the bytes to hand on (the chunk itself unless filtering)."""
        if self._quick:
            # One whole single-line OpenAI event (its only newlines the closing blank line), not an
            # error (no first key starting with "e"), not [DONE], whose usage and finish_reason are
            # null or absent: the same checks _on_openai makes per event, made on the chunk as it came.
            n = len(chunk)
            nl = chunk.find(b"\n")
            if nl == n - 2 and chunk[n - 1] == _LF and chunk.startswith(b'data: {"') and chunk[8] != _E:
                i = chunk.rfind(b'"usage":')
                if i < 0 or chunk[i + 8] == _N:
                    i = chunk.rfind(b'"finish_reason":')
                    if i < 0 or chunk[i + 16] == _N:
                        if self._kept < _KEEP_BYTES:
                            self._kept += n
                            self.events.append(chunk)
                        else:
                            self.dropped_events += 1
                        return chunk
            elif 0 < nl < n - 2 and chunk.endswith(b"\n\n") and ordinary_events(chunk):
                # several whole ordinary events in one chunk (a network that coalesced them): kept
                # together, split again only if an estimate or the captured content needs them
                if self._kept < _KEEP_BYTES:
                    self._kept += n
                    self.events.append(chunk)
                else:
                    self.dropped_events += 1
                return chunk
        if self.first_chunk_at is None:
            self.first_chunk_at = time.perf_counter()
        if self.filter_usage:
            out = self._feed_filtering(chunk)
        elif self.done or self.broken:
            return chunk
        else:
            out = chunk
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
        self._settle()
        return out

    def _settle(self) -> None:
        """Whether the next chunk may take the quick path in :meth:`feed`."""
        self._quick = (
            self._quick_route and self.first is not None and not (self._buf or self._fbuf or self.done or self.broken)
        )

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
        self._quick = False
        self._on_done(self, error)

    def stop_watching(self) -> None:
        """Stop watching after an internal error: the rest of the body passes through untouched."""
        self.broken = True
        self._quick = False

    def _break(self, exc: Exception) -> None:
        self.stop_watching()
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
            return b"\n\n".join(ev for ev in ready.split(b"\n\n") if not is_usage_only_event(ev))
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

    def kept_events(self) -> Iterator[bytes]:
        """The kept events one by one (the quick path keeps a chunk of several events as it came)."""
        for raw in self.events:
            if raw.count(b"\n\n") > 1:
                yield from (ev for ev in raw.split(b"\n\n") if ev)
            else:
                yield raw

    # --- per-family event handlers (cheap byte checks only) --------------------------------------
    def _terminal(self) -> None:
        self.complete = True
        self.finish(None)

    def _on_openai(self, ev: bytes) -> None:
        if self.first is not None:
            # The common content chunk: no usage object, no finish reason, no error, not the end.
            # Per chunk this is the whole cost: two substring searches and a prefix check.
            i = ev.rfind(b'"usage":')
            j = ev.rfind(b'"finish_reason":')
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
        data = sse_data(ev)
        if data[:1] != b"{":
            if data.startswith(b"[DONE]"):
                self._terminal()
            return
        if self.first is None:
            self.first = data
        if is_value_start(data, b'"usage"', b"{"):
            self.usage_event = data
            self._usage_seen = True
            if self.route.kind == "responses":
                self._terminal()
                return
        if is_value_start(data, b'"finish_reason"', b'"') and len(self.finish_events) < _MAX_FINISH_EVENTS:
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
        if name in (b"content_block_delta", b"content_block_start"):  # start: a tool call's name
            self._keep(ev)
        elif name == b"message_start":
            self.start_event = sse_data(ev)
        elif name == b"message_delta":
            self.usage_event = sse_data(ev)
        elif name == b"message_stop":
            self._terminal()
        elif name == b"error":
            self.error_event = sse_data(ev)

    def _on_gemini(self, ev: bytes) -> None:
        data = sse_data(ev) if self.mode == "sse" else ev
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
        if is_value_start(data, b'"done"', b"t"):
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
            return loads(raw)
        except ValueError:
            return None
