"""Public list prices through the packaged catalog, as clients spell the model ids."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from costspan.pricing import Pricer, Usage, default_pricer, load_catalog

M = 1_000_000
ONE_M_EACH = {"input_tokens": M, "output_tokens": M}


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# (model as sent, provider, options, catalog provider/model, total for 1M input + 1M output tokens in USD)
CASES: list[tuple[str, str | None, dict[str, Any], str, str]] = [
    ("gpt-4o", "openai", {}, "openai/gpt-4o", "12.5"),
    ("gpt-4o-2024-08-06", None, {}, "openai/gpt-4o", "12.5"),
    ("gpt-4o-2024-05-13", "openai", {}, "openai/gpt-4o-2024-05-13", "20"),
    ("gpt-4o-mini", "openai", {"tier": "batch", "at": at(2025, 1, 1)}, "openai/gpt-4o-mini", "0.375"),
    ("o3", None, {"at": at(2025, 6, 1)}, "openai/o3", "50"),
    ("o3", None, {"at": at(2025, 6, 11)}, "openai/o3", "10"),
    ("gpt-4", None, {}, "openai/gpt-4", "90"),
    ("gpt-4-turbo", None, {}, "openai/gpt-4-turbo", "40"),
    ("gpt-3.5-turbo", None, {}, "openai/gpt-3.5-turbo", "2"),
    ("gpt-5", None, {}, "openai/gpt-5", "11.25"),
    ("gpt-4o", "azure.ai.openai", {}, "openai/gpt-4o", "12.5"),
    ("claude-3-opus-20240229", None, {}, "anthropic/claude-3-opus-latest", "90"),
    ("claude-3-sonnet-20240229", None, {}, "anthropic/claude-3-sonnet", "18"),
    ("claude-3-haiku-20240307", "anthropic", {}, "anthropic/claude-3-haiku", "1.5"),
    ("claude-3-7-sonnet-20250219", None, {}, "anthropic/claude-3-7-sonnet-latest", "18"),
    # Claude Sonnet 4.5 above 200k input tokens: $6 / $22.50 for the whole call
    ("claude-sonnet-4-5-20250929", "anthropic", {}, "anthropic/claude-sonnet-4-5", "28.5"),
    ("gemini-2.5-pro", "gcp.gemini", {}, "google/gemini-2.5-pro", "17.5"),
    ("publishers/anthropic/models/claude-3-opus@20240229", None, {}, "google/claude-3-opus", "90"),
    ("projects/p/locations/us/publishers/google/models/gemini-2.5-flash", None, {}, "google/gemini-2.5-flash", "2.8"),
    (
        "us.anthropic.claude-3-haiku-20240307-v1:0",
        None,
        {},
        "aws/regional.anthropic.claude-3-haiku-20240307-v1:0",
        "1.5",
    ),
    (
        "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "aws.bedrock",
        {},
        "aws/global.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "18",
    ),
    ("openai/gpt-4o", "openrouter", {}, "openrouter/openai/gpt-4o", "12.5"),
    ("llama3-70b-8192", "groq", {}, "groq/llama3-70b-8192", "1.38"),
    ("llama3-8b-8192", "groq", {}, "groq/llama3-8b-8192", "0.13"),
    ("llama3.1-8b", "cerebras", {}, "cerebras/llama3.1-8b", "0.2"),
    ("deepseek-chat", None, {"at": at(2025, 3, 1, 20)}, "deepseek/deepseek-chat", "0.685"),
    ("deepseek-chat", None, {"at": at(2025, 3, 1, 12)}, "deepseek/deepseek-chat", "1.37"),
    ("deepseek-reasoner", None, {"at": at(2025, 3, 1, 12)}, "deepseek/deepseek-reasoner", "2.74"),
    ("mistral-large-latest", "mistral_ai", {}, "mistral/mistral-large", "8"),
    ("llama3.2", "ollama", {}, "ollama/llama3.2", "0"),
    # GPT-6.2 Sol above 272K input tokens: input x2 ($4), output x1.5 ($15)
    ("gpt-6.2-sol", "openai", {}, "openai/gpt-6.2-sol", "19"),
    ("claude-mythos-5-1", "anthropic", {}, "anthropic/claude-mythos-5-1", "60"),
]


@pytest.mark.parametrize(("model", "provider", "options", "resolved", "expected"), CASES)
def test_public_prices(model: str, provider: str | None, options: dict[str, Any], resolved: str, expected: str) -> None:
    result = default_pricer().price_call(model, Usage(**ONE_M_EACH), provider=provider, **options)
    assert result.status == "priced", result.reason
    assert f"{result.provider}/{result.model}" == resolved
    assert result.total == Decimal(expected)


def test_seed_models_have_max_output_tokens() -> None:
    pricer = default_pricer()
    assert pricer.max_output_tokens("gpt-4o-2024-08-06") == 16384
    assert pricer.max_output_tokens("claude-sonnet-4-5", "anthropic") == 64000
    assert pricer.max_output_tokens("no-such-model") is None


def test_every_packaged_price_carries_a_source() -> None:
    catalog = load_catalog([])
    missing = [f"{p}/{m.id}" for p, m in catalog.models() if not (m.source or any(s.source for s in m.prices))]
    free = {p.id for p in catalog.data.providers if p.free}
    assert catalog.data.version and not [m for m in missing if m.split("/")[0] not in free]


def test_user_file_via_environment(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    user = tmp_path / "prices.json"
    user.write_text(
        '{"providers": [{"id": "openai", "models": [{"id": "gpt-4o", "prices": [{"input": "1", "output": "1"}]}]}]}'
    )
    monkeypatch.setenv("COSTSPAN_PRICING_FILE", str(user))
    pricer = Pricer()
    # the user entry overrides the packaged price and keeps the packaged match rule (dated snapshots)
    assert pricer.price_call("gpt-4o-2024-08-06", Usage(**ONE_M_EACH)).total == Decimal("2")
    assert pricer.price_call("gpt-4o", Usage(**ONE_M_EACH)).total == Decimal("2")
    assert pricer.price_call("gpt-4o-mini", Usage(**ONE_M_EACH)).total == Decimal("0.75")
    assert pricer.catalog_version.startswith("2026.11.25+user.")
