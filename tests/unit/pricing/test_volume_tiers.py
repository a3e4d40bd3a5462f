"""Monthly volume tiers in a tenant's terms: the tier the month-to-date spend is in discounts the whole
call, on top of the tenant's flat discount; bad tiers are refused with the field named."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costspan.pricing import CatalogError, Pricer, PricingError, TenantOverride, Usage, load_catalog

TERMS: dict[str, Any] = {
    "tenants": {
        "bigco": {
            "volume_tiers": [
                {"above_usd": "1000", "discount_percent": "5"},
                {"above_usd": "10000", "discount_percent": "12.5"},
            ]
        },
        "flatco": {
            "discount_percent": "10",
            "volume_tiers": [{"above_usd": "100", "discount_percent": "20"}],
        },
    }
}
#: gpt-4o: 2.5 USD per million input tokens, 10 per million output: 2.5 + 10 = 12.5 USD for this call
CALL = Usage(input_tokens=1_000_000, output_tokens=1_000_000)


@pytest.fixture(scope="module")
def pricer(tmp_path_factory: pytest.TempPathFactory) -> Pricer:
    path = tmp_path_factory.mktemp("terms") / "terms.json"
    path.write_text(json.dumps(TERMS))
    return Pricer(load_catalog([path]))


@pytest.mark.parametrize(
    ("tenant", "month_to_date", "total", "rule_end"),
    [
        ("bigco", None, "12.5", ""),  # no spend given: list price
        ("bigco", "0", "12.5", ""),
        ("bigco", "1000", "12.5", ""),  # a tier starts *above* its threshold
        ("bigco", "1000.01", "11.875", " volume >1000 USD -5%"),
        ("bigco", "9999", "11.875", " volume >1000 USD -5%"),
        ("bigco", "10000.5", "10.9375", " volume >10000 USD -12.5%"),
        ("flatco", "50", "11.25", " tenant flatco -10%"),
        ("flatco", "100.5", "9.00", " tenant flatco -10% volume >100 USD -20%"),  # 12.5 × 0.9 × 0.8
        ("other", "50000", "12.5", ""),  # no terms: no tiers
    ],
)
def test_the_tier_of_the_month_to_date_spend_discounts_the_call(
    pricer: Pricer, tenant: str, month_to_date: str | None, total: str, rule_end: str
) -> None:
    mtd = None if month_to_date is None else Decimal(month_to_date)
    b = pricer.price_call("gpt-4o", CALL, provider="openai", tenant=tenant, month_to_date_usd=mtd, at=1.8e9)
    assert b.total == Decimal(total)
    assert b.input + b.output + b.cache_read + b.cache_write + b.other == b.total
    assert b.rule.endswith(rule_end) if rule_end else "volume" not in b.rule and "flatco" not in b.rule


def test_which_tenants_have_tiers(pricer: Pricer) -> None:
    assert (pricer.has_volume_tiers("bigco"), pricer.has_volume_tiers("other"), pricer.has_volume_tiers(None)) == (
        True,
        False,
        False,
    )
    assert pricer.volume_tiered_tenants() == ("bigco", "flatco")


@pytest.mark.parametrize(
    ("tiers", "fragment"),
    [
        ([{"above_usd": "-1", "discount_percent": "5"}], "volume_tiers.0.above_usd"),
        ([{"above_usd": "1", "discount_percent": "101"}], "volume_tiers.0.discount_percent"),
        ([{"above_usd": "1", "discount_percent": "0"}], "volume_tiers.0.discount_percent"),
        ([{"above_usd": "1"}], "discount_percent"),
        ([{"above_usd": "1", "discount": 0.05}], "discount"),
        ([{"above_usd": "10", "discount_percent": "5"}, {"above_usd": "10", "discount_percent": "6"}], "ascending"),
        ([{"above_usd": "10", "discount_percent": "5"}, {"above_usd": "5", "discount_percent": "6"}], "ascending"),
        ([{"above_usd": "10", "discount_percent": "5"}, {"above_usd": "20", "discount_percent": "4"}], "discount less"),
        ({"above_usd": "10"}, "volume_tiers"),
    ],
)
def test_bad_tiers_are_refused_naming_the_field(tmp_path: Path, tiers: Any, fragment: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"tenants": {"x": {"volume_tiers": tiers}}}))
    with pytest.raises(CatalogError) as caught:
        load_catalog([path])
    assert fragment in str(caught.value)


def test_overrides_given_in_code_are_checked_too() -> None:
    with pytest.raises(PricingError, match="ascend"):
        TenantOverride(volume_tiers=((Decimal(10), Decimal(5)), (Decimal(5), Decimal(6))))
    tiers = TenantOverride(volume_tiers=((Decimal(10), Decimal(5)), (Decimal(20), Decimal(6))))
    assert [tiers.volume_tier(Decimal(v)) for v in ("10", "10.01", "25")] == [
        None,
        (Decimal(10), Decimal(5)),
        (Decimal(20), Decimal(6)),
    ]
