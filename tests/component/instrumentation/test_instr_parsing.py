"""Body watching, usage normalization and offline tokenizers, below the HTTP layer."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import tiktoken

from costspan.instrumentation._facts import output_text, tap_facts
from costspan.instrumentation._providers import Router
from costspan.instrumentation._stream import BodyTap
from costspan.instrumentation._tokens import (
    CLAUDE_FACTOR,
    COARSE_ESTIMATOR,
    GEMINI_FACTOR,
    TokenCounter,
    cache_dir,
    coarse_count,
    lean_high,
    load_encoding,
    scaled,
)
from costspan.instrumentation._usage import Counts, anthropic_counts, gemini_counts, openai_counts


def chunk(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


OPENAI_STREAM = (
    chunk({"id": "c1", "model": "gpt-4o-2024-08-06", "choices": [{"delta": {"content": "Hi"}, "finish_reason": None}]})
    + chunk({"id": "c1", "model": "gpt-4o-2024-08-06", "choices": [{"delta": {}, "finish_reason": "stop"}]})
    + chunk({"id": "c1", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}})
    + b"data: [DONE]\n\n"
)


def run_tap(
    body: bytes, pieces: int, filter_usage: bool, encoding: str = "", crlf: bool = False
) -> tuple[BodyTap, bytes]:
    route = Router().route("api.openai.com", None, "/v1/chat/completions")
    assert route is not None
    if crlf:
        body = body.replace(b"\n", b"\r\n")
    raw = gzip.compress(body) if encoding == "gzip" else body
    ended: list[BaseException | None] = []
    tap = BodyTap(route, "text/event-stream", encoding, filter_usage, lambda t, e: ended.append(e))
    size = max(1, len(raw) // pieces)
    out = b"".join(tap.feed(raw[i : i + size]) for i in range(0, len(raw), size)) + tap.end_of_body()
    assert ended == [None]
    return tap, out


@pytest.mark.parametrize("pieces", [1, 3, 17, 400])
@pytest.mark.parametrize("crlf", [False, True])
def test_tap_reads_usage_whatever_the_chunk_boundaries(pieces: int, crlf: bool) -> None:
    tap, out = run_tap(OPENAI_STREAM, pieces, filter_usage=False, crlf=crlf)
    assert out == (OPENAI_STREAM.replace(b"\n", b"\r\n") if crlf else OPENAI_STREAM)
    facts = tap_facts(tap)
    assert (facts.model, facts.response_id, facts.finish_reasons) == ("gpt-4o-2024-08-06", "c1", ["stop"])
    assert facts.usage == Counts(9, 2)
    assert tap.complete


@pytest.mark.parametrize("pieces", [1, 5, 400])
@pytest.mark.parametrize("encoding", ["", "gzip"])
def test_filtering_removes_only_the_usage_only_chunk(pieces: int, encoding: str) -> None:
    tap, out = run_tap(OPENAI_STREAM, pieces, filter_usage=True, encoding=encoding)
    assert b'"usage"' not in out
    assert out.count(b"data: ") == 3 and out.endswith(b"data: [DONE]\n\n")
    assert tap_facts(tap).usage == Counts(9, 2)


def test_usage_on_a_chunk_with_choices_is_kept_and_read() -> None:
    body = chunk(
        {
            "id": "c",
            "choices": [{"delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1},
        }
    )
    tap, out = run_tap(body + b"data: [DONE]\n\n", 2, filter_usage=True)
    assert b'"usage"' in out
    assert tap_facts(tap).usage == Counts(5, 1)


def _content(text: str) -> bytes:
    return chunk({"id": "c1", "choices": [{"delta": {"content": text}, "finish_reason": None}], "usage": None})


@pytest.mark.parametrize("filter_usage", [False, True])
def test_one_event_per_chunk_takes_the_quick_path_and_misses_nothing(filter_usage: bool) -> None:
    """Chunks as a network delivers them: ordinary content events, alone or several in a chunk, are kept
    as they came; the finish, usage, error and [DONE] events among them (whole, split, or sharing a chunk
    with content) are all read."""
    route = Router().route("api.openai.com", None, "/v1/chat/completions")
    assert route is not None
    ended: list[BaseException | None] = []
    tap = BodyTap(route, "text/event-stream", "", filter_usage, lambda t, e: ended.append(e))
    finish = chunk({"id": "c1", "choices": [{"delta": {}, "finish_reason": "length"}], "usage": None})
    usage = chunk({"id": "c1", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}})
    error = chunk({"error": {"type": "overloaded_error", "message": "busy"}})
    pieces = [_content("a"), _content("b"), finish[:11], finish[11:], _content("c") + _content("d")]
    pieces += [_content("e") + usage, error]
    pieces.append(b"data: [DONE]\n\n")
    out = b"".join(tap.feed(p) for p in pieces) + tap.end_of_body()
    expected = b"".join(pieces)
    assert out == (expected.replace(usage, b"") if filter_usage else expected)
    assert ended == [None] and tap.complete
    # every event but [DONE] is kept (c and d as the one chunk they came in); the text an estimate reads:
    assert len(list(tap.kept_events())) == 8 and output_text(tap) == "abcde"
    facts = tap_facts(tap)
    assert (facts.finish_reasons, facts.usage) == (["length"], Counts(7, 3))
    assert tap.error_event is not None and b"overloaded_error" in tap.error_event


def test_openai_counts_are_inclusive() -> None:
    u = {
        "prompt_tokens": 1000,
        "completion_tokens": 300,
        "prompt_tokens_details": {"cached_tokens": 400, "cache_write_tokens": 100},
        "completion_tokens_details": {"reasoning_tokens": 250},
    }
    assert openai_counts(u) == Counts(1000, 300, 400, 100, 0, 250)
    assert openai_counts(
        {"input_tokens": 10, "output_tokens": 3, "input_tokens_details": {"cached_tokens": 4}}
    ) == Counts(10, 3, 4)


def test_anthropic_counts_add_cache_tokens_and_keep_the_last_delta() -> None:
    start = anthropic_counts(
        {
            "input_tokens": 50,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 200,
            "cache_creation": {"ephemeral_5m_input_tokens": 150, "ephemeral_1h_input_tokens": 50},
            "output_tokens": 1,
        }
    )
    assert start == Counts(1250, 1, 1000, 200, 50, 0)
    first = anthropic_counts({"output_tokens": 40}, start)
    last = anthropic_counts({"output_tokens": 90}, first)  # cumulative: 90, never 1 + 40 + 90
    assert last == Counts(1250, 90, 1000, 200, 50, 0)


def test_gemini_output_includes_thoughts() -> None:
    meta = {
        "promptTokenCount": 100,
        "candidatesTokenCount": 20,
        "thoughtsTokenCount": 30,
        "cachedContentTokenCount": 40,
    }
    assert gemini_counts(meta) == Counts(100, 50, 40, 0, 0, 30)


@pytest.mark.parametrize(
    ("host", "port", "path", "expected"),
    [
        ("api.openai.com", None, "/v1/chat/completions", ("openai", "chat", "openai")),
        ("api.groq.com", None, "/openai/v1/chat/completions", ("openai", "chat", "groq")),
        ("api.deepseek.com", None, "/chat/completions", ("openai", "chat", "deepseek")),
        ("openrouter.ai", None, "/api/v1/chat/completions", ("openai", "chat", "openrouter")),
        ("api.x.ai", None, "/v1/responses", ("openai", "responses", "x_ai")),
        ("my.openai.azure.com", None, "/openai/deployments/d1/embeddings", ("openai", "embeddings", "azure.ai.openai")),
        ("api.anthropic.com", None, "/v1/messages", ("anthropic", "messages", "anthropic")),
        (
            "generativelanguage.googleapis.com",
            None,
            "/v1beta/models/gemini-2.5-pro:generateContent",
            ("gemini", "generateContent", "gcp.gemini"),
        ),
        ("localhost", 11434, "/api/chat", ("ollama", "ollama_chat", "ollama")),
        ("localhost", 11434, "/v1/chat/completions", ("openai", "chat", "ollama")),
        ("localhost", 8000, "/v1/completions", ("openai", "completions", "openai")),
    ],
)
def test_router(host: str, port: int | None, path: str, expected: tuple[str, str, str]) -> None:
    route = Router().route(host, port, path)
    assert route is not None
    assert (route.family, route.kind, route.provider) == expected


@pytest.mark.parametrize(
    "path", ["/v1/messages/count_tokens", "/v1/models", "/v1beta/models/gemini-2.5-pro:countTokens", "/v1/files"]
)
def test_router_ignores_unbilled_endpoints(path: str) -> None:
    assert Router().route("api.anthropic.com", None, path) is None


def test_router_rejects_bad_base_url() -> None:
    with pytest.raises(ValueError, match="host"):
        Router({"/no-host": "groq"})


# --- tokenizers offline ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "sha1"),
    [
        ("o200k_base", "fb374d419588a4632f3f557e76b4b70aebbca790"),
        ("cl100k_base", "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"),
    ],
)
def test_encoding_loads_offline_into_the_cache(tmp_path: Path, name: str, sha1: str) -> None:
    enc = load_encoding(name, tmp_path)
    cached = tmp_path / sha1
    assert cached.is_file()
    # tiktoken's own loader accepts the cached file offline (same sha1 name, sha256-checked).
    url = f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
    assert hashlib.sha1(url.encode()).hexdigest() == sha1
    text = "Hello <|endoftext|> world, ünïcode 1234567"
    assert enc.encode_ordinary(text) == enc.encode_ordinary(text)
    assert len(enc.encode_ordinary(text)) > 5


def test_user_tiktoken_cache_dir_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    assert cache_dir() == tmp_path
    load_encoding("cl100k_base")
    enc = tiktoken.get_encoding("cl100k_base")  # tiktoken itself, offline, from the same directory
    assert enc.encode_ordinary("hello world") == [15339, 1917]


def test_counter_is_coarse_until_loaded(tmp_path: Path) -> None:
    counter = TokenCounter("o200k_base", directory=tmp_path)
    assert counter.count("abcdefgh") == (2, COARSE_ESTIMATOR)
    counter.start_loading()
    assert counter.loaded.wait(30) and not counter.failed
    assert counter.count("Hello from the fake provider.") == (6, "tiktoken:o200k_base")
    assert coarse_count("ü") == 1


def test_counter_failure_stays_coarse(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-dir"
    bad.write_text("x")
    counter = TokenCounter("o200k_base", directory=bad / "sub")  # unwritable: still loads, uncached
    counter.start_loading()
    assert counter.loaded.wait(30)
    assert counter.count("hello")[1] == "tiktoken:o200k_base"
    with pytest.raises(ValueError, match="unknown encoding"):
        TokenCounter("p50k_base")


@pytest.mark.parametrize(
    ("family", "model", "factor"),
    [
        ("anthropic", "claude-sonnet-4-5", CLAUDE_FACTOR),
        ("anthropic", None, CLAUDE_FACTOR),
        ("openai", "anthropic/claude-3.5-haiku", CLAUDE_FACTOR),  # Claude behind an OpenAI-style gateway
        ("gemini", "gemini-2.5-flash", GEMINI_FACTOR),
        ("openai", "google/gemini-2.5-pro", GEMINI_FACTOR),
        ("openai", "gpt-4o", 1.0),
        ("ollama", "llama3.2", 1.0),
    ],
)
def test_claude_and_gemini_estimates_lean_high(family: str, model: str | None, factor: float) -> None:
    assert lean_high(family, model) == factor


def test_scaled_rounds_up_and_names_the_factor() -> None:
    assert (CLAUDE_FACTOR, GEMINI_FACTOR) == (1.35, 1.15)
    assert scaled(100, "tiktoken:o200k_base", CLAUDE_FACTOR) == (135, "tiktoken:o200k_base*1.35")
    assert scaled(3, "tiktoken:o200k_base", CLAUDE_FACTOR) == (5, "tiktoken:o200k_base*1.35")  # 4.05 -> 5
    assert scaled(20, "bytes/4", GEMINI_FACTOR) == (23, "bytes/4*1.15")
    assert scaled(7, "tiktoken:o200k_base", 1.0) == (7, "tiktoken:o200k_base")
