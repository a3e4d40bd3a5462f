"""Catalog entries compiled into the flat, per-token values the hot path multiplies."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal

from costspan.pricing._schema import TOKEN_FIELDS, ModelEntry, PriceSet, TieredPrice

__all__ = ["PricedModel", "Rates", "Timeline", "compile_model", "scaled", "utc_start"]

_MILLION = Decimal(1_000_000)
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per token (token fields) or per unit; optional fields are None where the catalog has none."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    cache_write_1h: Decimal
    reasoning: Decimal | None
    input_audio: Decimal | None
    output_audio: Decimal | None
    input_image: Decimal | None
    per_image: Decimal
    per_request: Decimal
    per_web_search: Decimal
    #: True when a reasoning, audio or image token price or a per-request price is set: the slow path.
    special: bool = False


@dataclass(frozen=True, slots=True)
class Period:
    start: float
    base: Rates
    #: (threshold, rates, rule): when the call's input tokens exceed the threshold, the rates apply.
    tiers: tuple[tuple[int, Rates, str], ...]
    rule: str
    #: (start second, end second, period): daily UTC windows with their own prices.
    windows: tuple[tuple[int, int, Period], ...] = ()
    #: With windows: the period in force at each minute of the (UTC) day, for a one-step lookup.
    by_minute: tuple[Period, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        if self.windows:
            object.__setattr__(self, "by_minute", tuple(self._at_second(m * 60) for m in range(1440)))

    def _at_second(self, second: int) -> Period:
        for start, end, period in self.windows:
            if start <= second < end if start < end else (second >= start or second < end):
                return period
        return self


@dataclass(frozen=True, slots=True)
class Timeline:
    starts: tuple[float, ...]
    periods: tuple[Period, ...]
    #: One price for all time, no daily windows: the call's time need not be looked at.
    fixed: bool = field(init=False)
    #: One period (perhaps with daily windows): no search by date.
    single: bool = field(init=False)

    def __post_init__(self) -> None:
        fixed = len(self.periods) == 1 and self.starts[0] == -math.inf and not self.periods[0].windows
        object.__setattr__(self, "fixed", fixed)
        object.__setattr__(self, "single", len(self.periods) == 1)


@dataclass(frozen=True, slots=True)
class PricedModel:
    provider: str
    model: str
    standard: Timeline
    tiers: Mapping[str, Timeline] = field(default_factory=dict)
    max_output_tokens: int | None = None
    free: bool = False


def utc_start(day: date | None) -> float:
    if day is None:
        return -math.inf
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def _at(value: Decimal | TieredPrice | None, threshold: int | None) -> Decimal | None:
    if value is None or isinstance(value, Decimal):
        return value
    price = value.base
    if threshold is not None:
        for tier in value.tiers:
            if tier.above <= threshold:
                price = tier.price
    return price


def _rates(fields: Mapping[str, Decimal | TieredPrice | None], threshold: int | None) -> Rates:
    def per_token(name: str) -> Decimal | None:
        price = _at(fields.get(name), threshold)
        return None if price is None else price / _MILLION

    def per_unit(name: str) -> Decimal:
        price = fields.get(name)
        return price if isinstance(price, Decimal) else _ZERO

    inp = per_token("input") or _ZERO
    special = {per_token(n) for n in ("reasoning", "input_audio", "output_audio", "input_image")} != {None}
    special = special or per_unit("per_request") != _ZERO
    cache_write = per_token("cache_write")
    cache_write = inp if cache_write is None else cache_write
    cache_read = per_token("cache_read")
    cache_write_1h = per_token("cache_write_1h")
    return Rates(
        input=inp,
        output=per_token("output") or _ZERO,
        cache_read=inp if cache_read is None else cache_read,
        cache_write=cache_write,
        cache_write_1h=cache_write if cache_write_1h is None else cache_write_1h,
        reasoning=per_token("reasoning"),
        input_audio=per_token("input_audio"),
        output_audio=per_token("output_audio"),
        input_image=per_token("input_image"),
        per_image=per_unit("per_image"),
        per_request=per_unit("per_request"),
        per_web_search=per_unit("per_web_search"),
        special=special,
    )


def _fields(price_set: PriceSet) -> dict[str, Decimal | TieredPrice | None]:
    names = (*TOKEN_FIELDS, "per_image", "per_request", "per_web_search")
    return {name: getattr(price_set, name) for name in names}


def _period(fields: dict[str, Decimal | TieredPrice | None], start: date | None, rule: str) -> Period:
    thresholds = sorted({t.above for v in fields.values() if isinstance(v, TieredPrice) for t in v.tiers})
    tiers = tuple((t, _rates(fields, t), f"{rule} input>{t}") for t in thresholds)
    return Period(start=utc_start(start), base=_rates(fields, None), tiers=tiers, rule=rule)


def _sorted(sets: list[PriceSet]) -> list[PriceSet]:
    return sorted(sets, key=lambda s: s.effective_from or date.min)


def _standard_timeline(provider: str, entry: ModelEntry) -> Timeline:
    sets = _sorted([s for s in entry.prices if s.hours is None])
    windows = []
    for s in entry.prices:
        window = s.window_seconds()
        if window is not None:
            rule = f"{provider}/{entry.id} {s.hours} UTC"
            windows.append((window[0], window[1], _period(_fields(s), None, rule)))
    periods = []
    for i, s in enumerate(sets or [PriceSet()]):
        since = f" from {s.effective_from}" if s.effective_from else ""
        period = _period(_fields(s), s.effective_from, f"{provider}/{entry.id}{since}")
        # The first known price also covers calls dated before it (clock skew, early access).
        start = -math.inf if i == 0 else period.start
        periods.append(Period(start, period.base, period.tiers, period.rule, tuple(windows)))
    return Timeline(tuple(p.start for p in periods), tuple(periods))


def _variant_timeline(
    provider: str, entry: ModelEntry, tier: str, variant: list[PriceSet], factor: Decimal | None
) -> Timeline:
    """Standard prices overridden field by field by the tier's prices, on the union of both dates.

    Before the tier's first dated price, the provider's multiplier for the tier applies (if any).
    """
    standard = _sorted([s for s in entry.prices if s.hours is None]) or [PriceSet()]
    overrides = _sorted([s for s in variant if s.hours is None])
    days = sorted({s.effective_from or date.min for s in standard + overrides})
    periods = []
    for day in days:
        base = next((s for s in reversed(standard) if (s.effective_from or date.min) <= day), standard[0])
        over = next((s for s in reversed(overrides) if (s.effective_from or date.min) <= day), None)
        fields = _fields(base)
        if over is not None:
            fields.update({k: v for k, v in _fields(over).items() if v is not None})
        start = None if day == date.min else day
        since = f" from {start}" if start else ""
        period = _period(fields, start, f"{provider}/{entry.id} {tier}{since}")
        if over is None:
            if factor is None:
                continue  # no price for this tier yet: calls before its first price are unpriced
            period = _scale_period(period, factor, f"x{factor}")
        periods.append(period)
    return Timeline(tuple(p.start for p in periods), tuple(periods))


def _scale_rates(r: Rates, factor: Decimal) -> Rates:
    def opt(v: Decimal | None) -> Decimal | None:
        return None if v is None else v * factor

    return Rates(
        input=r.input * factor,
        output=r.output * factor,
        cache_read=r.cache_read * factor,
        cache_write=r.cache_write * factor,
        cache_write_1h=r.cache_write_1h * factor,
        reasoning=opt(r.reasoning),
        input_audio=opt(r.input_audio),
        output_audio=opt(r.output_audio),
        input_image=opt(r.input_image),
        per_image=r.per_image * factor,
        per_request=r.per_request * factor,
        per_web_search=r.per_web_search * factor,
        special=r.special,
    )


def _scale_period(p: Period, factor: Decimal, label: str) -> Period:
    return Period(
        p.start,
        _scale_rates(p.base, factor),
        tuple((t, _scale_rates(r, factor), f"{rule} {label}") for t, r, rule in p.tiers),
        f"{p.rule} {label}",
        tuple((s, e, _scale_period(w, factor, label)) for s, e, w in p.windows),
    )


def scaled(timeline: Timeline, factor: Decimal, label: str) -> Timeline:
    return Timeline(timeline.starts, tuple(_scale_period(p, factor, label) for p in timeline.periods))


def compile_model(provider: str, entry: ModelEntry, multipliers: Mapping[str, Decimal]) -> PricedModel:
    standard = _standard_timeline(provider, entry)
    tiers: dict[str, Timeline] = {"standard": standard}
    for tier, variant in entry.variants.items():
        tiers[tier] = _variant_timeline(provider, entry, tier, variant, multipliers.get(tier))
    for tier, factor in multipliers.items():
        if tier not in tiers:
            tiers[tier] = scaled(standard, factor, f"{tier} x{factor}")
    return PricedModel(
        provider=provider,
        model=entry.id,
        standard=standard,
        tiers=tiers,
        max_output_tokens=entry.max_output_tokens,
    )
