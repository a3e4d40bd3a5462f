"""The catalog file format: validated at the edge with pydantic, then compiled for the hot path."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "SERVICE_TIERS",
    "CatalogFile",
    "Clause",
    "CurrencyRate",
    "ModelEntry",
    "PriceSet",
    "ProviderEntry",
    "ResourcePrice",
    "TenantTerms",
    "TieredPrice",
    "VolumeTier",
]

#: The service tiers a call can be priced at; a catalog may name more (e.g. "fast").
SERVICE_TIERS = ("standard", "batch", "flex", "priority")

NonNegDecimal = Annotated[Decimal, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tier(_Strict):
    above: Annotated[int, Field(gt=0)]
    price: NonNegDecimal


class TieredPrice(_Strict):
    """A cliff: when the call's input tokens exceed ``above``, every unit takes the tier's price."""

    base: NonNegDecimal
    tiers: list[Tier] = Field(min_length=1)

    @field_validator("tiers")
    @classmethod
    def _ascending(cls, tiers: list[Tier]) -> list[Tier]:
        if [t.above for t in tiers] != sorted({t.above for t in tiers}):
            raise ValueError("tiers must be in ascending order of 'above', each threshold once")
        return tiers


PriceValue = NonNegDecimal | TieredPrice

#: Fields priced per million tokens.
TOKEN_FIELDS = (
    "input",
    "output",
    "cache_read",
    "cache_write",
    "cache_write_1h",
    "reasoning",
    "input_audio",
    "output_audio",
    "cache_audio_read",
    "input_image",
)
#: Fields priced per unit.
UNIT_FIELDS = ("per_image", "per_request", "per_web_search")


class PriceSet(_Strict):
    """Prices from one date on. Token prices are USD per million tokens; ``per_*`` are USD per unit."""

    effective_from: date | None = Field(default=None, alias="from")
    input: PriceValue | None = None
    output: PriceValue | None = None
    cache_read: PriceValue | None = None
    cache_write: PriceValue | None = None
    cache_write_1h: PriceValue | None = None
    reasoning: PriceValue | None = None
    input_audio: PriceValue | None = None
    output_audio: PriceValue | None = None
    cache_audio_read: PriceValue | None = None
    input_image: PriceValue | None = None
    per_image: NonNegDecimal | None = None
    per_request: NonNegDecimal | None = None
    per_web_search: NonNegDecimal | None = None
    #: A daily UTC window ("HH:MM-HH:MM") in which these prices replace the others (peak hours).
    hours: Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-4]):[0-5]\d$")] | None = None
    source: str | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def window_seconds(self) -> tuple[int, int] | None:
        if self.hours is None:
            return None
        start, end = self.hours.split("-")
        return _seconds(start), _seconds(end)


def _seconds(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 3600 + int(minutes) * 60


class Clause(_Strict):
    """How a model id is recognised: exactly one of the keys, compared lower-case."""

    equals: str | None = None
    starts_with: str | None = None
    ends_with: str | None = None
    contains: str | None = None
    regex: str | None = None
    any_of: list[Clause] | None = Field(default=None, alias="or")
    all_of: list[Clause] | None = Field(default=None, alias="and")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def model_post_init(self, context: Any, /) -> None:
        set_keys = [k for k, v in self.__dict__.items() if v is not None]
        if len(set_keys) != 1:
            raise ValueError(f"a match clause needs exactly one key, got {set_keys or 'none'}")


class ModelEntry(_Strict):
    id: Annotated[str, Field(min_length=1)]
    name: str | None = None
    match: Clause | None = None
    prices: list[PriceSet] = Field(min_length=1)
    #: Service tier → price sets overriding the standard ones field by field.
    variants: dict[str, list[PriceSet]] = Field(default_factory=dict)
    max_output_tokens: Annotated[int, Field(gt=0)] | None = None
    context_window: Annotated[int, Field(gt=0)] | None = None
    deprecated: bool = False
    source: str | None = None


class ProviderEntry(_Strict):
    id: Annotated[str, Field(min_length=1)]
    name: str | None = None
    aliases: list[str] = Field(default_factory=list)
    api_pattern: str | None = None
    model_match: Clause | None = None
    fallback_providers: list[str] = Field(default_factory=list)
    #: Multipliers applied to the standard price for a tier the model has no explicit prices for.
    tier_multipliers: dict[str, NonNegDecimal] = Field(default_factory=dict)
    #: Local runtimes (Ollama): every model is priced at zero.
    free: bool = False
    source: str | None = None
    models: list[ModelEntry] = Field(default_factory=list)


class CurrencyRate(_Strict):
    effective_from: date = Field(alias="from")
    per_usd: Annotated[Decimal, Field(gt=0)]
    source: str | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ResourcePrice(_Strict):
    """A compute resource's list price in USD per unit (core-hour, GB-hour, ...)."""

    id: Annotated[str, Field(min_length=1)]
    unit: str
    usd: NonNegDecimal
    effective_from: date | None = Field(default=None, alias="from")
    source: str | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class VolumeTier(_Strict):
    """From a month-to-date spend above ``above_usd`` on, calls get ``discount_percent`` off."""

    above_usd: Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
    discount_percent: Annotated[Decimal, Field(gt=0, le=100, allow_inf_nan=False)]


class TenantTerms(_Strict):
    """A tenant's negotiated terms: a discount off list prices and/or its own prices by model id, and
    monthly volume tiers (a further discount once the month's spend passes a threshold)."""

    discount_percent: Annotated[Decimal, Field(ge=0, le=100)] = Decimal(0)
    prices: dict[str, PriceSet] = Field(default_factory=dict)
    volume_tiers: list[VolumeTier] = Field(default_factory=list, max_length=100)

    @field_validator("volume_tiers")
    @classmethod
    def _ascending(cls, tiers: list[VolumeTier]) -> list[VolumeTier]:
        for before, after in pairwise(tiers):
            if after.above_usd <= before.above_usd:
                raise ValueError(
                    f"volume tiers must be in ascending above_usd order, each above the one before: "
                    f"{after.above_usd} follows {before.above_usd}"
                )
            if after.discount_percent < before.discount_percent:
                raise ValueError(
                    f"a higher volume tier may not discount less: {after.discount_percent}% above "
                    f"{after.above_usd} USD follows {before.discount_percent}%"
                )
        return tiers


class CatalogFile(_Strict):
    schema_version: Literal[1] = 1
    version: str | None = None
    source: str | None = None
    notes: list[str] = Field(default_factory=list)
    currencies: dict[str, list[CurrencyRate]] = Field(default_factory=dict)
    resources: list[ResourcePrice] = Field(default_factory=list)
    providers: list[ProviderEntry] = Field(default_factory=list)
    tenants: dict[str, TenantTerms] = Field(default_factory=dict)
