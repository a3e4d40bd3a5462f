"""The max-output table: a model the catalog has no figure for still gets its family's maximum output."""

from __future__ import annotations

import pytest

from costspan.pricing import MaxOutput, MaxOutputTable, default_pricer, max_output_table


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("claude-haiku-4-5-20251001", MaxOutput(64000, "family")),
        ("claude-opus-4-7", MaxOutput(32000, "family")),
        ("claude-opus-4-5", MaxOutput(64000, "family")),  # the longest prefix wins
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", MaxOutput(64000, "family")),
        ("openai/gpt-4o-mini-2024-07-18", MaxOutput(16384, "family")),
        ("gpt-4.1-nano", MaxOutput(32768, "family")),
        ("gpt-4-0613", MaxOutput(8192, "family")),
        ("gemini-2.5-pro", MaxOutput(65536, "family")),
        ("llama-3.3-70b-versatile", MaxOutput(8192, "family")),
        ("some-new-model", MaxOutput(16384, "default")),
    ],
)
def test_families_match_by_the_longest_prefix(model: str, expected: MaxOutput) -> None:
    assert max_output_table().lookup(model) == expected


def test_the_catalog_figure_wins_where_it_has_one() -> None:
    pricer = default_pricer()
    assert pricer.max_output_tokens("claude-3-haiku", "anthropic") == 4096
    assert max_output_table().lookup("claude-3-haiku").tokens == 4096  # the table agrees


def test_a_table_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="positive"):
        MaxOutputTable({"x": 0}, 100)
    with pytest.raises(ValueError, match="positive"):
        MaxOutputTable({}, -1)
