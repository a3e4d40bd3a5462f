"""``Pricer``: prices one call from the compiled catalog, fast, and never raises on unknown models."""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import NamedTuple

from costspan.pricing._catalog import Catalog, load_catalog
from costspan.pricing._compiled import PricedModel, Rates
from costspan.pricing._errors import PricingError, UnknownModelError
from costspan.pricing._schema import SERVICE_TIERS, ModelEntry, PriceSet
from costspan.pricing._usage import Usage

__all__ = ["PriceBreakdown", "Pricer", "ResourceCost", "TenantOverride", "default_pricer"]

_ZERO = Decimal(0)
_HUNDRED = Decimal(100)
_CACHE_LIMIT = 8192


class PriceBreakdown(NamedTuple):
    """What one call cost, by component. ``total`` is None exactly when the call is unpriced.

    A named tuple rather than a frozen dataclass: it is built on every priced span, and a frozen
    dataclass's ``__init__`` alone costs more than the whole 2 µs pricing budget.
    """

    status: str  # "priced" | "unpriced"
    reason: str  # why unpriced; "" when priced
    model: str  # the catalog's model id ("" if unknown)
    provider: str  # the catalog's provider id ("" if unknown)
    currency: str
    input: Decimal  # uncached input, audio and image input included
    cache_read: Decimal
    cache_write: Decimal  # 5-minute and 1-hour writes
    output: Decimal  # reasoning included
    other: Decimal  # per request, per image, per web search
    total: Decimal | None
    catalog_version: str
    rule: str

    @property
    def priced(self) -> bool:
        return self.total is not None


@dataclass(frozen=True, slots=True)
class ResourceCost:
    """What an amount of a compute resource cost (cpu core-hours, GB-hours, ...)."""

    resource: str
    unit: str
    amount: Decimal
    currency: str
    total: Decimal
    catalog_version: str


@dataclass(frozen=True, slots=True)
class TenantOverride:
    """A tenant's negotiated terms: a discount off list prices and/or its own prices per model id, and
    monthly volume tiers: ``(above_usd, discount_percent)`` pairs in ascending order — a call made
    when the tenant's month-to-date spend is above ``above_usd`` gets that tier's discount too."""

    discount_percent: Decimal = _ZERO
    prices: Mapping[str, PriceSet] = field(default_factory=dict)
    volume_tiers: tuple[tuple[Decimal, Decimal], ...] = ()

    def __post_init__(self) -> None:
        if not _ZERO <= self.discount_percent <= _HUNDRED:
            raise PricingError(f"discount_percent must be between 0 and 100, got {self.discount_percent}")
        previous: tuple[Decimal, Decimal] | None = None
        for above, percent in self.volume_tiers:
            if above < _ZERO or not _ZERO < percent <= _HUNDRED:
                raise PricingError(f"a volume tier needs above_usd >= 0 and 0 < discount_percent <= 100: {above}")
            if previous is not None and (above <= previous[0] or percent < previous[1]):
                raise PricingError("volume tiers must ascend in above_usd and never discount less")
            previous = (above, percent)

    def volume_tier(self, month_to_date_usd: Decimal) -> tuple[Decimal, Decimal] | None:
        """The tier a spend of ``month_to_date_usd`` so far this month is in (None: below the first)."""
        found = None
        for tier in self.volume_tiers:
            if month_to_date_usd > tier[0]:
                found = tier
        return found


_new_breakdown: Callable[[type[PriceBreakdown], tuple[object, ...]], PriceBreakdown] = tuple.__new__


