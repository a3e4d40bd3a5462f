"""The one fold type: :class:`Sums` of a set of calls, used by the rollups, the batch call sums and the usage index.

Every consumer keeps the same core (requests, errors, unpriced calls, cache hits, cost, input,
output and cache-read tokens, latency); what only some keep sits in an optional :class:`Detail`
that stays ``None`` until used, so the usage index's millions of small sums cost no more than
the core. The detail holds the usage index's sparse latency histogram (5 % wide, in ms) and the
rollups' parts (cost parts, estimated calls, cache-write and reasoning tokens, the GenAI semconv
duration, token and time-to-first-chunk histograms the Prometheus metrics expose).

Outcomes: ``requests`` counts the calls that were sent (``ok``, ``degraded`` and ``error`` ones);
a call a budget blocked before it was sent is counted in ``blocked`` only — never as a request, a
priced or an unpriced call, never in tokens or latency. ``degraded`` counts the sent calls that
succeeded degraded; ``unpriced_tokens`` the tokens (input + output) of the unpriced calls.

Snapshots: :meth:`Sums.to_json` writes the core as a 10-item list (the usage index's shape since
it existed), with the rollups' parts 14 more items, then the three outcome counts (degraded,
blocked, unpriced tokens). :meth:`Sums.from_json` also reads the lists written before the outcome
counts (10 or 24 items) and the rollups' older 19- and 21-item lists: there, the degraded calls
are taken to be the unpriced and estimated ones that did not fail, blocked calls stay among the
errors they were counted as, and the unpriced calls' tokens are unknown (0).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from decimal import Decimal
from operator import attrgetter
from typing import Any, Final

from costspan.instrumentation import attributes as attr
from costspan.processor.store._detail import (
    DURATION_BUCKETS,
    N_DURATION,
    N_TOKEN,
    TOKEN_BUCKETS,
    Detail,
    parts_from_json,
)
from costspan.processor.store._records import CallRecord, outcome_of

__all__ = [
    "DURATION_BUCKETS",
    "LAT_BOUNDS",
    "TOKEN_BUCKETS",
    "Detail",
    "Sums",
    "latency_bucket",
]

_ZERO: Final = Decimal(0)
#: Latency histogram bounds in milliseconds: 5 % apart from 0.1 ms to about 30 minutes.
LAT_BOUNDS: Final = tuple(0.1 * 1.05**i for i in range(int(math.log(1.8e7) / math.log(1.05)) + 1))


def latency_bucket(latency_ms: float) -> int:
    return bisect.bisect_left(LAT_BOUNDS, latency_ms)


@dataclass(slots=True)
class Sums:
    """Sums over a set of calls. ``cost`` sums priced and estimated calls (unpriced add nothing);
    ``latency_ms`` sums the calls' durations in milliseconds; ``detail``: see :class:`Detail`."""

    requests: int = 0
    errors: int = 0
    unpriced: int = 0
    cache_hits: int = 0
    cost: Decimal = _ZERO
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    latency_ms: float = 0.0
    degraded: int = 0
    blocked: int = 0
    unpriced_tokens: int = 0
    detail: Detail | None = None

    def __reduce__(self) -> tuple[Any, ...]:  # compact pickles (batches travel from ingest workers)
        return (Sums, (*_core(self), self.detail))

    @classmethod
    def with_parts(cls) -> Sums:
        """Empty sums that keep the rollups' parts (what :meth:`add_call` needs)."""
        parts = Detail(
            duration_counts=[0] * N_DURATION, input_token_counts=[0] * N_TOKEN, output_token_counts=[0] * N_TOKEN
        )
        return cls(detail=parts)

    # --- adding calls -------------------------------------------------------------------------------
    def add_values(
        self, error: int, cost: Decimal | None, tin: int, tout: int, cache_read: int, latency_ms: float, bucket: int
    ) -> None:
        """Add one call from its pre-extracted values to the core (``bucket`` >= 0: and to the latency
        histogram). The usage index's and the batch call sums' add."""
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
            d = self.detail
            if d is None:
                self.detail = Detail({bucket: 1})
                return
            hist = d.latency
            if hist is None:
                d.latency = {bucket: 1}
            else:
                hist[bucket] = hist.get(bucket, 0) + 1

    def add_call(self, r: CallRecord, duration: float, buckets: tuple[int, int, int, int]) -> None:
        """Add one call to the core and the rollups' parts (sums made by :meth:`with_parts`):
        ``duration`` in seconds; ``buckets``: the duration's, input and output tokens' and time to
        first chunk's histogram buckets (-1: not streamed), found once per call by the caller."""
        outcome = r.outcome or outcome_of(r)
        if outcome == _BLOCKED:
            self.blocked += 1
            return
        d: Any = self.detail
        self.requests += 1
        if r.error_type:
            self.errors += 1
        elif outcome == _DEGRADED:
            self.degraded += 1
        cost = r.cost_total
        if cost is None:
            self.unpriced += 1
            self.unpriced_tokens += r.tokens.input + r.tokens.output
        else:
            if r.tokens_estimated:
                d.estimated += 1
            self.cost += cost
            d.cost_input += r.cost_input or _ZERO
            d.cost_output += r.cost_output or _ZERO
            d.cost_cache_read += r.cost_cache_read or _ZERO
            d.cost_cache_write += r.cost_cache_write or _ZERO
            d.cost_other += r.cost_other or _ZERO
        t = r.tokens
        self.input_tokens += t.input
        self.output_tokens += t.output
        if t.cache_read:
            self.cache_read_tokens += t.cache_read
            self.cache_hits += 1
        d.cache_write_tokens += t.cache_write
        d.reasoning_tokens += t.reasoning
        self.latency_ms += duration * 1000.0
        d.duration_sum += duration
        duration_bucket, input_bucket, output_bucket, ttfc_bucket = buckets
        d.duration_counts[duration_bucket] += 1
        d.input_token_counts[input_bucket] += 1
        d.output_token_counts[output_bucket] += 1
        if ttfc_bucket >= 0:
            d.ttfc_sum += r.ttfc_s
            counts = d.ttfc_counts
            if counts is None:
                counts = d.ttfc_counts = [0] * N_DURATION
            counts[ttfc_bucket] += 1

    def add(self, r: CallRecord, duration: float) -> None:
        """:meth:`add_call` finding the buckets itself (one call at a time)."""
        if self.detail is None or self.detail.duration_counts is None:
            self.merge(Sums.with_parts(), histogram=False)
        ttfc = r.ttfc_s
        self.add_call(
            r,
            duration,
            (
                bisect.bisect_left(DURATION_BUCKETS, duration),
                bisect.bisect_left(TOKEN_BUCKETS, r.tokens.input),
                bisect.bisect_left(TOKEN_BUCKETS, r.tokens.output),
                -1 if ttfc is None else bisect.bisect_left(DURATION_BUCKETS, ttfc),
            ),
        )

    # --- combining ----------------------------------------------------------------------------------
    def merge(self, o: Sums, *, histogram: bool = True) -> None:
        """Add ``o`` (its latency histogram only with ``histogram``; its rollup parts always)."""
        self.requests += o.requests
        self.errors += o.errors
        self.unpriced += o.unpriced
        self.cache_hits += o.cache_hits
        self.cost += o.cost
        self.input_tokens += o.input_tokens
        self.output_tokens += o.output_tokens
        self.cache_read_tokens += o.cache_read_tokens
        self.latency_ms += o.latency_ms
        if o.degraded or o.blocked or o.unpriced_tokens:
            self.degraded += o.degraded
            self.blocked += o.blocked
            self.unpriced_tokens += o.unpriced_tokens
        od = o.detail
        if od is None:
            return
        d = self.detail
        if od.duration_counts is not None:
            if d is None:
                d = self.detail = Detail()
            d.merge_parts(od)
        if histogram and od.latency:
            if d is None:
                self.detail = Detail(dict(od.latency))
                return
            hist = d.latency
            if hist is None:
                d.latency = dict(od.latency)
                return
            for b, n in od.latency.items():
                hist[b] = hist.get(b, 0) + n

    def merge_core(self, o: Sums) -> None:
        """Add ``o``'s core only (neither its histograms nor its rollup parts)."""
        self.requests += o.requests
        self.errors += o.errors
        self.unpriced += o.unpriced
        self.cache_hits += o.cache_hits
        self.cost += o.cost
        self.input_tokens += o.input_tokens
        self.output_tokens += o.output_tokens
        self.cache_read_tokens += o.cache_read_tokens
        self.latency_ms += o.latency_ms
        self.degraded += o.degraded
        self.blocked += o.blocked
        self.unpriced_tokens += o.unpriced_tokens

    def subtract(self, o: Sums) -> None:
        """Take away ``o`` (a part of these sums), its rollup parts included, never histograms of latency."""
        self.requests -= o.requests
        self.errors -= o.errors
        self.unpriced -= o.unpriced
        self.cache_hits -= o.cache_hits
        self.cost -= o.cost
        self.input_tokens -= o.input_tokens
        self.output_tokens -= o.output_tokens
        self.cache_read_tokens -= o.cache_read_tokens
        self.latency_ms -= o.latency_ms
        self.degraded -= o.degraded
        self.blocked -= o.blocked
        self.unpriced_tokens -= o.unpriced_tokens
        if o.detail is not None and self.detail is not None:
            self.detail.merge_parts(o.detail, -1)

    def minus(self, o: Sums) -> Sums:
        """``self - o``: the core only (``o`` is a part of ``self``)."""
        return Sums(
            self.requests - o.requests,
            self.errors - o.errors,
            self.unpriced - o.unpriced,
            self.cache_hits - o.cache_hits,
            self.cost - o.cost,
            self.input_tokens - o.input_tokens,
            self.output_tokens - o.output_tokens,
            self.cache_read_tokens - o.cache_read_tokens,
            self.latency_ms - o.latency_ms,
            self.degraded - o.degraded,
            self.blocked - o.blocked,
            self.unpriced_tokens - o.unpriced_tokens,
        )

    def core(self) -> Sums:
        """A copy of the core, without the detail (no histograms, no rollup parts)."""
        return Sums(*_core(self))

    def copy(self) -> Sums:
        out = self.core()
        if self.detail is not None:
            out.detail = self.detail.copy()
        return out

    # --- reading ------------------------------------------------------------------------------------
    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def calls(self) -> int:
        """Every call counted, sent or blocked (what grows whenever a call is added)."""
        return self.requests + self.blocked

    @property
    def ok(self) -> int:
        """Calls sent and answered as asked, priced from reported usage."""
        return self.requests - self.errors - self.degraded

    @property
    def priced_cost(self) -> Decimal | None:
        """``cost``, or None when calls were sent and none of them could be priced (never a made-up 0)."""
        return None if self.requests and self.unpriced == self.requests else self.cost

    @property
    def latency(self) -> dict[int, int] | None:
        """The sparse latency histogram (5 %-wide buckets of :data:`LAT_BOUNDS` -> calls), if kept."""
        d = self.detail
        return None if d is None else d.latency

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

    def parts(self) -> Detail:
        """The rollups' parts (zeros when these sums do not keep them)."""
        d = self.detail
        if d is None or d.duration_counts is None:
            return Sums.with_parts().detail  # type: ignore[return-value]
        return d

    def quantile(self, q: float) -> float | None:
        """Duration quantile (seconds) from the semconv histogram, interpolated within its bucket."""
        counts = self.parts().duration_counts or []
        total = sum(counts)
        if not total:
            return None
        rank = q * total
        seen = 0
        for i, count in enumerate(counts):
            if seen + count >= rank and count:
                low = DURATION_BUCKETS[i - 1] if i else 0.0
                high = DURATION_BUCKETS[i] if i < len(DURATION_BUCKETS) else DURATION_BUCKETS[-1]
                return low + (high - low) * (rank - seen) / count
            seen += count
        return DURATION_BUCKETS[-1]

    # --- snapshots ----------------------------------------------------------------------------------
    def to_json(self) -> list[Any]:
        hist = self.latency
        out: list[Any] = [
            self.requests,
            self.errors,
            self.unpriced,
            self.cache_hits,
            str(self.cost),
            self.input_tokens,
            self.output_tokens,
            self.cache_read_tokens,
            self.latency_ms,
            None if hist is None else [x for kv in hist.items() for x in kv],
        ]
        d = self.detail
        if d is not None and d.duration_counts is not None:
            out += d.parts_json()
        out += [self.degraded, self.blocked, self.unpriced_tokens]
        return out

    @classmethod
    def from_json(cls, d: list[Any]) -> Sums:
        """Sums from :meth:`to_json`'s list, or from the rollups' older 19- or 21-item lists."""
        n = len(d)
        if n not in {13, 27}:  # the core (and the rollups' parts), then the outcome counts (literals: hot on load)
            if n in (10, 24):
                return _derived_outcomes(cls._from_core(d, n))
            if n in (19, 21):
                return _derived_outcomes(_from_old_totals(d))
            raise ValueError("sums entry has the wrong length")
        out = cls._from_core(d, n - 3)
        out.degraded, out.blocked, out.unpriced_tokens = int(d[-3]), int(d[-2]), int(d[-1])
        return out

    @classmethod
    def _from_core(cls, d: list[Any], n: int) -> Sums:
        out = cls(
            int(d[0]), int(d[1]), int(d[2]), int(d[3]), Decimal(d[4]), int(d[5]), int(d[6]), int(d[7]), float(d[8])
        )
        raw = d[9]
        hist = None if raw is None else {int(raw[i]): int(raw[i + 1]) for i in range(0, len(raw), 2)}
        if n > 10:
            p = d[10:]
            out.detail = parts_from_json(hist, p[0], p[1:6], p[6], p[7], p[8], p[9:12], p[12], p[13])
        elif hist is not None:
            out.detail = Detail(hist)
        return out


