"""GenAI semantic-convention messages from each provider's request and response JSON.

Only used while message content is captured (see :mod:`._content`). Parts: ``text``, ``tool_call``,
``tool_call_response``, ``reasoning``, ``blob``, ``uri``, ``file``; anything else keeps its provider
type and no content.
"""

from __future__ import annotations

import json
from typing import Any

from costspan.instrumentation._providers import Route

__all__ = ["arguments", "request_messages", "response_messages"]


# --- parts ----------------------------------------------------------------------------------------
def _text(content: object) -> dict[str, Any]:
    return {"type": "text", "content": content if isinstance(content, str) else ""}


def arguments(raw: object) -> Any:
    """Tool-call arguments as sent: parsed when they are a JSON string, else as they are."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _data_url(url: str, modality: str) -> dict[str, Any]:
    if url.startswith("data:") and ";base64," in url:
        head, _, data = url.partition(";base64,")
        return {"type": "blob", "modality": modality, "mime_type": head[5:] or None, "content": data}
    return {"type": "uri", "modality": modality, "uri": url}


def _d(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _openai_part(p: object) -> dict[str, Any]:
    """One part of an OpenAI chat message's content list (or a responses input/output content item)."""
    part = _d(p)
    kind = part.get("type")
    if kind in ("text", "input_text", "output_text"):
        return _text(part.get("text"))
    if kind == "refusal":
        return _text(part.get("refusal"))
    if kind in ("image_url", "input_image"):
        url = part.get("image_url")
        url = _d(url).get("url") if isinstance(url, dict) else url
        if isinstance(url, str):
            return _data_url(url, "image")
        if isinstance(part.get("file_id"), str):
            return {"type": "file", "modality": "image", "file_id": part["file_id"]}
    if kind == "input_audio":
        audio = _d(part.get("input_audio"))
        fmt = audio.get("format")
        return {
            "type": "blob",
            "modality": "audio",
            "mime_type": f"audio/{fmt}" if isinstance(fmt, str) else None,
            "content": audio.get("data", ""),
        }
    if kind in ("file", "input_file"):
        file = _d(part.get("file")) or part
        if isinstance(file.get("file_id"), str):
            return {"type": "file", "modality": "file", "file_id": file["file_id"]}
        if isinstance(file.get("file_data"), str):
            return _data_url(file["file_data"], "file")
    return {"type": str(kind) if kind else "unknown"}


def _openai_content(content: object) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [_text(content)]
    if isinstance(content, list):
        return [_openai_part(p) for p in content]
    return []


def _openai_tool_calls(calls: object) -> list[dict[str, Any]]:
    out = []
    for call in calls if isinstance(calls, list) else ():
        c = _d(call)
        fn = _d(c.get("function"))
        out.append(
            {
                "type": "tool_call",
                "id": c.get("id"),
                "name": fn.get("name", ""),
                "arguments": arguments(fn.get("arguments")),
            }
        )
    return out


def _openai_message(m: object) -> dict[str, Any]:
    msg = _d(m)
    role = msg.get("role") if isinstance(msg.get("role"), str) else "user"
    if role in ("tool", "function"):
        parts: list[dict[str, Any]] = [
            {"type": "tool_call_response", "id": msg.get("tool_call_id"), "response": msg.get("content")}
        ]
    else:
        parts = _openai_content(msg.get("content")) + _openai_tool_calls(msg.get("tool_calls"))
        if not parts and isinstance(msg.get("refusal"), str):
            parts = [_text(msg["refusal"])]
    out: dict[str, Any] = {"role": role, "parts": parts}
    if isinstance(msg.get("name"), str):
        out["name"] = msg["name"]
    return out


def _responses_item(item: object) -> dict[str, Any] | None:
    """One item of a responses API ``input`` or ``output`` list, as a message (None: not a message)."""
    it = _d(item)
    kind = it.get("type", "message")
    if kind == "message":
        return {"role": it.get("role", "user"), "parts": _openai_content(it.get("content"))}
    if kind == "function_call":
        call = {
            "type": "tool_call",
            "id": it.get("call_id"),
            "name": it.get("name", ""),
            "arguments": arguments(it.get("arguments")),
        }
        return {"role": "assistant", "parts": [call]}
    if kind == "function_call_output":
        return {
            "role": "tool",
            "parts": [{"type": "tool_call_response", "id": it.get("call_id"), "response": it.get("output")}],
        }
    if kind == "reasoning":
        texts = [_d(s).get("text") for s in it.get("summary") or ()]
        return {
            "role": "assistant",
            "parts": [{"type": "reasoning", "content": "".join(t for t in texts if isinstance(t, str))}],
        }
    return None


def _anthropic_block(b: object) -> dict[str, Any]:
    block = _d(b)
    kind = block.get("type")
    if kind == "text":
        return _text(block.get("text"))
    if kind == "thinking":
        return {"type": "reasoning", "content": block.get("thinking", "")}
    if kind in ("tool_use", "server_tool_use"):
        return {
            "type": "tool_call",
            "id": block.get("id"),
            "name": block.get("name", ""),
            "arguments": block.get("input"),
        }
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, list):
            content = [_anthropic_block(c) for c in content]
        return {"type": "tool_call_response", "id": block.get("tool_use_id"), "response": content}
    if kind in ("image", "document"):
        source = _d(block.get("source"))
        modality = "image" if kind == "image" else "file"
        if source.get("type") == "base64":
            return {
                "type": "blob",
                "modality": modality,
                "mime_type": source.get("media_type"),
                "content": source.get("data", ""),
            }
        if source.get("type") == "url":
            return {"type": "uri", "modality": modality, "uri": source.get("url", "")}
        if source.get("type") == "file":
            return {"type": "file", "modality": modality, "file_id": source.get("file_id", "")}
    return {"type": str(kind) if kind else "unknown"}


