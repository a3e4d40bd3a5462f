"""Recognising a model id however a client spells it."""

from __future__ import annotations

import re
from collections.abc import Callable

from costspan.pricing._schema import Clause

__all__ = ["PROVIDER_ALIASES", "compile_clause", "id_candidates"]

Predicate = Callable[[str], bool]

#: Provider names as clients and the GenAI semantic conventions spell them → catalog provider ids.
PROVIDER_ALIASES: dict[str, str] = {
    "openai": "openai",
    "azure": "azure",
    "azure_openai": "azure",
    "azure-openai": "azure",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "az.ai.openai": "azure",
    "az.ai.inference": "azure",
    "anthropic": "anthropic",
    "google": "google",
    "gemini": "google",
    "vertex_ai": "google",
    "vertexai": "google",
    "vertex": "google",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "google_genai": "google",
    "aws": "aws",
    "bedrock": "aws",
    "aws.bedrock": "aws",
    "aws_bedrock": "aws",
    "groq": "groq",
    "deepseek": "deepseek",
    "mistral": "mistral",
    "mistralai": "mistral",
    "mistral_ai": "mistral",
    "xai": "x-ai",
    "x_ai": "x-ai",
    "x-ai": "x-ai",
    "grok": "x-ai",
    "cerebras": "cerebras",
    "openrouter": "openrouter",
    "together": "together",
    "together_ai": "together",
    "togetherai": "together",
    "fireworks": "fireworks",
    "fireworks_ai": "fireworks",
    "perplexity": "perplexity",
    "cohere": "cohere",
    "ollama": "ollama",
    "meta": "meta",
    "meta-llama": "meta",
    "moonshotai": "moonshotai",
}

# Bedrock ids: optional cross-region prefix, a vendor, the model, an optional version suffix.
_BEDROCK = re.compile(
    r"^(?:(?:us|eu|apac|ap|global|us-gov|jp|au|ca)\.)?"
    r"(anthropic|meta|amazon|mistral|cohere|ai21|deepseek|openai|qwen|writer)\.(.+?)(?:-v\d+(?::\d+)?|:\d+)?$"
)
# Vertex resource names: .../publishers/{vendor}/models/{model}
_VERTEX = re.compile(r"(?:^|/)publishers/([^/]+)/models/([^/:]+)")
# Compact dates as some gateways spell them: gpt-5.2-20251211 → gpt-5.2-2025-12-11
_COMPACT_DATE = re.compile(r"-(20\d\d)(\d\d)(\d\d)$")
_VERTEX_VENDORS = {"google": "google", "anthropic": "anthropic", "meta": "meta", "mistralai": "mistral"}


def compile_clause(clause: Clause) -> Predicate:
    """Turn a catalog match clause into a predicate over a lower-cased model id."""
    if clause.equals is not None:
        target = clause.equals.lower()
        return lambda s: s == target
    if clause.starts_with is not None:
        prefix = clause.starts_with.lower()
        return lambda s: s.startswith(prefix)
    if clause.ends_with is not None:
        suffix = clause.ends_with.lower()
        return lambda s: s.endswith(suffix)
    if clause.contains is not None:
        part = clause.contains.lower()
        return lambda s: part in s
    if clause.regex is not None:
        pattern = re.compile(clause.regex)
        return lambda s: pattern.search(s) is not None
    if clause.any_of is not None:
        preds = tuple(compile_clause(c) for c in clause.any_of)
        return lambda s: any(p(s) for p in preds)
    assert clause.all_of is not None  # the schema guarantees exactly one key
    preds = tuple(compile_clause(c) for c in clause.all_of)
    return lambda s: all(p(s) for p in preds)


def id_candidates(model: str) -> list[tuple[str | None, str]]:
    """Spellings to try for a lower-cased model id, each with the vendor it implies (if any)."""
    out: list[tuple[str | None, str]] = [(None, model)]

    def add(vendor: str | None, candidate: str) -> None:
        if candidate and (vendor, candidate) not in out:
            out.append((vendor, candidate))

    vertex = _VERTEX.search(model)
    if vertex:
        add(_VERTEX_VENDORS.get(vertex.group(1), vertex.group(1)), vertex.group(2))
    elif "/" in model:
        prefix, _, rest = model.rpartition("/")
        add(PROVIDER_ALIASES.get(prefix.rsplit("/", 1)[-1]), rest)
    bedrock = _BEDROCK.match(model)
    if bedrock:
        add(PROVIDER_ALIASES.get(bedrock.group(1), bedrock.group(1)), bedrock.group(2))
    for vendor, candidate in list(out):
        if "@" in candidate:
            add(vendor, candidate.replace("@", "-"))
        compact = _COMPACT_DATE.search(candidate)
        if compact:
            y, m, d = compact.groups()
            add(vendor, f"{candidate[: compact.start()]}-{y}-{m}-{d}")
        if candidate.endswith(":latest"):
            add(vendor, candidate.removesuffix(":latest"))
    return out
