"""Bedrock's short model names (as QLens sent them, with provider ``aws.bedrock``) take the Bedrock
model's own price: the catalog's ``model_names`` widen the match, the price is the entry's."""

from __future__ import annotations

from decimal import Decimal

import pytest

from costspan.pricing import Pricer, Usage, default_pricer

MILLION = Usage(input_tokens=1_000_000, output_tokens=1_000_000)


@pytest.fixture(scope="module")
def pricer() -> Pricer:
    return default_pricer()


@pytest.mark.parametrize(
    ("model", "input_usd", "output_usd"),
    [
        # QLens' documented table (per 1K: 0.003 / 0.015, 0.00025 / 0.00125)
        ("claude-3-sonnet", "3", "15"),
        ("claude-3-haiku", "0.25", "1.25"),
        ("claude-3-7-sonnet", "3", "15"),
        # the rest of the family, at Bedrock's regional prices
        ("claude-3-opus", "15", "75"),
        ("claude-3-5-sonnet", "3", "15"),
        ("claude-3-5-haiku", "0.8", "4"),
        ("claude-sonnet-4", "3", "15"),
        ("claude-opus-4", "15", "75"),
        ("claude-opus-4-1", "15", "75"),
        ("claude-sonnet-4-5", "3.3", "16.5"),
        ("claude-haiku-4-5", "1.1", "5.5"),
        ("anthropic.claude-3-sonnet", "3", "15"),
    ],
)
@pytest.mark.parametrize("provider", ["aws.bedrock", "aws"])
def test_short_names_price_as_the_bedrock_model(
    pricer: Pricer, provider: str, model: str, input_usd: str, output_usd: str
) -> None:
    inp = pricer.price_call(model, Usage(input_tokens=1_000_000), provider=provider)
    out = pricer.price_call(model, Usage(output_tokens=1_000_000), provider=provider)
    both = pricer.price_call(model, MILLION, provider=provider)
    assert (inp.status, out.status, both.status) == ("priced", "priced", "priced")
    assert (inp.total, out.total) == (Decimal(input_usd), Decimal(output_usd))
    assert both.total == Decimal(input_usd) + Decimal(output_usd)


def test_the_qlens_example_request_prices_a_call_at_the_documented_rate(pricer: Pricer) -> None:
    b = pricer.price_call("claude-3-sonnet", Usage(input_tokens=1000, output_tokens=1000), provider="aws.bedrock")
    assert b.total == Decimal("0.003") + Decimal("0.015")


def test_a_short_name_of_another_family_stays_unpriced(pricer: Pricer) -> None:
    assert pricer.price_call("claude-9-sonnet", MILLION, provider="aws.bedrock").status == "unpriced"
