"""Usage and response facts from each provider's JSON, turned into semconv-inclusive counts.

Provider spellings differ: OpenAI's prompt_tokens include
cached tokens; Anthropic's input_tokens exclude cache reads and writes; Gemini's candidatesTokenCount
excludes thoughtsTokenCount. Everything here returns inclusive counts: input includes cache reads and
writes, output includes reasoning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Counts", "ResponseFacts", "anthropic_counts", "facts_from_body", "gemini_counts", "openai_counts"]


@dataclass(slots=True)
class Counts:
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    cache_write_1h: int = 0
    reasoning: int = 0


@dataclass(slots=True)
class ResponseFacts:
    model: str | None = None
    response_id: str | None = None
    finish_reasons: list[str] = field(default_factory=list)
    usage: Counts | None = None
    service_tier: str | None = None
    #: usage is partial: some counts came from an estimate (e.g. a cut Anthropic stream).
    usage_partial: bool = False


def _i(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return value


def _d(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _s(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def openai_counts(usage: object) -> Counts | None:
    """Chat/completions (prompt_tokens…) and responses/embeddings (input_tokens…) usage objects."""
    # Written out rather than with _i/_d per field: this runs on every OpenAI-style call.
    if not isinstance(usage, dict) or not usage:
        return None
    u = usage
    if "prompt_tokens" in u or "completion_tokens" in u:
        inp, out = u.get("prompt_tokens"), u.get("completion_tokens")
        details, out_details = u.get("prompt_tokens_details"), u.get("completion_tokens_details")
    elif "input_tokens" in u or "output_tokens" in u:
        inp, out = u.get("input_tokens"), u.get("output_tokens")
        details, out_details = u.get("input_tokens_details"), u.get("output_tokens_details")
    else:
        return None
    inp = inp if type(inp) is int and inp >= 0 else _i(inp)
    out = out if type(out) is int and out >= 0 else _i(out)
    cache_read = cache_write = reasoning = 0
    if isinstance(details, dict) and details:
        cache_read = min(_i(details.get("cached_tokens")), inp)
        cache_write = _i(details.get("cache_write_tokens")) or _i(details.get("cache_creation_tokens"))
        cache_write = min(cache_write, inp - cache_read)
    if isinstance(out_details, dict) and out_details:
        reasoning = min(_i(out_details.get("reasoning_tokens")), out)
    return Counts(inp, out, cache_read, cache_write, 0, reasoning)


def anthropic_counts(usage: object, base: Counts | None = None) -> Counts | None:
    """Anthropic usage (input EXCLUDES cache tokens). ``base`` holds message_start's counts that a
    cumulative message_delta usage updates field by field (keep the last value, never sum)."""
    u = _d(usage)
    if not u:
        return base
    prev_uncached = base.input - base.cache_read - base.cache_write if base else 0
    uncached = _i(u["input_tokens"]) if "input_tokens" in u else prev_uncached
    cache_read = (
        _i(u["cache_read_input_tokens"]) if "cache_read_input_tokens" in u else (base.cache_read if base else 0)
    )
    if "cache_creation_input_tokens" in u:
        cache_write = _i(u["cache_creation_input_tokens"])
    else:
        cache_write = base.cache_write if base else 0
    creation = _d(u.get("cache_creation"))
    if "ephemeral_1h_input_tokens" in creation:
        cache_1h = _i(creation["ephemeral_1h_input_tokens"])
    else:
        cache_1h = base.cache_write_1h if base else 0
    if creation and cache_write == 0:
        cache_write = _i(creation.get("ephemeral_5m_input_tokens")) + cache_1h
    output = _i(u["output_tokens"]) if "output_tokens" in u else (base.output if base else 0)
    details = _d(u.get("output_tokens_details"))
    prev_reasoning = base.reasoning if base else 0
    reasoning = _i(details["thinking_tokens"]) if "thinking_tokens" in details else prev_reasoning
    return Counts(
        uncached + cache_read + cache_write,
        output,
        cache_read,
        cache_write,
        min(cache_1h, cache_write),
        min(reasoning, output),
    )


def gemini_counts(meta: object) -> Counts | None:
    """Gemini usageMetadata: billed output is candidates + thoughts."""
    m = _d(meta)
    if not m:
        return None
    inp = _i(m.get("promptTokenCount")) + _i(m.get("toolUsePromptTokenCount"))
    thoughts = _i(m.get("thoughtsTokenCount"))
    out = _i(m.get("candidatesTokenCount")) + thoughts
    cache_read = min(_i(m.get("cachedContentTokenCount")), inp)
    return Counts(inp, out, cache_read, 0, 0, thoughts)


def ollama_counts(obj: object) -> Counts | None:
    d = _d(obj)
    if "prompt_eval_count" not in d and "eval_count" not in d:
        return None
    return Counts(_i(d.get("prompt_eval_count")), _i(d.get("eval_count")))


def facts_from_body(family: str, kind: str, obj: object) -> ResponseFacts:
    """Facts from a complete (non-streamed) JSON response body."""
    d = _d(obj)
    facts = ResponseFacts()
    if family == "openai":  # the common case, written out (no helper call per field)
        model, rid, tier = d.get("model"), d.get("id"), d.get("service_tier")
        facts.model = model if isinstance(model, str) and model else None
        facts.response_id = rid if isinstance(rid, str) and rid else None
        facts.usage = openai_counts(d.get("usage"))
        facts.service_tier = tier if isinstance(tier, str) and tier else None
        if kind == "responses":
            status = _s(d.get("status"))
            if status:
                facts.finish_reasons = [status]
        else:
            for choice in d.get("choices") or ():
                reason = choice.get("finish_reason") if isinstance(choice, dict) else None
                if isinstance(reason, str) and reason:
                    facts.finish_reasons.append(reason)
    elif family == "anthropic":
        facts.model = _s(d.get("model"))
        facts.response_id = _s(d.get("id"))
        facts.usage = anthropic_counts(d.get("usage"))
        facts.service_tier = _s(_d(d.get("usage")).get("service_tier"))
        reason = _s(d.get("stop_reason"))
        if reason:
            facts.finish_reasons = [reason]
    elif family == "gemini":
        facts.model = _s(d.get("modelVersion"))
        facts.response_id = _s(d.get("responseId"))
        facts.usage = gemini_counts(d.get("usageMetadata"))
        for cand in d.get("candidates") or ():
            reason = _s(_d(cand).get("finishReason"))
            if reason:
                facts.finish_reasons.append(reason)
    elif family == "ollama":
        facts.model = _s(d.get("model"))
        facts.usage = ollama_counts(d)
        reason = _s(d.get("done_reason"))
        if reason:
            facts.finish_reasons = [reason]
    return facts
