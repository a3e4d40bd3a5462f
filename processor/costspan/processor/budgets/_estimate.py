"""Pre-call cost estimates: input tokens at the input price + the call's worst-case output at the output price.

The output is the call's ``max_tokens`` (capped at the model's maximum output) or, when the call sets
none, the model's maximum output: the catalog's figure, else the model family's from
``costspan.pricing.max_output_table`` (or its documented default). A hard budget that reserves this
worst case is never overrun by the calls it admitted (their input estimated high, as the guard does).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

from costspan.pricing import Pricer, Usage, default_pricer, max_output_table
from costspan.processor.budgets._model import EstimateBasis, Unit
from costspan.processor.budgets._units import to_units

__all__ = ["LINEAR_UP_TO", "CostEstimator", "Estimate", "Rate"]

logger = logging.getLogger(__name__)

#: Above this many input tokens the call is priced exactly (long-context tiers are cliffs).
LINEAR_UP_TO = _LINEAR_UP_TO = 100_000
_PROBE = 10_000
_RATE_TTL = 3600.0  # prices depend on the date: refresh the cached per-token rates hourly
_ZERO = Decimal(0)
_NO_CAP = 1 << 62


@dataclass(frozen=True, slots=True)
class Rate:
    """A model's per-token prices at a time, cached for an hour (``expires``)."""

    expires: float
    base: Decimal | None  # per-request part; None = unpriced model
    per_in: Decimal
    per_out: Decimal
    max_out: int | None
    # the same rates in pico-dollars, rounded up (exact for prices with up to 6 decimals per million)
    base_p: int = 0
    in_p: int = 0
    out_p: int = 0
    #: ``max_out``, or a number no request reaches: ``min(max_tokens, out_cap)`` is the output estimate
    out_cap: int = _NO_CAP
    #: where ``max_out`` came from: ``model_max`` (the catalog) or ``family_max`` (the family table)
    max_out_source: str = "model_max"