def _special(rates: Rates, usage: Usage) -> tuple[Decimal, Decimal, Decimal]:
    """Adjustments for the rarer prices: reasoning, audio, image tokens, requests, images, searches."""
    extra_in = extra_out = _ZERO
    if rates.reasoning is not None and usage.reasoning_tokens:
        extra_out += usage.reasoning_tokens * (rates.reasoning - rates.output)
    if rates.output_audio is not None and usage.output_audio_tokens:
        extra_out += usage.output_audio_tokens * (rates.output_audio - rates.output)
    if rates.input_audio is not None and usage.input_audio_tokens:
        extra_in += usage.input_audio_tokens * (rates.input_audio - rates.input)
    if rates.input_image is not None and usage.input_image_tokens:
        extra_in += usage.input_image_tokens * (rates.input_image - rates.input)
    other = usage.requests * rates.per_request + usage.images * rates.per_image
    other += usage.web_searches * rates.per_web_search
    return extra_in, extra_out, other


def _timestamp(at: datetime | float | None) -> float:
    if at is None:
        return time.time()
    if isinstance(at, datetime):
        return at.timestamp()
    return float(at)


class Pricer:
    """Prices calls against one catalog, with deployment mappings and tenant overrides."""

    def __init__(
        self,
        catalog: Catalog | None = None,
        *,
        azure_deployments: Mapping[str, str] | None = None,
        tenant_overrides: Mapping[str, TenantOverride] | None = None,
    ) -> None:
        self.catalog = catalog if catalog is not None else load_catalog()
        self.azure_deployments = {k.lower(): v for k, v in (azure_deployments or {}).items()}
        self._explicit_terms = dict(tenant_overrides or {})
        self.tenant_overrides = self._catalog_terms() | self._explicit_terms
        self._resolved: dict[tuple[str, str | None], PricedModel | None] = {}
        self._tenant_models: dict[tuple[str, str, str], PricedModel] = {}
        self._version = self.catalog.version
        self._tiered: tuple[Mapping[str, TenantOverride] | None, tuple[str, ...]] = (None, ())

    def _catalog_terms(self) -> dict[str, TenantOverride]:
        return {
            tenant: TenantOverride(
                discount_percent=terms.discount_percent,
                prices=terms.prices,
                volume_tiers=tuple((t.above_usd, t.discount_percent) for t in terms.volume_tiers),
            )
            for tenant, terms in self.catalog.data.tenants.items()
        }

    def has_volume_tiers(self, tenant: str | None) -> bool:
        """Whether ``tenant``'s price depends on its month-to-date spend (pass ``month_to_date_usd``)."""
        override = self.tenant_overrides.get(tenant) if tenant else None
        return override is not None and bool(override.volume_tiers)

    def volume_tiered_tenants(self) -> tuple[str, ...]:
        """The tenants whose terms have volume tiers, sorted (kept until the overrides change)."""
        overrides = self.tenant_overrides
        if self._tiered[0] is not overrides:
            self._tiered = (overrides, tuple(sorted(t for t, o in overrides.items() if o.volume_tiers)))
        return self._tiered[1]

    @property
    def catalog_version(self) -> str:
        return self.catalog.version

    def reload(self, catalog: Catalog | None = None) -> None:
        """Swap in a freshly loaded catalog (e.g. on SIGHUP); in-flight calls finish on the old one."""
        self.catalog = catalog if catalog is not None else load_catalog()
        self._version = self.catalog.version
        self.tenant_overrides = self._catalog_terms() | self._explicit_terms
        self._resolved = {}
        self._tenant_models = {}

    # --- resolution ----------------------------------------------------------------------------
    def resolve(self, model: str, provider: str | None = None) -> PricedModel | None:
        key = (model, provider)
        try:
            return self._resolved[key]
        except KeyError:
            pass
        name = self.azure_deployments.get(model.strip().lower(), model)
        found = self.catalog.resolve(name, provider)
        if len(self._resolved) >= _CACHE_LIMIT:
            self._resolved = {}
        self._resolved[key] = found
        return found

    def lookup(self, model: str, provider: str | None = None) -> tuple[PricedModel, ModelEntry | None]:
        """Like ``resolve`` but raises ``UnknownModelError`` with the closest known ids."""
        found = self.resolve(model, provider)
        if found is None:
            raise UnknownModelError(model, self.catalog.suggestions(model))
        return found, self.catalog.entry(found.provider, found.model)

    def max_output_tokens(self, model: str, provider: str | None = None) -> int | None:
        found = self.resolve(model, provider)
        return found.max_output_tokens if found else None

    # --- pricing -------------------------------------------------------------------------------
    def price_call(
        self,
        model: str,
        usage: Usage,
        *,
        provider: str | None = None,
        at: datetime | float | None = None,
        tier: str = "standard",
        tenant: str | None = None,
        currency: str = "USD",
        month_to_date_usd: Decimal | None = None,
    ) -> PriceBreakdown:
        """What a call costs. ``month_to_date_usd``: what ``tenant`` spent so far in the call's UTC
        month, before this call — with volume tiers in the tenant's terms, the tier it is in discounts
        the whole call (None: no volume tier applies)."""
        priced = self._resolved.get((model, provider))
        if priced is None:
            priced = self.resolve(model, provider)
            if priced is None:
                return self._unpriced(model, provider, currency, f"unknown model {model!r}")
        override = self.tenant_overrides.get(tenant) if tenant is not None and self.tenant_overrides else None
        if override is not None and priced.model in override.prices:
            priced = self._tenant_model(tenant or "", priced, override.prices[priced.model])
        timeline = priced.standard if tier == "standard" else priced.tiers.get(tier)
        if timeline is None:
            reason = f"no {tier} price for {priced.provider}/{priced.model}"
            if tier not in SERVICE_TIERS:
                reason = f"unknown service tier {tier!r}"
            return self._unpriced(model, provider, currency, reason, priced)
        if timeline.fixed and currency == "USD":
            ts = 0.0
            period = timeline.periods[0]
        else:
            if type(at) is float:  # epoch seconds, as the processor passes them: the fast path
                ts = at
            else:
                ts = time.time() if at is None else at.timestamp() if isinstance(at, datetime) else float(at)
            starts = timeline.starts
            if ts < starts[0]:
                first = datetime.fromtimestamp(starts[0], UTC).date()
                reason = f"no {tier} price for {priced.provider}/{priced.model} before {first}"
                return self._unpriced(model, provider, currency, reason, priced)
            period = timeline.periods[0 if timeline.single else bisect_right(starts, ts) - 1]
            if period.by_minute:  # daily peak hours: windows are whole minutes, so one lookup
                period = period.by_minute[int(ts % 86400) // 60]
        rates: Rates = period.base
        rule = period.rule
        if period.tiers:
            n = usage.input_tokens
            for above, tier_rates, tier_rule in period.tiers:
                if n > above:
                    rates, rule = tier_rates, tier_rule
        cache_read_n = usage.cache_read_tokens
        cache_write_n = usage.cache_write_tokens
        input_cost = (usage.input_tokens - cache_read_n - cache_write_n) * rates.input
        output = usage.output_tokens * rates.output
        total = input_cost + output
        if cache_read_n:
            cache_read = cache_read_n * rates.cache_read
            total += cache_read
        else:
            cache_read = _ZERO
        if cache_write_n:
            one_hour = usage.cache_write_1h_tokens
            cache_write = (cache_write_n - one_hour) * rates.cache_write + one_hour * rates.cache_write_1h
            total += cache_write
        else:
            cache_write = _ZERO
        if rates.special or usage.images or usage.web_searches:
            extra_in, extra_out, other = _special(rates, usage)
            input_cost += extra_in
            output += extra_out
            total += extra_in + extra_out + other
        else:
            other = _ZERO
        if override is not None and override.discount_percent:
            keep = (_HUNDRED - override.discount_percent) / _HUNDRED
            input_cost, cache_read, cache_write = input_cost * keep, cache_read * keep, cache_write * keep
            output, other, total = output * keep, other * keep, total * keep
            rule = f"{rule} tenant {tenant} -{override.discount_percent}%"
        if override is not None and month_to_date_usd is not None and override.volume_tiers:
            volume = override.volume_tier(month_to_date_usd)
            if volume is not None:
                keep = (_HUNDRED - volume[1]) / _HUNDRED
                input_cost, cache_read, cache_write = input_cost * keep, cache_read * keep, cache_write * keep
                output, other, total = output * keep, other * keep, total * keep
                rule = f"{rule} volume >{volume[0]} USD -{volume[1]}%"
        if currency != "USD":
            rate = self.catalog.rate(currency, ts)
            if rate is None:
                raise PricingError(f"unknown currency {currency!r}; known: {', '.join(self.catalog.currencies)}")
            input_cost, cache_read, cache_write = input_cost * rate, cache_read * rate, cache_write * rate
            output, other, total = output * rate, other * rate, total * rate
        # tuple.__new__ directly: the named tuple's own __new__ is one more Python frame per call.
        return _new_breakdown(
            PriceBreakdown,
            (
                "priced",
                "",
                priced.model,
                priced.provider,
                currency,
                input_cost,
                cache_read,
                cache_write,
                output,
                other,
                total,
                self._version,
                rule,
            ),
        )

    def price_resource(
        self,
        resource: str,
        amount: Decimal | int | str,
        *,
        at: datetime | float | None = None,
        tenant: str | None = None,
        currency: str = "USD",
    ) -> ResourceCost:
        """Price an amount of a compute resource; unknown resources and bad amounts raise PricingError."""
        entry = self.catalog.resources.get(resource)
        if entry is None:
            known = ", ".join(sorted(self.catalog.resources))
            raise PricingError(f"unknown resource {resource!r}; known: {known}")
        try:
            qty = Decimal(amount)
        except ArithmeticError:
            raise PricingError(f"resource amount must be a number, got {amount!r}") from None
        if not qty.is_finite() or qty < 0:
            raise PricingError(f"resource amount must be a finite non-negative number, got {amount!r}")
        total = qty * entry.usd
        override = self.tenant_overrides.get(tenant) if tenant is not None else None
        if override is not None and override.discount_percent:
            total = total * (_HUNDRED - override.discount_percent) / _HUNDRED
        if currency != "USD":
            rate = self.catalog.rate(currency, _timestamp(at))
            if rate is None:
                raise PricingError(f"unknown currency {currency!r}; known: {', '.join(self.catalog.currencies)}")
            total = total * rate
        return ResourceCost(resource, entry.unit, qty, currency, total, self.catalog.version)

    def _unpriced(
        self, model: str, provider: str | None, currency: str, reason: str, priced: PricedModel | None = None
    ) -> PriceBreakdown:
        return PriceBreakdown(
            "unpriced",
            reason,
            priced.model if priced else "",
            priced.provider if priced else (self.catalog.provider_id(provider) or ""),
            currency,
            _ZERO,
            _ZERO,
            _ZERO,
            _ZERO,
            _ZERO,
            None,
            self.catalog.version,
            "",
        )

    def _tenant_model(self, tenant: str, priced: PricedModel, prices: PriceSet) -> PricedModel:
        key = (tenant, priced.provider, priced.model)
        found = self._tenant_models.get(key)
        if found is None:
            from costspan.pricing._compiled import compile_model

            entry = ModelEntry(id=priced.model, prices=[prices], max_output_tokens=priced.max_output_tokens)
            found = compile_model(f"{priced.provider} tenant {tenant}", entry, {})
            found = PricedModel(priced.provider, priced.model, found.standard, found.tiers, found.max_output_tokens)
            self._tenant_models[key] = found
        return found


@cache
def default_pricer() -> Pricer:
    """The process's pricer over the packaged catalog and ``$COSTSPAN_PRICING_FILE`` (built once)."""
    return Pricer()
