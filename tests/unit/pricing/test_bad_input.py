"""Bad usage counts and malformed catalogs give one clear error, never a traceback or a wrong price."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from costspan.pricing import MAX_COUNT, CatalogError, InvalidUsageError, Usage, load_catalog, parse_catalog_text


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ({"input_tokens": -1}, "input_tokens must not be negative, got -1"),
        ({"output_tokens": 1.5}, "output_tokens must be a whole number, got 1.5"),
        ({"input_tokens": "100"}, "input_tokens must be a whole number, got '100'"),
        ({"input_tokens": True}, "input_tokens must be a whole number, got True"),
        ({"input_tokens": 10**12}, "input_tokens=1000000000000 is beyond 1,000,000,000 for one call"),
        ({"input_tokens": 100, "cache_read_tokens": 80, "cache_write_tokens": 30}, "exceed input_tokens"),
        ({"input_tokens": 100, "cache_write_tokens": 10, "cache_write_1h_tokens": 20}, "exceed cache_write_tokens"),
        ({"output_tokens": 10, "reasoning_tokens": 11}, "output_tokens must include reasoning"),
        ({"input_tokens": 10, "input_audio_tokens": 11}, "input audio and image tokens exceed input_tokens"),
        ({"output_tokens": 10, "output_audio_tokens": 11}, "output_audio_tokens exceed output_tokens"),
    ],
)
def test_bad_usage(counts: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidUsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Usage(**counts)


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(Usage)])
def test_every_count_is_checked(name: str) -> None:
    for bad in (-1, 2.0, MAX_COUNT + 1):
        with pytest.raises(InvalidUsageError, match=name):
            counts: dict[str, Any] = {name: bad}
            Usage(**counts)


def test_exclusive_counts_are_converted_once() -> None:
    usage = Usage.from_provider_exclusive(
        input_tokens=100, output_tokens=5, cache_read_tokens=900, cache_write_tokens=50
    )
    assert (usage.input_tokens, usage.uncached_input_tokens, usage.cache_read_tokens) == (1050, 100, 900)


def _problems(text: str) -> list[str]:
    with pytest.raises(CatalogError) as info:
        parse_catalog_text(text, "user.json")
    assert info.value.source == "user.json"
    return info.value.problems


def test_invalid_json_names_line_and_column() -> None:
    assert _problems('{\n  "providers": [\n    {"id": "x",}\n  ]\n}') == [
        "line 3, column 16: invalid JSON: Expecting property name enclosed in double quotes"
    ]


def test_bad_field_names_line_and_path() -> None:
    text = json.dumps(
        {"providers": [{"id": "acme", "models": [{"id": "m1", "prices": [{"input": "-3", "output": "x"}]}]}]},
        indent=1,
    )
    problems = _problems(text)
    line_input = next(i for i, line in enumerate(text.splitlines(), 1) if '"input"' in line)
    line_output = next(i for i, line in enumerate(text.splitlines(), 1) if '"output"' in line)
    assert problems[0].startswith(f"line {line_input}: providers.0.models.0.prices.0.input: ")
    assert "greater than or equal to 0" in problems[0]
    assert any(p.startswith(f"line {line_output}: providers.0.models.0.prices.0.output: ") for p in problems)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"providers": [{"id": "a", "models": [{"id": "m", "prices": []}]}]}, "prices: List should have at least 1"),
        ({"providers": [{"id": "a", "modles": []}]}, "providers.0.modles: Extra inputs are not permitted"),
        (
            {"providers": [{"id": "a", "models": [{"id": "m", "prices": [{"from": "2025-13-01", "input": "1"}]}]}]},
            "prices.0.from",
        ),
        ({"currencies": {"EUR": [{"from": "2025-01-01", "per_usd": "0"}]}}, "per_usd: Input should be greater than 0"),
        (
            {"providers": [{"id": "a", "models": [{"id": "m", "match": {}, "prices": [{"input": "1"}]}]}]},
            "a match clause needs exactly one key",
        ),
        (
            {
                "providers": [
                    {
                        "id": "a",
                        "models": [
                            {
                                "id": "m",
                                "prices": [
                                    {
                                        "input": {
                                            "base": "1",
                                            "tiers": [{"above": 5, "price": "2"}, {"above": 3, "price": "1"}],
                                        }
                                    }
                                ],
                            }
                        ],
                    }
                ]
            },
            "tiers must be in ascending order",
        ),
        ({"schema_version": 2}, "schema_version: Input should be 1"),
        ({"tenants": {"x": {"discount_percent": "120"}}}, "tenants.x.discount_percent"),
    ],
)
def test_schema_errors(body: dict[str, Any], fragment: str) -> None:
    problems = _problems(json.dumps(body, indent=1))
    assert any(fragment in p for p in problems), problems
    assert all(p.startswith("line ") for p in problems)


def test_missing_user_file_is_a_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog([tmp_path / "absent.json"])


def test_bad_user_file_leaves_the_running_pricer_alone(tmp_path: Path) -> None:
    from costspan.pricing import Pricer

    good = tmp_path / "good.json"
    good.write_text('{"providers": [{"id": "z", "models": [{"id": "zed", "prices": [{"input": "1"}]}]}]}')
    pricer = Pricer(load_catalog([good], packaged=False))
    good.write_text("{ not json")
    with pytest.raises(CatalogError):
        pricer.reload(load_catalog([good], packaged=False))
    assert pricer.price_call("zed", Usage(input_tokens=1_000_000)).total == 1
