"""In-memory totals derived from the ledger: time buckets × dimensions, all-time totals, per workflow/user.

Everything here can be rebuilt by replaying the ledger; snapshots only save the replay time.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, NamedTuple

from costspan.processor.store._records import CallRecord

__all__ = [
    "DURATION_BUCKETS",
    "GRANULARITIES",
    "OVERFLOW",
    "TOKEN_BUCKETS",
    "Dims",
    "RollupGroups",
    "Rollups",
    "Totals",
    "group_records",
    "merge_totals",
    "subtract_groups",
]

#: GenAI semconv advice for gen_ai.client.operation.duration (seconds).
DURATION_BUCKETS: Final = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
#: GenAI semconv advice for gen_ai.client.token.usage.
TOKEN_BUCKETS: Final = tuple(4**i for i in range(14))
GRANULARITIES: Final = {"minute": 60, "hour": 3600, "day": 86400}
#: Label value of the series that absorbs dimensions beyond the series cap (totals stay exact).
OVERFLOW: Final = "__overflow__"
_ZERO: Final = Decimal(0)

#: tenant, service, provider, model, operation, status
Dims = tuple[str, str, str, str, str, str]


@dataclass(slots=True)
class Totals:
    """Sums over a set of calls. Money is Decimal; ``cost`` sums priced and estimated calls only."""

    requests: int = 0
    errors: int = 0
    unpriced: int = 0
    estimated: int = 0
    cost: Decimal = _ZERO
    cost_input: Decimal = _ZERO
    cost_output: Decimal = _ZERO
    cost_cache_read: Decimal = _ZERO
    cost_cache_write: Decimal = _ZERO
    cost_other: Decimal = _ZERO
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    duration_sum: float = 0.0
    duration_counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    input_token_counts: list[int] = field(default_factory=lambda: [0] * (len(TOKEN_BUCKETS) + 1))
    output_token_counts: list[int] = field(default_factory=lambda: [0] * (len(TOKEN_BUCKETS) + 1))
    #: Time to first chunk of streamed calls (same bucket bounds as the duration, per semconv).
    ttfc_sum: float = 0.0
    ttfc_counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))

    def add(self, r: CallRecord, duration: float) -> None:
        self.requests += 1
        if r.error_type:
            self.errors += 1
        if r.cost_total is None:
            self.unpriced += 1
        else:
            if r.tokens_estimated:
                self.estimated += 1
            self.cost += r.cost_total
            self.cost_input += r.cost_input or _ZERO
            self.cost_output += r.cost_output or _ZERO
            self.cost_cache_read += r.cost_cache_read or _ZERO
            self.cost_cache_write += r.cost_cache_write or _ZERO
            self.cost_other += r.cost_other or _ZERO
        t = r.tokens
        self.input_tokens += t.input
        self.output_tokens += t.output
        self.cache_read_tokens += t.cache_read
        self.cache_write_tokens += t.cache_write
        self.reasoning_tokens += t.reasoning
        self.duration_sum += duration
        self.duration_counts[bisect.bisect_left(DURATION_BUCKETS, duration)] += 1
        self.input_token_counts[bisect.bisect_left(TOKEN_BUCKETS, t.input)] += 1
        self.output_token_counts[bisect.bisect_left(TOKEN_BUCKETS, t.output)] += 1
        if r.ttfc_s is not None:
            self.ttfc_sum += r.ttfc_s
            self.ttfc_counts[bisect.bisect_left(DURATION_BUCKETS, r.ttfc_s)] += 1

    def quantile(self, q: float) -> float | None:
        """Latency quantile (seconds) from the histogram, interpolated within its bucket."""
        total = sum(self.duration_counts)
        if not total:
            return None
        rank = q * total
        seen = 0
        for i, count in enumerate(self.duration_counts):
            if seen + count >= rank and count:
                low = DURATION_BUCKETS[i - 1] if i else 0.0
                high = DURATION_BUCKETS[i] if i < len(DURATION_BUCKETS) else DURATION_BUCKETS[-1]
                return low + (high - low) * (rank - seen) / count
            seen += count
        return DURATION_BUCKETS[-1]

    def to_json(self) -> list[Any]:
        return [
            self.requests,
            self.errors,
            self.unpriced,
            self.estimated,
            *(
                str(x)
                for x in (
                    self.cost,
                    self.cost_input,
                    self.cost_output,
                    self.cost_cache_read,
                    self.cost_cache_write,
                    self.cost_other,
                )
            ),
            self.input_tokens,
            self.output_tokens,
            self.cache_read_tokens,
            self.cache_write_tokens,
            self.reasoning_tokens,
            self.duration_sum,
            self.duration_counts,
            self.input_token_counts,
            self.output_token_counts,
            self.ttfc_sum,
            self.ttfc_counts,
        ]

    @classmethod
    def from_json(cls, data: list[Any]) -> Totals:
        if len(data) not in (19, 21):  # 19: snapshots written before the time-to-first-chunk histogram
            raise ValueError("totals entry has the wrong length")
        costs = [Decimal(str(x)) for x in data[4:10]]
        counts = [int(x) for x in data[10:15]]
        return cls(
            requests=int(data[0]),
            errors=int(data[1]),
            unpriced=int(data[2]),
            estimated=int(data[3]),
            cost=costs[0],
            cost_input=costs[1],
            cost_output=costs[2],
            cost_cache_read=costs[3],
            cost_cache_write=costs[4],
            cost_other=costs[5],
            input_tokens=counts[0],
            output_tokens=counts[1],
            cache_read_tokens=counts[2],
            cache_write_tokens=counts[3],
            reasoning_tokens=counts[4],
            duration_sum=float(data[15]),
            duration_counts=[int(x) for x in data[16]],
            input_token_counts=[int(x) for x in data[17]],
            output_token_counts=[int(x) for x in data[18]],
            ttfc_sum=float(data[19]) if len(data) > 19 else 0.0,
            ttfc_counts=[int(x) for x in data[20]] if len(data) > 19 else [0] * (len(DURATION_BUCKETS) + 1),
        )


_FIELDS: Final = tuple(Totals.__dataclass_fields__)


class RollupGroups(NamedTuple):
    """One batch summed per (dims, minute), per (tenant, workflow) and per (tenant, user)."""

    by_minute: dict[tuple[Dims, int], Totals]
    by_workflow: dict[tuple[str, str], Totals]
    by_user: dict[tuple[str, str], Totals]
    records: int


def group_records(records: Iterable[CallRecord]) -> RollupGroups:
    """Sum records into groups: one ``Totals.add`` per record (plus one per workflow or user)."""
    groups: dict[tuple[Dims, int], Totals] = {}
    by_workflow: dict[tuple[str, str], Totals] = {}
    by_user: dict[tuple[str, str], Totals] = {}
    n = 0
    for r in records:
        n += 1
        dims: Dims = (r.tenant, r.service, r.provider, r.model, r.operation, "error" if r.error_type else "ok")
        start_s = r.start_ns // 1_000_000_000
        group_key = (dims, start_s - start_s % 60)
        totals = groups.get(group_key)
        if totals is None:
            totals = groups[group_key] = Totals()
        duration = max(r.end_ns - r.start_ns, 0) / 1e9
        totals.add(r, duration)
        if r.workflow:
            key = (r.tenant, r.workflow)
            totals = by_workflow.get(key)
            if totals is None:
                totals = by_workflow[key] = Totals()
            totals.add(r, duration)
        if r.user:
            key = (r.tenant, r.user)
            totals = by_user.get(key)
            if totals is None:
                totals = by_user[key] = Totals()
            totals.add(r, duration)
    return RollupGroups(groups, by_workflow, by_user, n)


def subtract_groups(groups: RollupGroups, minus: RollupGroups) -> RollupGroups:
    """``groups`` without what ``minus`` (a subset of the same records) contributed; empty groups go."""
    out: list[dict[Any, Totals]] = []
    pairs: tuple[tuple[dict[Any, Totals], dict[Any, Totals]], ...] = (
        (groups.by_minute, minus.by_minute),
        (groups.by_workflow, minus.by_workflow),
        (groups.by_user, minus.by_user),
    )
    for mine, theirs in pairs:
        result: dict[Any, Totals] = {}
        for key, totals in mine.items():
            removed = theirs.get(key)
            if removed is None:
                result[key] = totals
                continue
            remaining = _copy(totals)
            _merge(remaining, removed, -1)
            if remaining.requests:
                result[key] = remaining
        out.append(result)
    return RollupGroups(out[0], out[1], out[2], groups.records - minus.records)


class Rollups:
    """Minute/hour/day buckets × dims, all-time totals by dims (metrics), totals per workflow and user."""

    def __init__(self, *, max_series: int = 10_000) -> None:
        if max_series < 1:
            raise ValueError("max_series must be at least 1")
        self.max_series = max_series
        self.buckets: dict[str, dict[int, dict[Dims, Totals]]] = {g: {} for g in GRANULARITIES}
        self.totals: dict[Dims, Totals] = {}
        self.by_workflow: dict[tuple[str, str], Totals] = {}
        self.by_user: dict[tuple[str, str], Totals] = {}
        self.records = 0

    def _series(self, dims: Dims) -> Totals:
        """The all-time totals of ``dims``, or of the overflow series once the cap is reached."""
        totals = self.totals.get(dims)
        if totals is None:
            if len(self.totals) >= self.max_series:
                dims = (OVERFLOW, OVERFLOW, OVERFLOW, OVERFLOW, OVERFLOW, dims[5])
                totals = self.totals.get(dims)
            if totals is None:
                totals = self.totals[dims] = Totals()
        return totals

    def add(self, r: CallRecord) -> None:
        self.merge_groups(group_records((r,)))

    def add_all(self, records: Iterable[CallRecord]) -> None:
        self.merge_groups(group_records(records))

    def merge_groups(self, groups: RollupGroups) -> None:
        """Merge a batch's pre-aggregated groups into every view (all-time, minute, hour, day, ...)."""
        for (dims, minute), group in groups.by_minute.items():
            _merge(self._series(dims), group)
            for granularity, width in GRANULARITIES.items():
                by_time = self.buckets[granularity]
                bucket_start = minute - minute % width
                by_dims = by_time.get(bucket_start)
                if by_dims is None:
                    by_dims = by_time[bucket_start] = {}
                target = by_dims.get(dims)
                if target is None:
                    by_dims[dims] = _copy(group)
                else:
                    _merge(target, group)
        for source, into in ((groups.by_workflow, self.by_workflow), (groups.by_user, self.by_user)):
            for key, group in source.items():
                target = into.get(key)
                if target is None:
                    into[key] = _copy(group)
                else:
                    _merge(target, group)
        self.records += groups.records

    def prune(self, now_s: int, keep_seconds: dict[str, int]) -> int:
        """Drop buckets older than each granularity's retention; returns how many were dropped."""
        dropped = 0
        for granularity, keep in keep_seconds.items():
            by_time = self.buckets[granularity]
            for start in [s for s in by_time if s < now_s - keep]:
                del by_time[start]
                dropped += 1
        return dropped

    def grand_total(self) -> Totals:
        out = Totals()
        for t in self.totals.values():
            _merge(out, t)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "totals": [[list(k), v.to_json()] for k, v in self.totals.items()],
            "buckets": {
                g: [[start, [[list(k), v.to_json()] for k, v in by_dims.items()]] for start, by_dims in b.items()]
                for g, b in self.buckets.items()
            },
            "by_workflow": [[list(k), v.to_json()] for k, v in self.by_workflow.items()],
            "by_user": [[list(k), v.to_json()] for k, v in self.by_user.items()],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], *, max_series: int = 10_000) -> Rollups:
        out = cls(max_series=max_series)
        out.records = int(data["records"])
        out.totals = {_dims(k): Totals.from_json(v) for k, v in data["totals"]}
        for g in GRANULARITIES:
            out.buckets[g] = {
                int(start): {_dims(k): Totals.from_json(v) for k, v in entries} for start, entries in data["buckets"][g]
            }
        out.by_workflow = {(str(k[0]), str(k[1])): Totals.from_json(v) for k, v in data["by_workflow"]}
        out.by_user = {(str(k[0]), str(k[1])): Totals.from_json(v) for k, v in data["by_user"]}
        return out


def _dims(values: list[Any]) -> Dims:
    if len(values) != 6:
        raise ValueError("dims entry has the wrong length")
    a, b, c, d, e, f = (str(v) for v in values)
    return (a, b, c, d, e, f)


def _copy(t: Totals) -> Totals:
    out = Totals()
    _merge(out, t)
    return out


def merge_totals(into: Totals, other: Totals) -> None:
    """Add ``other`` into ``into`` (every count, sum and histogram bucket)."""
    _merge(into, other)


def _merge(into: Totals, other: Totals, sign: int = 1) -> None:
    for name in _FIELDS:
        value = getattr(other, name)
        if isinstance(value, list):
            target = getattr(into, name)
            for i, count in enumerate(value):
                target[i] += sign * count
        else:
            setattr(into, name, getattr(into, name) + sign * value)
