"""Response facts from a watched body, and the text used to estimate tokens when usage is missing."""

from __future__ import annotations

from typing import Any

from costspan.instrumentation._providers import loads
from costspan.instrumentation._sse import sse_data
from costspan.instrumentation._stream import BodyTap
from costspan.instrumentation._usage import (
    Counts,
    ResponseFacts,
    anthropic_counts,
    facts_from_body,
    openai_counts,
)

__all__ = ["input_text", "output_text", "tap_facts"]

# Request fields that never hold prompt text (or hold media whose tokens a text count cannot see).
_SKIP_INPUT_KEYS = frozenset(
    {
        "model",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "top_k",
        "max_tokens",
        "max_completion_tokens",
        "max_output_tokens",
        "n",
        "seed",
        "role",
        "type",
        "id",
        "tool_call_id",
        "image_url",
        "inline_data",
        "inlineData",
        "source",
        "data",
        "url",
        "generationConfig",
        "options",
        "metadata",
        "user",
        "service_tier",
        "store",
        "cache_control",
        "encoding_format",
        "dimensions",
    }
)
_OUTPUT_KEYS = frozenset({"content", "text", "thinking", "partial_json", "arguments", "refusal", "delta", "response"})
_MESSAGE_OVERHEAD = 4  # tokens of role and framing per message (OpenAI's published rule of thumb)


def _loads(data: bytes | None) -> dict[str, Any]:
    if not data:
        return {}
    try:
        obj = loads(data)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def tap_facts(tap: BodyTap) -> ResponseFacts:
    """What a (possibly cut) streamed or non-streamed body said."""
    route = tap.route
    if tap.mode == "json":
        body = tap.json_body()
        if route.family == "gemini" and isinstance(body, list):  # streamGenerateContent without alt=sse
            return _gemini_chunks([b for b in body if isinstance(b, dict)])
        return facts_from_body(route.family, route.kind, body)
    if route.family == "openai":
        return _openai_stream(tap)
    if route.family == "anthropic":
        return _anthropic_stream(tap)
    if route.family == "gemini":
        return _gemini_chunks([_loads(tap.first), _loads(tap.usage_event), *map(_loads, tap.finish_events)])
    facts = facts_from_body("ollama", route.kind, _loads(tap.usage_event))
    if facts.model is None:
        facts.model = facts_from_body("ollama", route.kind, _loads(tap.first)).model
    return facts


def _openai_stream(tap: BodyTap) -> ResponseFacts:
    if tap.route.kind == "responses":
        last = _loads(tap.usage_event).get("response")
        facts = facts_from_body("openai", "responses", last if isinstance(last, dict) else {})
        if facts.model is None:
            first = _loads(tap.first).get("response")
            head = facts_from_body("openai", "responses", first if isinstance(first, dict) else {})
            facts.model, facts.response_id = head.model, head.response_id
        return facts
    first = _loads(tap.first)
    facts = ResponseFacts(
        model=first.get("model") if isinstance(first.get("model"), str) else None,
        response_id=first.get("id") if isinstance(first.get("id"), str) else None,
    )
    usage_chunk = _loads(tap.usage_event)
    facts.usage = openai_counts(usage_chunk.get("usage"))
    tier = usage_chunk.get("service_tier") or first.get("service_tier")
    facts.service_tier = tier if isinstance(tier, str) else None
    if facts.model is None and isinstance(usage_chunk.get("model"), str):
        facts.model = usage_chunk["model"]
    for raw in tap.finish_events:
        for choice in _loads(raw).get("choices") or ():
            reason = choice.get("finish_reason") if isinstance(choice, dict) else None
            if isinstance(reason, str) and reason:
                facts.finish_reasons.append(reason)
    return facts


def _anthropic_stream(tap: BodyTap) -> ResponseFacts:
    start = _loads(tap.start_event).get("message")
    facts = facts_from_body("anthropic", "messages", start if isinstance(start, dict) else {})
    facts.finish_reasons = []
    delta = _loads(tap.usage_event)
    if delta:
        facts.usage = anthropic_counts(delta.get("usage"), facts.usage)
        reason = delta.get("delta", {}).get("stop_reason") if isinstance(delta.get("delta"), dict) else None
        if isinstance(reason, str) and reason:
            facts.finish_reasons = [reason]
    elif facts.usage is not None:
        facts.usage_partial = True  # message_start's output count is a placeholder until message_delta
    return facts


def _gemini_chunks(chunks: list[dict[str, Any]]) -> ResponseFacts:
    facts = ResponseFacts()
    usage: Counts | None = None
    for chunk in chunks:
        if not chunk:
            continue
        part = facts_from_body("gemini", "generateContent", chunk)
        facts.model = facts.model or part.model
        facts.response_id = facts.response_id or part.response_id
        usage = part.usage or usage
        for reason in part.finish_reasons:
            if reason not in facts.finish_reasons:
                facts.finish_reasons.append(reason)
    facts.usage = usage
    return facts


def _collect(obj: Any, keys: frozenset[str] | None, skip: frozenset[str], out: list[str], depth: int = 0) -> None:
    if depth > 32:
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in skip:
                continue
            if isinstance(v, str):
                if keys is None or k in keys:
                    out.append(v)
            else:
                _collect(v, keys, skip, out, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            if isinstance(v, str):
                if keys is None:
                    out.append(v)
            else:
                _collect(v, keys, skip, out, depth + 1)


def input_text(body: dict[str, Any] | None) -> tuple[str, int]:
    """(text of the prompt, number of messages) from a request body."""
    if not body:
        return "", 0
    out: list[str] = []
    _collect(body, None, _SKIP_INPUT_KEYS, out)
    messages = body.get("messages") or body.get("contents") or body.get("input")
    return "\n".join(out), len(messages) if isinstance(messages, list) else 1


def output_text(tap: BodyTap | None) -> str:
    """The text the response carried so far (streamed deltas, or a JSON body's content)."""
    if tap is None:
        return ""
    out: list[str] = []
    if tap.mode == "json":
        _collect(tap.json_body(), _OUTPUT_KEYS, frozenset(), out)
    else:
        sse = tap.mode == "sse"
        for raw in tap.kept_events():
            _collect(_loads(sse_data(raw) if sse else raw), _OUTPUT_KEYS, frozenset(), out)
    return "".join(out)
