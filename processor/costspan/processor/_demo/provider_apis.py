"""What the fake provider answers, per API: a JSON body or a stream of events (see fake_provider.py)."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from costspan.processor._demo.provider_script import Behavior, FakeUsage, RecordedRequest

TEXT_CHUNKS = ("Hello", " from", " the", " fake", " provider", ".")


@dataclass(frozen=True)
class Json:
    body: Any


@dataclass(frozen=True)
class Stream:
    events: Iterator[bytes]
    content_type: str = "text/event-stream"


Answer = Json | Stream


def _texts(b: Behavior) -> tuple[str, ...]:
    return TEXT_CHUNKS if b.chunks is None else (" tok",) * b.chunks


# --- OpenAI ----------------------------------------------------------------------------------------
def _openai_usage(u: FakeUsage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.input,
        "completion_tokens": u.output,
        "total_tokens": u.input + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cache_read, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning, "audio_tokens": 0},
    }


def openai_chat(b: Behavior, p: dict[str, Any], model: str, u: FakeUsage | None) -> Answer:
    base = {"id": "chatcmpl-fake1", "object": "chat.completion", "created": 1700000000, "model": model}
    if not p.get("stream"):
        body = {
            **base,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(TEXT_CHUNKS), "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }
        if u is not None:
            body["usage"] = _openai_usage(u)
        return Json(body)
    include = bool((p.get("stream_options") or {}).get("include_usage"))

    def events() -> Iterator[bytes]:
        chunk = {**base, "object": "chat.completion.chunk", "service_tier": "default"}

        def ev(obj: dict[str, Any]) -> bytes:
            if include:
                obj = {**obj, "usage": None}
            return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

        first = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
        yield ev({**chunk, "choices": [first]})
        for text in _texts(b):
            yield ev({**chunk, "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})
        if b.error_event:
            yield b'data: {"error":{"message":"overloaded","type":"server_error"}}\n\n'
            return
        yield ev({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if include and u is not None:
            yield (
                b"data: "
                + json.dumps({**chunk, "choices": [], "usage": _openai_usage(u)}, separators=(",", ":")).encode()
                + b"\n\n"
            )
        yield b"data: [DONE]\n\n"

    return Stream(events())


def openai_completions(b: Behavior, p: dict[str, Any], model: str, u: FakeUsage | None) -> Answer:
    base = {"id": "cmpl-fake1", "object": "text_completion", "created": 1700000000, "model": model}
    if not p.get("stream"):
        body: dict[str, Any] = {
            **base,
            "choices": [{"index": 0, "text": "".join(TEXT_CHUNKS), "logprobs": None, "finish_reason": "stop"}],
        }
        if u is not None:
            body["usage"] = _openai_usage(u)
        return Json(body)
    include = bool((p.get("stream_options") or {}).get("include_usage"))

    def events() -> Iterator[bytes]:
        for i, text in enumerate(TEXT_CHUNKS):
            reason = "stop" if i == len(TEXT_CHUNKS) - 1 else None
            obj = {**base, "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": reason}]}
            yield b"data: " + json.dumps(obj).encode() + b"\n\n"
        if include and u is not None:
            yield b"data: " + json.dumps({**base, "choices": [], "usage": _openai_usage(u)}).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    return Stream(events())


def openai_responses(b: Behavior, p: dict[str, Any], model: str, u: FakeUsage | None) -> Answer:
    text = "".join(TEXT_CHUNKS)
    usage = (
        {
            "input_tokens": u.input,
            "input_tokens_details": {"cached_tokens": u.cache_read},
            "output_tokens": u.output,
            "output_tokens_details": {"reasoning_tokens": u.reasoning},
            "total_tokens": u.input + u.output,
        }
        if u is not None
        else None
    )
    message = {
        "id": "msg_fake1",
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    resp: dict[str, Any] = {
        "id": "resp_fake1",
        "object": "response",
        "created_at": 1700000000,
        "model": model,
        "status": "completed",
        "output": [message],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
    }
    if not p.get("stream"):
        return Json(resp)

    def events() -> Iterator[bytes]:
        seq = 0

        def ev(name: str, obj: dict[str, Any]) -> bytes:
            nonlocal seq
            seq += 1
            data = json.dumps({"type": name, "sequence_number": seq, **obj}).encode()
            return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"

        created = {**resp, "status": "in_progress", "output": [], "usage": None}
        yield ev("response.created", {"response": created})
        for t in TEXT_CHUNKS:
            yield ev(
                "response.output_text.delta",
                {"item_id": "msg_fake1", "output_index": 0, "content_index": 0, "delta": t},
            )
        yield ev(
            "response.output_text.done",
            {"item_id": "msg_fake1", "output_index": 0, "content_index": 0, "text": text},
        )
        yield ev("response.completed", {"response": resp})

    return Stream(events())


def openai_embeddings(b: Behavior, p: dict[str, Any], model: str, u: FakeUsage | None) -> Answer:
    vector = [0.25, -0.5, 0.75]
    emb: Any = vector
    if p.get("encoding_format") == "base64":
        emb = base64.b64encode(struct.pack("<3f", *vector)).decode()
    inputs = p.get("input")
    n = len(inputs) if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else 1
    body: dict[str, Any] = {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": emb} for i in range(n)],
        "model": model,
    }
    if u is not None:
        body["usage"] = {"prompt_tokens": u.input, "total_tokens": u.input}
    return Json(body)


# --- Anthropic -------------------------------------------------------------------------------------
def anthropic(b: Behavior, p: dict[str, Any], model: str, u: FakeUsage | None) -> Answer:
    def usage_obj(output: int) -> dict[str, Any]:
        if u is None:
            return {}
        return {
            "input_tokens": u.input - u.cache_read - u.cache_write,
            "cache_read_input_tokens": u.cache_read,
            "cache_creation_input_tokens": u.cache_write,
            "cache_creation": {
                "ephemeral_5m_input_tokens": u.cache_write - u.cache_write_1h,
                "ephemeral_1h_input_tokens": u.cache_write_1h,
            },
            "output_tokens": output,
            "service_tier": "standard",
        }

    text = "".join(TEXT_CHUNKS)
    msg: dict[str, Any] = {
        "id": "msg_fake1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage_obj(u.output if u else 0),
    }
    if not p.get("stream"):
        return Json(msg)

    def events() -> Iterator[bytes]:
        def ev(name: str, obj: dict[str, Any]) -> bytes:
            return b"event: " + name.encode() + b"\ndata: " + json.dumps({"type": name, **obj}).encode() + b"\n\n"

        start = {**msg, "content": [], "stop_reason": None, "usage": usage_obj(1)}
        yield ev("message_start", {"message": start})
        yield ev("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
        yield ev("ping", {})
        for t in _texts(b):
            yield ev("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": t}})
        if b.error_event:
            yield ev("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})
            return
        yield ev("content_block_stop", {"index": 0})
        delta_usage = {"output_tokens": u.output} if u is not None else {}
        yield ev(
            "message_delta",
            {"delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": delta_usage},
        )
        yield ev("message_stop", {})

    return Stream(events())


# --- Gemini ----------------------------------------------------------------------------------------
def gemini(b: Behavior, req: RecordedRequest, model: str, u: FakeUsage | None) -> Answer:
    def meta(final: bool) -> dict[str, Any]:
        if u is None:
            return {}
        out = u.output - u.reasoning
        m = {
            "promptTokenCount": u.input,
            "candidatesTokenCount": out if final else 1,
            "totalTokenCount": u.input + (u.output if final else 1),
        }
        if u.reasoning:
            m["thoughtsTokenCount"] = u.reasoning
        if u.cache_read:
            m["cachedContentTokenCount"] = u.cache_read
        return {"usageMetadata": m}

    def chunk(text: str, final: bool) -> dict[str, Any]:
        cand: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        if final:
            cand["finishReason"] = "STOP"
        return {"candidates": [cand], **meta(final), "modelVersion": model, "responseId": "gem-fake1"}

    if ":streamGenerateContent" not in req.path:
        return Json(chunk("".join(TEXT_CHUNKS), True))
    chunks = [chunk(t, i == len(TEXT_CHUNKS) - 1) for i, t in enumerate(TEXT_CHUNKS)]
    if req.query.get("alt") == ["sse"]:
        return Stream(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks)
    else:
        body = ("[" + ",\r\n".join(json.dumps(c) for c in chunks) + "]").encode()
        return Stream(iter([body[: len(body) // 2], body[len(body) // 2 :]]), "application/json")


# --- Ollama ----------------------------------------------------------------------------------------
def ollama(b: Behavior, p: dict[str, Any], model: str, u: FakeUsage | None) -> Answer:
    final: dict[str, Any] = {
        "model": model,
        "created_at": "2026-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "stop",
    }
    if u is not None:
        final.update(prompt_eval_count=u.input, eval_count=u.output, total_duration=1000)
    if p.get("stream") is False:
        final["message"] = {"role": "assistant", "content": "".join(TEXT_CHUNKS)}
        return Json(final)

    def events() -> Iterator[bytes]:
        for t in TEXT_CHUNKS:
            line = {"model": model, "message": {"role": "assistant", "content": t}, "done": False}
            yield json.dumps(line).encode() + b"\n"
        yield json.dumps(final).encode() + b"\n"

    return Stream(events(), "application/x-ndjson")
