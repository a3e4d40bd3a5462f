"""Which provider API a request is for, chosen by host and path, and what its JSON body asks for."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from json.scanner import make_scanner
from typing import Any
from urllib.parse import urlsplit

__all__ = ["RequestFacts", "Route", "Router", "apply_rewrite", "loads", "parse_request"]

# What json.loads runs once it has a str (the C scanner); typeshed types its argument as a scanner.
_scan = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


def loads(data: bytes) -> Any:
    """``json.loads(data)``, the same result and errors, with a shorter way for the usual body: a UTF-8
    JSON object with nothing around it (json.loads would first sniff the encoding, then match
    whitespace on both sides). Anything else goes to json.loads itself."""
    if data[:1] == b"{" and data[1:2] != b"\x00":  # UTF-8, as json.loads would detect it
        try:
            text = data.decode("utf-8", "surrogatepass")
            obj, end = _scan(text, 0)
        except (ValueError, StopIteration):
            pass  # json.loads raises the error it would raise
        else:
            if end == len(text):
                return obj
    return json.loads(data)


# Semconv provider names by API host.
_HOST_PROVIDERS: Mapping[str, str] = {
    "api.openai.com": "openai",
    "api.anthropic.com": "anthropic",
    "generativelanguage.googleapis.com": "gcp.gemini",
    "api.groq.com": "groq",
    "api.deepseek.com": "deepseek",
    "api.mistral.ai": "mistral_ai",
    "openrouter.ai": "openrouter",
    "api.together.xyz": "together",
    "api.cerebras.ai": "cerebras",
    "api.x.ai": "x_ai",
    "api.fireworks.ai": "fireworks",
}
_HOST_SUFFIX_PROVIDERS = ((".openai.azure.com", "azure.ai.openai"), (".services.ai.azure.com", "azure.ai.openai"))
_OLLAMA_PORT = 11434
_ROUTE_CACHE_MAX = 2048


@dataclass(frozen=True, slots=True)
class Route:
    """One provider endpoint: how to read its request and response."""

    family: str  # wire format: openai | anthropic | gemini | ollama
    kind: str  # chat | completions | responses | embeddings | messages | generate | ollama_chat | ...
    provider: str  # semconv gen_ai.provider.name
    operation: str  # semconv gen_ai.operation.name
    path_model: str | None = None  # Gemini's model, or an Azure deployment, taken from the path
    azure_deployment: str | None = None


def _openai_kind(path: str) -> tuple[str, str] | None:
    if path.endswith("/chat/completions"):
        return "chat", "chat"
    if path.endswith("/completions"):
        return "completions", "text_completion"
    if path.endswith("/responses"):
        return "responses", "chat"
    if path.endswith("/embeddings"):
        return "embeddings", "embeddings"
    return None


class Router:
    """Maps (host, port, path) to a :class:`Route`, or ``None`` for anything that is not a billed LLM call.

    ``base_urls`` maps a base URL (e.g. ``"https://llm-gateway.internal/openai"``) to the provider name
    to report for calls under it; the wire format is still chosen by the path. ``azure_deployments``
    maps an Azure deployment name to its model, for responses that do not name the model.
    """

    def __init__(
        self,
        base_urls: Mapping[str, str] | None = None,
        azure_deployments: Mapping[str, str] | None = None,
    ) -> None:
        self._bases: list[tuple[str, int | None, str, str]] = []
        for url, provider in (base_urls or {}).items():
            parts = urlsplit(url if "://" in url else f"https://{url}")
            if not parts.hostname or not provider:
                raise ValueError(f"base URL {url!r} needs a host and a provider name")
            self._bases.append((parts.hostname.lower(), parts.port, parts.path.rstrip("/"), provider))
        self._bases.sort(key=lambda b: len(b[2]), reverse=True)
        self.azure_deployments: dict[str, str] = dict(azure_deployments or {})
        self._cache: dict[tuple[str, int | None, str], Route | None] = {}

    def route(self, host: str, port: int | None, path: str) -> Route | None:
        key = (host, port, path)
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = self._route(host.lower(), port, path)
        if len(self._cache) >= _ROUTE_CACHE_MAX:
            self._cache.clear()
        self._cache[key] = found
        return found

    def _provider_override(self, host: str, port: int | None, path: str) -> str | None:
        for b_host, b_port, b_path, provider in self._bases:
            if host == b_host and (b_port is None or b_port == port) and path.startswith(b_path):
                return provider
        return None

    def _route(self, host: str, port: int | None, path: str) -> Route | None:
        override = self._provider_override(host, port, path)
        host_provider = _HOST_PROVIDERS.get(host)
        if host_provider is None:
            for suffix, name in _HOST_SUFFIX_PROVIDERS:
                if host.endswith(suffix):
                    host_provider = name
        if host_provider is None and port == _OLLAMA_PORT:
            host_provider = "ollama"

        if "/openai/deployments/" in path:
            deployment = path.split("/openai/deployments/", 1)[1].split("/", 1)[0]
            openai_kind = _openai_kind(path)
            if not deployment or openai_kind is None:
                return None
            provider = override or "azure.ai.openai"
            return Route("openai", openai_kind[0], provider, openai_kind[1], deployment, deployment)
        if path.endswith("/messages"):
            return Route("anthropic", "messages", override or host_provider or "anthropic", "chat")
        last = path.rsplit("/", 1)[-1]
        if ":" in last and "/models/" in path:
            model, _, method = last.partition(":")
            if method in ("generateContent", "streamGenerateContent"):
                provider = override or host_provider or "gcp.gemini"
                return Route("gemini", method, provider, "generate_content", model)
            return None
        if path.endswith("/api/chat"):
            return Route("ollama", "ollama_chat", override or host_provider or "ollama", "chat")
        if path.endswith("/api/generate"):
            return Route("ollama", "ollama_generate", override or host_provider or "ollama", "text_completion")
        if path.endswith(("/api/embed", "/api/embeddings")):
            return Route("ollama", "ollama_embed", override or host_provider or "ollama", "embeddings")
        openai_kind = _openai_kind(path)
        if openai_kind is None:
            return None
        return Route("openai", openai_kind[0], override or host_provider or "openai", openai_kind[1])


@dataclass(slots=True)
class RequestFacts:
    """What the request body asks for (no content kept beyond the parsed body itself)."""

    body: dict[str, Any] | None
    model: str | None
    stream: bool
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    #: The caller already asked for a usage chunk (stream_options.include_usage).
    include_usage: bool


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def parse_request(route: Route, content: bytes) -> RequestFacts:
    """Read the JSON body of a request to ``route``; a body that is not JSON gives empty facts."""
    body: dict[str, Any] | None = None
    if content[:1] == b"{" or content.lstrip()[:1] == b"{":
        try:
            parsed = loads(content)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            body = parsed
    b: dict[str, Any] = body or {}
    model = b.get("model")
    model = model if isinstance(model, str) and model else route.path_model
    if route.family == "gemini":
        cfg = b.get("generationConfig")
        cfg = cfg if isinstance(cfg, dict) else {}
        stream = route.kind == "streamGenerateContent"
        return RequestFacts(
            body,
            model,
            stream,
            _int(cfg.get("maxOutputTokens")),
            _number(cfg.get("temperature")),
            _number(cfg.get("topP")),
            True,
        )
    if route.family == "ollama":
        options = b.get("options")
        options = options if isinstance(options, dict) else {}
        stream = b.get("stream", route.kind != "ollama_embed") is not False
        return RequestFacts(
            body,
            model,
            stream,
            _int(options.get("num_predict")),
            _number(options.get("temperature")),
            _number(options.get("top_p")),
            True,
        )
    stream = b.get("stream") is True
    if route.kind == "responses":
        max_tokens = _int(b.get("max_output_tokens"))
    else:
        max_tokens = _int(b.get("max_tokens"))
        if max_tokens is None:
            max_tokens = _int(b.get("max_completion_tokens"))
    opts = b.get("stream_options")
    include_usage = route.kind not in ("chat", "completions") or (
        isinstance(opts, dict) and opts.get("include_usage") is True
    )
    return RequestFacts(
        body, model, stream, max_tokens, _number(b.get("temperature")), _number(b.get("top_p")), include_usage
    )


def apply_rewrite(
    route: Route,
    body: dict[str, Any],
    model: str | None,
    max_tokens: int | None,
    *,
    disable_tools: bool = False,
    temperature: float | None = None,
) -> dict[str, Any]:
    """A copy of ``body`` with a new model and/or max_tokens, without its tools and/or with a new
    temperature, in the provider's own field names."""
    out = dict(body)
    if model is not None and route.family != "gemini":
        out["model"] = model
    if disable_tools:
        for key in _TOOL_KEYS.get(route.family, _TOOL_KEYS["openai"]):
            out.pop(key, None)
    if temperature is not None:
        if route.family == "gemini":
            cfg = dict(out.get("generationConfig") or {})
            cfg["temperature"] = temperature
            out["generationConfig"] = cfg
        elif route.family == "ollama":
            options = dict(out.get("options") or {})
            options["temperature"] = temperature
            out["options"] = options
        else:
            out["temperature"] = temperature
    if max_tokens is None:
        return out
    if route.family == "gemini":
        cfg = dict(out.get("generationConfig") or {})
        cfg["maxOutputTokens"] = max_tokens
        out["generationConfig"] = cfg
    elif route.family == "ollama":
        options = dict(out.get("options") or {})
        options["num_predict"] = max_tokens
        out["options"] = options
    elif route.kind == "responses":
        out["max_output_tokens"] = max_tokens
    elif route.kind == "chat" and "max_tokens" not in out:
        out["max_completion_tokens"] = max_tokens
    else:
        out["max_tokens"] = max_tokens
    return out