class Estimate(NamedTuple):
    usd: Decimal | None  # None: the model is not priced
    input_tokens: int
    output_tokens: int

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class CostEstimator:
    """Estimates what a call may cost before it is sent, leaning high.

    Output tokens are ``max_tokens`` capped at the model's maximum output (so that a huge
    ``max_tokens`` does not over-block), or the model's maximum output when the caller set none
    (``default_output_tokens``, if given, replaces that worst case: budgets reserving it can be
    overrun). Per-token rates are cached per model; calls above 100k input tokens are priced exactly.
    """

    def __init__(
        self,
        pricer: Pricer | None = None,
        *,
        default_output_tokens: int | None = None,
        default_input_tokens: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if (default_output_tokens is not None and default_output_tokens < 0) or default_input_tokens < 0:
            raise ValueError("default token counts must not be negative")
        self._pricer = pricer
        self._default_output = default_output_tokens
        self._default_input = default_input_tokens
        self._clock = clock
        self._rates: dict[tuple[str, str | None], Rate] = {}
        self._lock = threading.Lock()

    @property
    def pricer(self) -> Pricer:
        if self._pricer is None:
            with self._lock:
                if self._pricer is None:
                    self._pricer = default_pricer()
        return self._pricer

    def rate(self, model: str, provider: str | None, now: float | None = None) -> Rate:
        """The model's cached per-token rates (``base`` None: unpriced); a budget check reads them inline."""
        return self._rate(model, provider, now)

    def _rate(self, model: str, provider: str | None, now: float | None = None) -> Rate:
        key = (model, provider)
        if now is None:
            now = self._clock()
        cached = self._rates.get(key)
        if cached is not None and cached.expires > now:
            return cached
        pricer = self.pricer
        base = pricer.price_call(model, Usage(), provider=provider, at=now).total
        if base is None:
            found = Rate(now + _RATE_TTL, None, _ZERO, _ZERO, None)
        else:
            per_in = pricer.price_call(model, Usage(input_tokens=_PROBE), provider=provider, at=now).total or base
            per_out = pricer.price_call(model, Usage(output_tokens=_PROBE), provider=provider, at=now).total or base
            rate_in, rate_out = (per_in - base) / _PROBE, (per_out - base) / _PROBE
            max_out = pricer.max_output_tokens(model, provider)
            source = "model_max"
            if max_out is None:
                max_out, source = max_output_table().lookup(model).tokens, "family_max"
            found = Rate(
                now + _RATE_TTL,
                base,
                rate_in,
                rate_out,
                max_out,
                to_units(base, Unit.USD),
                to_units(rate_in, Unit.USD),
                to_units(rate_out, Unit.USD),
                max_out,
                source,
            )
        if len(self._rates) > 4096:
            self._rates = {}
        self._rates[key] = found
        return found

    def estimate(
        self,
        model: str | None,
        provider: str | None = None,
        *,
        input_tokens: int | None = None,
        max_tokens: int | None = None,
        now: float | None = None,
    ) -> Estimate:
        n_in = self._default_input if input_tokens is None else max(0, input_tokens)
        usd, tokens = self.usd_and_tokens(model, provider, input_tokens, max_tokens, now)
        return Estimate(usd, n_in, tokens - n_in)

    def prices(self, model: str | None, provider: str | None) -> bool:
        """Whether ``model`` has a price under ``provider`` (a fallback must be one the provider serves)."""
        return bool(model) and self.pricer.resolve(str(model), provider) is not None

    def usd_and_tokens(
        self,
        model: str | None,
        provider: str | None,
        input_tokens: int | None,
        max_tokens: int | None,
        now: float | None,
    ) -> tuple[Decimal | None, int]:
        """The hot path of :meth:`estimate`: (USD or None, input + output tokens)."""
        n_in = self._default_input if input_tokens is None else input_tokens
        n_out = self._output_unset(model) if max_tokens is None else max_tokens
        if n_in < 0 or n_out < 0:
            n_in, n_out = max(0, n_in), max(0, n_out)
        if not model:
            return None, n_in + n_out
        rate = self._rates.get((model, provider))
        if rate is None or now is None or rate.expires <= now:
            rate = self._rate(model, provider, now)
        if max_tokens is None and self._default_output is None and rate.max_out is not None:
            n_out = rate.max_out
        if rate.max_out is not None and n_out > rate.max_out:
            n_out = rate.max_out
        if rate.base is None:
            return None, n_in + n_out
        if n_in > _LINEAR_UP_TO:
            exact = self.pricer.price_call(
                model, Usage(input_tokens=n_in, output_tokens=n_out), provider=provider, at=now or self._clock()
            )
            return exact.total, n_in + n_out
        return rate.per_in * n_in + rate.per_out * n_out + rate.base, n_in + n_out

    def pico_and_tokens(
        self,
        model: str | None,
        provider: str | None,
        input_tokens: int | None,
        max_tokens: int | None,
        now: float,
    ) -> tuple[int | None, int]:
        """:meth:`usd_and_tokens` in whole pico-dollars (rounded up), in integer arithmetic: the check's path."""
        n_in = self._default_input if input_tokens is None else input_tokens
        n_out = self._output_unset(model) if max_tokens is None else max_tokens
        if n_in < 0 or n_out < 0:
            n_in, n_out = max(0, n_in), max(0, n_out)
        if not model:
            return None, n_in + n_out
        rate = self._rates.get((model, provider))
        if rate is None or rate.expires <= now:
            rate = self._rate(model, provider, now)
        if max_tokens is None and self._default_output is None and rate.max_out is not None:
            n_out = rate.max_out
        if rate.max_out is not None and n_out > rate.max_out:
            n_out = rate.max_out
        if rate.base is None:
            return None, n_in + n_out
        if n_in > _LINEAR_UP_TO:
            exact = self.usd_and_tokens(model, provider, n_in, n_out, now)[0]
            return None if exact is None else to_units(exact, Unit.USD), n_in + n_out
        return rate.in_p * n_in + rate.out_p * n_out + rate.base_p, n_in + n_out

    def max_output_tokens(self, model: str, provider: str | None = None) -> int | None:
        return self._rate(model, provider).max_out

    def _output_unset(self, model: str | None) -> int:
        """Output tokens assumed for a call without max_tokens, before the model's rate is known: the
        configured default, else the model family's maximum (a priced model's catalog figure wins later)."""
        if self._default_output is not None:
            return self._default_output
        return max_output_table().lookup(model or "").tokens

    def basis(
        self,
        model: str | None,
        provider: str | None,
        input_tokens: int | None,
        max_tokens: int | None,
        now: float | None = None,
    ) -> EstimateBasis:
        """How the estimate of such a call is made: its token counts and where the output count came from."""
        n_in = max(0, self._default_input if input_tokens is None else input_tokens)
        tokens = self.usd_and_tokens(model, provider, input_tokens, max_tokens, now)[1]
        if max_tokens is not None:
            source = "max_tokens"
        elif self._default_output is not None:
            source = "configured"
        elif model:
            rate = self._rate(model, provider, now)
            source = rate.max_out_source if rate.base is not None else "family_max"
        else:
            source = "family_max"
        return EstimateBasis(n_in, tokens - n_in, max_tokens, source)