_BLOCKED: Final = attr.OUTCOME_BLOCKED
_DEGRADED: Final = attr.OUTCOME_DEGRADED
_core: Final = attrgetter(*(name for name in Sums.__dataclass_fields__ if name != "detail"))


def _derived_outcomes(out: Sums) -> Sums:
    """Sums read from a snapshot written before outcomes: the unpriced and estimated calls that did not
    fail taken as the degraded ones (the best the old counts tell)."""
    d = out.detail
    estimated = d.estimated if d is not None and d.duration_counts is not None else 0
    out.degraded = max(min(out.unpriced + estimated, out.requests - out.errors), 0)
    return out


def _from_old_totals(data: list[Any]) -> Sums:
    """The rollups' sums as snapshots wrote them before :class:`Sums` (19 items: before the
    time-to-first-chunk histogram). They kept no count of cache hits (left 0); the latency in ms is
    their duration sum."""
    cost = Decimal(str(data[4]))
    latency_ms = float(data[15]) * 1000.0
    out = Sums(
        int(data[0]), int(data[1]), int(data[2]), 0, cost, int(data[10]), int(data[11]), int(data[12]), latency_ms
    )
    ttfc = len(data) > 19
    out.detail = parts_from_json(
        None,
        data[3],
        data[5:10],
        data[13],
        data[14],
        data[15],
        data[16:19],
        data[19] if ttfc else 0.0,
        data[20] if ttfc else None,
    )
    return out