#: wire family → the body keys that define or steer tools (removed together: a ``tool_choice`` left
#: without ``tools`` is a 400 at every provider)
_TOOL_KEYS: dict[str, tuple[str, ...]] = {
    "openai": ("tools", "tool_choice", "parallel_tool_calls", "functions", "function_call"),
    "anthropic": ("tools", "tool_choice"),
    "gemini": ("tools", "toolConfig", "tool_config"),
    "ollama": ("tools",),
}


def tool_count(route: Route, body: dict[str, Any] | None) -> int:
    """How many tool definitions ``body`` carries (Gemini: function declarations across its tools)."""
    if not body:
        return 0
    n = 0
    for key in _TOOL_KEYS.get(route.family, _TOOL_KEYS["openai"]):
        value = body.get(key)
        if key in ("tools", "functions") and isinstance(value, list):
            if route.family == "gemini":
                n += sum(
                    len(t.get("functionDeclarations") or t.get("function_declarations") or [None])
                    if isinstance(t, dict)
                    else 1
                    for t in value
                )
            else:
                n += len(value)
    return n


def with_usage_requested(body: dict[str, Any]) -> dict[str, Any]:
    """A copy of an OpenAI-style streaming body that asks for the final usage chunk."""
    out = dict(body)
    opts = out.get("stream_options")
    out["stream_options"] = {**(opts if isinstance(opts, dict) else {}), "include_usage": True}
    return out


def dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