def _anthropic_blocks(content: object) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [_text(content)]
    return [_anthropic_block(b) for b in content] if isinstance(content, list) else []


def _gemini_parts(parts: object) -> list[dict[str, Any]]:
    out = []
    for p in parts if isinstance(parts, list) else ():
        part = _d(p)
        inline = _d(part.get("inlineData") or part.get("inline_data"))
        file = _d(part.get("fileData") or part.get("file_data"))
        call = _d(part.get("functionCall") or part.get("function_call"))
        reply = _d(part.get("functionResponse") or part.get("function_response"))
        if isinstance(part.get("text"), str):
            out.append({"type": "reasoning", "content": part["text"]} if part.get("thought") else _text(part["text"]))
        elif inline:
            mime = inline.get("mimeType") or inline.get("mime_type")
            modality = mime.split("/", 1)[0] if isinstance(mime, str) else "file"
            out.append({"type": "blob", "modality": modality, "mime_type": mime, "content": inline.get("data", "")})
        elif file:
            mime = file.get("mimeType") or file.get("mime_type")
            modality = mime.split("/", 1)[0] if isinstance(mime, str) else "file"
            out.append(
                {
                    "type": "uri",
                    "modality": modality,
                    "mime_type": mime,
                    "uri": file.get("fileUri") or file.get("file_uri", ""),
                }
            )
        elif call:
            out.append(
                {"type": "tool_call", "id": call.get("id"), "name": call.get("name", ""), "arguments": call.get("args")}
            )
        elif reply:
            out.append({"type": "tool_call_response", "id": reply.get("id"), "response": reply.get("response")})
    return out


def _gemini_role(role: object) -> str:
    return "assistant" if role == "model" else role if isinstance(role, str) else "user"


# --- requests ---------------------------------------------------------------------------------------
def request_messages(route: Route, body: dict[str, Any]) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]]]:
    """(system instructions, input messages) of a request body."""
    family, kind = route.family, route.kind
    if family == "anthropic":
        system = body.get("system")
        instructions = _anthropic_blocks(system) if system else None
        messages = body.get("messages") or ()
        return instructions, [
            {"role": _d(m).get("role", "user"), "parts": _anthropic_blocks(_d(m).get("content"))} for m in messages
        ]
    if family == "gemini":
        system = _d(body.get("systemInstruction") or body.get("system_instruction"))
        contents = body.get("contents") or ()
        if isinstance(contents, dict):
            contents = [contents]
        return _gemini_parts(system.get("parts")) or None, [
            {"role": _gemini_role(_d(c).get("role")), "parts": _gemini_parts(_d(c).get("parts"))} for c in contents
        ]
    if family == "ollama":
        system = body.get("system")
        instructions = [_text(system)] if isinstance(system, str) and system else None
        if kind == "ollama_generate":
            return instructions, [{"role": "user", "parts": [_text(body.get("prompt"))]}]
        return instructions, [_openai_message(m) for m in body.get("messages") or ()]
    if kind == "responses":
        instructions = [_text(body["instructions"])] if isinstance(body.get("instructions"), str) else None
        given = body.get("input")
        if isinstance(given, str):
            return instructions, [{"role": "user", "parts": [_text(given)]}]
        items = (_responses_item(i) for i in given or ())
        return instructions, [m for m in items if m is not None]
    if kind == "completions":
        prompt = body.get("prompt")
        prompts = prompt if isinstance(prompt, list) else [prompt]
        return None, [{"role": "user", "parts": [_text(p)]} for p in prompts if isinstance(p, str)]
    return None, [_openai_message(m) for m in body.get("messages") or ()]


# --- responses ---------------------------------------------------------------------------------------
def response_messages(route: Route, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Output messages of a complete (non-streamed, or reassembled) response body."""
    family, kind = route.family, route.kind
    if family == "anthropic":
        msg: dict[str, Any] = {"role": body.get("role", "assistant"), "parts": _anthropic_blocks(body.get("content"))}
        if isinstance(body.get("stop_reason"), str):
            msg["finish_reason"] = body["stop_reason"]
        return [msg]
    if family == "gemini":
        out = []
        for cand in body.get("candidates") or ():
            content = _d(_d(cand).get("content"))
            m = {"role": _gemini_role(content.get("role", "model")), "parts": _gemini_parts(content.get("parts"))}
            if isinstance(_d(cand).get("finishReason"), str):
                m["finish_reason"] = _d(cand)["finishReason"]
            out.append(m)
        return out
    if family == "ollama":
        message = _openai_message(body["message"]) if isinstance(body.get("message"), dict) else None
        m = message or {"role": "assistant", "parts": [_text(body.get("response"))]}
        if isinstance(body.get("done_reason"), str):
            m["finish_reason"] = body["done_reason"]
        return [m]
    if kind == "responses":
        items = (_responses_item(i) for i in body.get("output") or ())
        found = [m for m in items if m is not None]
        parts = [p for m in found for p in m["parts"]]
        status = body.get("status")
        merged: dict[str, Any] = {"role": "assistant", "parts": parts}
        if isinstance(status, str):
            merged["finish_reason"] = status
        return [merged] if parts else []
    out = []
    for choice in body.get("choices") or ():
        c = _d(choice)
        if kind == "completions":
            m = {"role": "assistant", "parts": [_text(c.get("text"))]}
        else:
            m = _openai_message({"role": "assistant", **_d(c.get("message"))})
        if isinstance(c.get("finish_reason"), str):
            m["finish_reason"] = c["finish_reason"]
        out.append(m)
    return out
