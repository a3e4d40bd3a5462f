"""The sums the usage index keeps: :class:`Agg` (one set of calls) and :class:`Series` (one name over days)."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

__all__ = ["LAT_BOUNDS", "Agg", "Series", "latency_bucket"]

_ZERO: Final = Decimal(0)
#: Latency histogram bounds in milliseconds: 5 % apart from 0.1 ms to about 30 minutes.
LAT_BOUNDS: Final = tuple(0.1 * 1.05**i for i in range(int(math.log(1.8e7) / math.log(1.05)) + 1))


def latency_bucket(latency_ms: float) -> int:
    return bisect.bisect_left(LAT_BOUNDS, latency_ms)


@dataclass(slots=True)
class Agg:
    """Sums over a set of calls. ``cost`` sums priced and estimated calls (unpriced add nothing).

    ``latency`` (bucket -> calls) is kept only where a latency quantile is asked of the sums.
    """

    requests: int = 0
    errors: int = 0
    unpriced: int = 0
    cache_hits: int = 0
    cost: Decimal = _ZERO
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    latency_ms: float = 0.0
    latency: dict[int, int] | None = None

    def add_values(
        self, error: int, cost: Decimal | None, tin: int, tout: int, cache_read: int, latency_ms: float, bucket: int
    ) -> None:
        """Add one call from its pre-extracted values (``bucket`` < 0: no histogram)."""
        self.requests += 1
        self.errors += error
        if cost is None:
            self.unpriced += 1
        else:
            self.cost += cost
        self.input_tokens += tin
        self.output_tokens += tout
        if cache_read:
            self.cache_read_tokens += cache_read
            self.cache_hits += 1
        self.latency_ms += latency_ms
        if bucket >= 0:
            hist = self.latency
            if hist is None:
                hist = self.latency = {}
            hist[bucket] = hist.get(bucket, 0) + 1

    def merge(self, o: Agg, *, histogram: bool = True) -> None:
        self.requests += o.requests
        self.errors += o.errors
        self.unpriced += o.unpriced
        self.cache_hits += o.cache_hits
        self.cost += o.cost
        self.input_tokens += o.input_tokens
        self.output_tokens += o.output_tokens
        self.cache_read_tokens += o.cache_read_tokens
        self.latency_ms += o.latency_ms
        if histogram and o.latency:
            hist = self.latency
            if hist is None:
                self.latency = dict(o.latency)
                return
            for b, n in o.latency.items():
                hist[b] = hist.get(b, 0) + n

    def minus(self, o: Agg) -> Agg:
        """``self - o`` without histograms (``o`` is a part of ``self``)."""
        return Agg(
            self.requests - o.requests,
            self.errors - o.errors,
            self.unpriced - o.unpriced,
            self.cache_hits - o.cache_hits,
            self.cost - o.cost,
            self.input_tokens - o.input_tokens,
            self.output_tokens - o.output_tokens,
            self.cache_read_tokens - o.cache_read_tokens,
            self.latency_ms - o.latency_ms,
        )

    def copy(self) -> Agg:
        return Agg(
            self.requests,
            self.errors,
            self.unpriced,
            self.cache_hits,
            self.cost,
            self.input_tokens,
            self.output_tokens,
            self.cache_read_tokens,
            self.latency_ms,
            None if self.latency is None else dict(self.latency),
        )

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def quantile_ms(self, q: float) -> float | None:
        """Latency quantile in ms from the 5 %-wide histogram (the bucket's upper bound), None if empty."""
        hist = self.latency or {}
        counted = sum(hist.values())
        if not counted:
            return None
        rank = max(1, math.ceil(q * counted))
        seen = 0
        for b in sorted(hist):
            seen += hist[b]
            if seen >= rank:
                return LAT_BOUNDS[min(b, len(LAT_BOUNDS) - 1)]
        return LAT_BOUNDS[-1]

    # --- snapshots ----------------------------------------------------------------------------------
    def to_json(self) -> list[Any]:
        return [
            self.requests,
            self.errors,
            self.unpriced,
            self.cache_hits,
            str(self.cost),
            self.input_tokens,
            self.output_tokens,
            self.cache_read_tokens,
            self.latency_ms,
            None if self.latency is None else [x for kv in self.latency.items() for x in kv],
        ]

    @classmethod
    def from_json(cls, d: list[Any]) -> Agg:
        hist = d[9]
        return cls(
            int(d[0]),
            int(d[1]),
            int(d[2]),
            int(d[3]),
            Decimal(d[4]),
            int(d[5]),
            int(d[6]),
            int(d[7]),
            float(d[8]),
            None if hist is None else {int(hist[i]): int(hist[i + 1]) for i in range(0, len(hist), 2)},
        )


class Series:
    """One name's (a user's, a workflow's) sums over UTC days, kept cumulative.

    ``cum[i]`` holds every call up to and including ``days[i]``, so the sums of any window are one
    subtraction: O(log days) per name instead of a merge per day. Calls arrive for the newest day
    (one add); a call for an older day is added to every later entry.
    """

    __slots__ = ("cum", "days")

    def __init__(self) -> None:
        self.days: list[int] = []
        self.cum: list[Agg] = []

    def add(self, day: int, values: tuple[int, Decimal | None, int, int, int, float]) -> None:
        days = self.days
        if days and days[-1] == day:
            self.cum[-1].add_values(*values, -1)
            return
        if not days or day > days[-1]:
            base = self.cum[-1].copy() if days else Agg()
            base.add_values(*values, -1)
            days.append(day)
            self.cum.append(base)
            return
        i = bisect.bisect_left(days, day)
        if days[i] != day:
            base = self.cum[i - 1].copy() if i else Agg()
            days.insert(i, day)
            self.cum.insert(i, base)
        for a in self.cum[i:]:
            a.add_values(*values, -1)

    def merge(self, day: int, sums: Agg) -> None:
        """:meth:`add` for the sums of several calls of ``day``."""
        days = self.days
        if days and days[-1] == day:
            self.cum[-1].merge(sums, histogram=False)
            return
        i = bisect.bisect_left(days, day)
        if i == len(days) or days[i] != day:
            base = self.cum[i - 1].copy() if i else Agg()
            days.insert(i, day)
            self.cum.insert(i, base)
        for a in self.cum[i:]:
            a.merge(sums, histogram=False)

    def _before(self, day: int) -> Agg | None:
        """Cumulative sums of the days before ``day`` (None: nothing before it)."""
        i = bisect.bisect_left(self.days, day)
        return self.cum[i - 1] if i else None

    def _through(self, day: int) -> Agg | None:
        i = bisect.bisect_right(self.days, day)
        return self.cum[i - 1] if i else None

    def between(self, first: int, last: int) -> Agg:
        """Sums of the days in ``[first, last]`` (a new Agg)."""
        upto = self._through(last)
        if upto is None:
            return Agg()
        before = self._before(first)
        return upto.copy() if before is None else upto.minus(before)

    def cost_between(self, first: int, last: int) -> tuple[int, Decimal]:
        """``(requests, cost)`` of the days in ``[first, last]``."""
        days = self.days
        if days and first <= days[0] and days[-1] <= last:  # the window holds every day: no search
            whole = self.cum[-1]
            return whole.requests, whole.cost
        upto = self._through(last)
        if upto is None:
            return 0, _ZERO
        before = self._before(first)
        if before is None:
            return upto.requests, upto.cost
        return upto.requests - before.requests, upto.cost - before.cost

    def per_day(self, first: int, last: int) -> list[tuple[int, Agg]]:
        """``(day, sums of that day)`` for the days with calls in ``[first, last]``, oldest first."""
        days, cum = self.days, self.cum
        out = []
        for i in range(bisect.bisect_left(days, first), bisect.bisect_right(days, last)):
            out.append((days[i], cum[i].minus(cum[i - 1]) if i else cum[i].copy()))
        return out

    def drop_before(self, day: int) -> None:
        """Forget the days before ``day``: the later entries no longer count them."""
        i = bisect.bisect_left(self.days, day)
        if not i:
            return
        gone = self.cum[i - 1]
        self.days = self.days[i:]
        self.cum = [a.minus(gone) for a in self.cum[i:]]

    def to_json(self) -> list[Any]:
        return [self.days, [a.to_json() for a in self.cum]]

    @classmethod
    def from_json(cls, d: list[Any]) -> Series:
        s = cls()
        s.days = [int(x) for x in d[0]]
        s.cum = [Agg.from_json(a) for a in d[1]]
        return s
