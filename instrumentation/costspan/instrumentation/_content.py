"""Opt-in message content: ``gen_ai.input.messages``, ``gen_ai.output.messages``, ``gen_ai.system_instructions``.

Off unless ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` (or ``instrument(capture_message_content=)``)
asks for it. Nothing here runs on a call while it is off: the request body is parsed anyway (for the
model and max_tokens), and a streamed answer is put together from the events the body tap keeps,
once, when the call ends.

Messages follow the GenAI semantic conventions' JSON schemas: ``{"role", "parts": [...]}`` with
``text``, ``tool_call``, ``tool_call_response``, ``reasoning``, ``blob``, ``uri`` and ``file`` parts; an
output message adds its ``finish_reason``. On a span they are JSON strings (span attributes cannot hold
structures); in the ``gen_ai.client.inference.operation.details`` event they are structured.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any, Final

from costspan.instrumentation._messages import arguments, request_messages, response_messages
from costspan.instrumentation._providers import Route
from costspan.instrumentation._sse import sse_data
from costspan.instrumentation._stream import BodyTap

__all__ = [
    "CAPTURE_CONTENT_ENV",
    "Messages",
    "capture_mode",
    "messages_of",
]

logger = logging.getLogger(__name__)

CAPTURE_CONTENT_ENV: Final = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
NO_CONTENT: Final = "NO_CONTENT"
SPAN_ONLY: Final = "SPAN_ONLY"
EVENT_ONLY: Final = "EVENT_ONLY"
SPAN_AND_EVENT: Final = "SPAN_AND_EVENT"
_MODES = (NO_CONTENT, SPAN_ONLY, EVENT_ONLY, SPAN_AND_EVENT)
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")

#: (system instructions, input messages, output messages); each None when there is nothing to record.
Messages = tuple[list[dict[str, Any]] | None, list[dict[str, Any]] | None, list[dict[str, Any]] | None]


def capture_mode(value: object) -> str:
    """The capture mode for a setting: a bool, ``true``/``false``, or a mode name (any case).

    ``true`` means ``SPAN_ONLY`` (costspan's record is the span). Anything else is logged and means
    ``NO_CONTENT``.
    """
    if value is None or value is False:
        return NO_CONTENT
    if value is True:
        return SPAN_ONLY
    raw = str(value).strip()
    if not raw:
        return NO_CONTENT
    if raw.lower() in _TRUE:
        return SPAN_ONLY
    if raw.lower() in _FALSE:
        return NO_CONTENT
    if raw.upper() in _MODES:
        return raw.upper()
    logger.warning(
        "ignoring %s=%r (expected true, false or one of %s); no content is captured",
        CAPTURE_CONTENT_ENV,
        raw,
        ", ".join(_MODES),
    )
    return NO_CONTENT


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _d(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _loads(raw: bytes | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        obj = json.loads(raw)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def _openai_stream(kind: str, events: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """A chat/completions body put together from its streamed deltas, choice by choice."""
    choices: dict[int, dict[str, Any]] = {}
    for ev in events:
        for ch in ev.get("choices") or ():
            c = _d(ch)
            index = c.get("index", 0) if isinstance(c.get("index", 0), int) else 0
            acc = choices.setdefault(index, {"index": index, "text": [], "calls": {}, "reason": None})
            delta = _d(c.get("delta"))
            piece = c.get("text") if kind == "completions" else delta.get("content")
            if isinstance(piece, str):
                acc["text"].append(piece)
            for call in delta.get("tool_calls") or ():
                tc = _d(call)
                slot = acc["calls"].setdefault(tc.get("index", 0), {"id": None, "name": "", "arguments": []})
                fn = _d(tc.get("function"))
                slot["id"] = tc.get("id") or slot["id"]
                slot["name"] += fn.get("name") or ""
                if isinstance(fn.get("arguments"), str):
                    slot["arguments"].append(fn["arguments"])
            if isinstance(c.get("finish_reason"), str):
                acc["reason"] = c["finish_reason"]
    body_choices = []
    for index in sorted(choices):
        acc = choices[index]
        text = "".join(acc["text"])
        calls = [
            {"id": s["id"], "type": "function", "function": {"name": s["name"], "arguments": "".join(s["arguments"])}}
            for _, s in sorted(acc["calls"].items())
        ]
        message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
        if calls:
            message["tool_calls"] = calls
        body_choices.append({"index": index, "text": text, "message": message, "finish_reason": acc["reason"]})
    return {"choices": body_choices}


def _anthropic_stream(tap: BodyTap) -> dict[str, Any]:
    blocks: dict[int, dict[str, Any]] = {}
    partial: dict[int, list[str]] = {}
    for raw in tap.kept_events():
        ev = _loads(sse_data(raw))
        index = ev.get("index", 0)
        if ev.get("type") == "content_block_start":
            blocks[index] = dict(_d(ev.get("content_block")))
        elif ev.get("type") == "content_block_delta":
            delta = _d(ev.get("delta"))
            block = blocks.setdefault(index, {"type": "text", "text": ""})
            kind = delta.get("type")
            if kind == "text_delta":
                block["text"] = block.get("text", "") + delta.get("text", "")
            elif kind == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
            elif kind == "input_json_delta":
                partial.setdefault(index, []).append(delta.get("partial_json", ""))
    for index, pieces in partial.items():
        blocks[index]["input"] = arguments("".join(pieces))
    stop = _d(_loads(tap.usage_event).get("delta")).get("stop_reason")
    return {"role": "assistant", "content": [blocks[i] for i in sorted(blocks)], "stop_reason": stop}


def _streamed(route: Route, tap: BodyTap) -> dict[str, Any]:
    """The body a streamed answer amounts to, from the events the tap kept (bounded)."""
    family = route.family
    if family == "anthropic":
        return _anthropic_stream(tap)
    if family == "openai" and route.kind == "responses":
        final = _loads(tap.usage_event).get("response")
        return final if isinstance(final, dict) else {}
    sse = tap.mode == "sse"
    events = [_loads(sse_data(raw) if sse else raw) for raw in tap.kept_events()]
    if family == "openai":
        return _openai_stream(route.kind, events)
    if family == "gemini":
        return _streamed_gemini_array(events)
    final = _loads(tap.usage_event)
    pieces = [_d(ev.get("message")).get("content") or ev.get("response") for ev in (*events, final)]
    text = "".join(p for p in pieces if isinstance(p, str))
    return {"message": {"role": "assistant", "content": text}, "done_reason": final.get("done_reason")}


def _gemini_candidate(index: int, parts: list[Any], reason: str | None) -> dict[str, Any]:
    merged: list[Any] = []
    for p in parts:
        part = _d(p)
        if (
            merged
            and isinstance(part.get("text"), str)
            and isinstance(merged[-1].get("text"), str)
            and bool(part.get("thought")) == bool(merged[-1].get("thought"))
        ):
            merged[-1] = {**merged[-1], "text": merged[-1]["text"] + part["text"]}
        else:
            merged.append(part)
    cand: dict[str, Any] = {"index": index, "content": {"role": "model", "parts": merged}}
    if reason:
        cand["finishReason"] = reason
    return cand


def messages_of(route: Route, body: dict[str, Any] | None, tap: BodyTap | None) -> Messages:
    """The content of one call. Only called when capture is on."""
    instructions, inputs = request_messages(route, body) if body else (None, [])
    outputs: list[dict[str, Any]] = []
    if tap is not None and route.operation != "embeddings":
        if tap.mode == "json":
            parsed = tap.json_body()
            if route.family == "gemini" and isinstance(parsed, list):  # a JSON array of stream chunks
                outputs = response_messages(route, _streamed_gemini_array(parsed))
            elif isinstance(parsed, dict):
                outputs = response_messages(route, parsed)
        else:
            outputs = response_messages(route, _streamed(route, tap))
    return instructions or None, inputs or None, outputs or None


def _streamed_gemini_array(chunks: list[Any]) -> dict[str, Any]:
    parts: dict[int, list[Any]] = {}
    reasons: dict[int, str] = {}
    for chunk in chunks:
        for cand in _d(chunk).get("candidates") or ():
            c = _d(cand)
            parts.setdefault(c.get("index", 0), []).extend(_d(c.get("content")).get("parts") or ())
            if isinstance(c.get("finishReason"), str):
                reasons[c.get("index", 0)] = c["finishReason"]
    return {"candidates": [_gemini_candidate(i, p, reasons.get(i)) for i, p in sorted(parts.items())]}
