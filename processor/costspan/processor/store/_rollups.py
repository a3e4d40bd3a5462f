"""In-memory totals derived from the ledger: time buckets × dimensions, all-time totals, per workflow/user.

Everything here can be rebuilt by replaying the ledger; snapshots only save the replay time.

Memory follows what is tracked, not how many calls were made: per-minute sums (with their
histograms) are kept only for the calls of the last ``minute_detail_s`` (default 48 hours); a call
older than that is summed in its hour and day only, and a minute bucket that ages out of the window
is dropped (its calls stay in its hour and day). Likewise hour buckets are kept for the last
``hour_detail_s`` (default 7 days), then only the day holds the calls. Hour and day buckets keep
the core sums (no histograms: the all-time totals by dims keep those for the metrics). Dims tuples
are interned, so a bucket's key costs a pointer, not six strings. :attr:`Rollups.compacted` counts
the minute and hour buckets dropped or never made (``costspan_rollup_compacted_total``).
"""

from __future__ import annotations

import json
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Final, NamedTuple

import orjson

from costspan.processor.store._records import CallRecord
from costspan.processor.store._sums import DURATION_BUCKETS, TOKEN_BUCKETS, Sums

__all__ = ["GRANULARITIES", "OVERFLOW", "Dims", "RollupGroups", "Rollups", "group_records", "subtract_groups"]

GRANULARITIES: Final = {"minute": 60, "hour": 3600, "day": 86400}
#: Default window of per-minute detail (seconds before now).
MINUTE_DETAIL_S: Final = 48 * 3600
#: Default window of per-hour sums (seconds before now).
HOUR_DETAIL_S: Final = 7 * 86400
#: How often (seconds of ``clock``) minute buckets that left the window are dropped.
_COMPACT_EVERY_S: Final = 60
#: Label value of the series that absorbs dimensions beyond the series cap (totals stay exact).
OVERFLOW: Final = "__overflow__"

#: tenant, service, provider, model, operation, status
Dims = tuple[str, str, str, str, str, str]


class RollupGroups(NamedTuple):
    """One batch summed per (dims, minute), per (tenant, workflow) and per (tenant, user)."""

    by_minute: dict[tuple[Dims, int], Sums]
    by_workflow: dict[tuple[str, str], Sums]
    by_user: dict[tuple[str, str], Sums]
    records: int


def group_records(records: Iterable[CallRecord]) -> RollupGroups:
    """Sum records into groups: one ``Sums.add_call`` per record (plus one per workflow or user); the
    histogram buckets of a call are found once."""
    groups: dict[tuple[Dims, int], Sums] = {}
    by_workflow: dict[tuple[str, str], Sums] = {}
    by_user: dict[tuple[str, str], Sums] = {}
    new = Sums.with_parts
    n = 0
    for r in records:
        n += 1
        dims: Dims = (r.tenant, r.service, r.provider, r.model, r.operation, "error" if r.error_type else "ok")
        start_s = r.start_ns // 1_000_000_000
        group_key = (dims, start_s - start_s % 60)
        sums = groups.get(group_key)
        if sums is None:
            sums = groups[group_key] = new()
        duration = max(r.end_ns - r.start_ns, 0) / 1e9
        t = r.tokens
        ttfc = r.ttfc_s
        buckets = (
            bisect_left(DURATION_BUCKETS, duration),
            bisect_left(TOKEN_BUCKETS, t.input),
            bisect_left(TOKEN_BUCKETS, t.output),
            -1 if ttfc is None else bisect_left(DURATION_BUCKETS, ttfc),
        )
        sums.add_call(r, duration, buckets)
        if r.workflow:
            key = (r.tenant, r.workflow)
            sums = by_workflow.get(key)
            if sums is None:
                sums = by_workflow[key] = new()
            sums.add_call(r, duration, buckets)
        if r.user:
            key = (r.tenant, r.user)
            sums = by_user.get(key)
            if sums is None:
                sums = by_user[key] = new()
            sums.add_call(r, duration, buckets)
    return RollupGroups(groups, by_workflow, by_user, n)


def subtract_groups(groups: RollupGroups, minus: RollupGroups) -> RollupGroups:
    """``groups`` without what ``minus`` (a subset of the same records) contributed; empty groups go."""
    out: list[dict[Any, Sums]] = []
    pairs: tuple[tuple[dict[Any, Sums], dict[Any, Sums]], ...] = (
        (groups.by_minute, minus.by_minute),
        (groups.by_workflow, minus.by_workflow),
        (groups.by_user, minus.by_user),
    )
    for mine, theirs in pairs:
        result: dict[Any, Sums] = {}
        for key, totals in mine.items():
            removed = theirs.get(key)
            if removed is None:
                result[key] = totals
                continue
            remaining = totals.copy()
            remaining.subtract(removed)
            if remaining.requests:
                result[key] = remaining
        out.append(result)
    return RollupGroups(out[0], out[1], out[2], groups.records - minus.records)


class Rollups:
    """Minute/hour/day buckets × dims, all-time totals by dims (metrics), totals per workflow and user."""

    def __init__(
        self,
        *,
        max_series: int = 10_000,
        minute_detail_s: int = MINUTE_DETAIL_S,
        hour_detail_s: int = HOUR_DETAIL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_series < 1:
            raise ValueError("max_series must be at least 1")
        if minute_detail_s < 60:
            raise ValueError("minute_detail_s must be at least 60")
        self.max_series = max_series
        if hour_detail_s < 3600:
            raise ValueError("hour_detail_s must be at least 3600")
        self.minute_detail_s = minute_detail_s
        self.hour_detail_s = hour_detail_s
        self._clock = clock
        self.buckets: dict[str, dict[int, dict[Dims, Sums]]] = {g: {} for g in GRANULARITIES}
        self.totals: dict[Dims, Sums] = {}
        self.by_workflow: dict[tuple[str, str], Sums] = {}
        self.by_user: dict[tuple[str, str], Sums] = {}
        self.records = 0
        #: Minute buckets dropped after the detail window, or never made for an older call.
        self.compacted = 0
        self._interned: dict[Dims, Dims] = {}
        #: Each bucket's (each series') JSON row as the last snapshot encoded it; what a merge changes
        #: leaves, so a snapshot encodes only what changed since the previous one.
        self._encoded: dict[tuple[Any, ...], bytes] = {}
        self._next_compact = 0.0

    def _series(self, dims: Dims) -> Sums:
        """The all-time totals of ``dims``, or of the overflow series once the cap is reached."""
        totals = self.totals.get(dims)
        if totals is None:
            if len(self.totals) >= self.max_series:
                dims = (OVERFLOW, OVERFLOW, OVERFLOW, OVERFLOW, OVERFLOW, dims[5])
                totals = self.totals.get(dims)
            if totals is None:
                totals = self.totals[dims] = Sums.with_parts()
        self._encoded.pop(("totals", dims), None)
        return totals

    def add(self, r: CallRecord) -> None:
        self.merge_groups(group_records((r,)))

    def add_all(self, records: Iterable[CallRecord]) -> None:
        self.merge_groups(group_records(records))

    def _intern(self, dims: Dims) -> Dims:
        found = self._interned.get(dims)
        if found is None:
            found = self._interned[dims] = dims
        return found

    def merge_groups(self, groups: RollupGroups) -> None:
        """Merge a batch's pre-aggregated groups into every view (all-time, minute, hour, day, ...)."""
        now = self._clock()
        if now >= self._next_compact:
            self._next_compact = now + _COMPACT_EVERY_S
            self.compact(now)
        first_minute = now - self.minute_detail_s
        first_hour = now - self.hour_detail_s
        buckets = self.buckets
        encoded = self._encoded
        for (given, minute), group in groups.by_minute.items():
            dims = self._intern(given)
            self._series(dims).merge(group)
            for granularity, width in GRANULARITIES.items():
                if (width == 60 and minute < first_minute) or (width == 3600 and minute < first_hour):
                    self.compacted += 1  # summed in its coarser buckets only
                    continue
                by_time = buckets[granularity]
                bucket_start = minute - minute % width
                encoded.pop((granularity, bucket_start), None)
                by_dims = by_time.get(bucket_start)
                if by_dims is None:
                    by_dims = by_time[bucket_start] = {}
                target = by_dims.get(dims)
                if target is None:
                    by_dims[dims] = group.copy() if width == 60 else group.core()
                elif width == 60:
                    target.merge(group)
                else:
                    target.merge_core(group)
        for name, source, into in (
            ("by_workflow", groups.by_workflow, self.by_workflow),
            ("by_user", groups.by_user, self.by_user),
        ):
            for key, group in source.items():
                encoded.pop((name, key), None)
                target = into.get(key)
                if target is None:
                    into[key] = group.copy()
                else:
                    target.merge(group)
        self.records += groups.records

    def compact(self, now_s: float) -> int:
        """Drop the minute and hour buckets older than their windows (their calls stay in the coarser
        buckets); returns how many were dropped."""
        dropped = 0
        for granularity, window in (("minute", self.minute_detail_s), ("hour", self.hour_detail_s)):
            by_time = self.buckets[granularity]
            old = [start for start in by_time if start < now_s - window]
            for start in old:
                del by_time[start]
            dropped += len(old)
        self.compacted += dropped
        return dropped

    def prune(self, now_s: int, keep_seconds: dict[str, int]) -> int:
        """Drop buckets older than each granularity's retention; returns how many were dropped."""
        dropped = 0
        for granularity, keep in keep_seconds.items():
            by_time = self.buckets[granularity]
            for start in [s for s in by_time if s < now_s - keep]:
                del by_time[start]
                dropped += 1
        return dropped

    def grand_total(self) -> Sums:
        out = Sums()
        for t in self.totals.values():
            out.merge(t)
        return out

    def encode(self) -> bytes:
        """:meth:`to_json` as JSON bytes, built from one small encoding per bucket and series (each a
        short hold of the GIL) and the rows cached since the last call for what did not change."""
        cache = self._encoded
        fresh: dict[tuple[Any, ...], bytes] = {}

        def row(key: tuple[Any, ...], build: Callable[[], Any]) -> bytes:
            found = cache.get(key)
            if found is None:
                value = build()
                try:
                    found = orjson.dumps(value)
                except TypeError:  # an integer beyond 64 bits (hostile token counts): the slow encoder
                    found = json.dumps(value, separators=(",", ":")).encode()
            fresh[key] = found
            return found

        def pairs(name: str, entries: dict[Any, Sums]) -> bytes:
            return b",".join(row((name, k), partial(_pair_json, k, v)) for k, v in entries.items())

        parts = [b'{"records":%d,"totals":[' % self.records, pairs("totals", self.totals), b'],"buckets":{']
        for i, (g, by_time) in enumerate(self.buckets.items()):
            rows = b",".join(row((g, start), partial(_bucket_json, start, by)) for start, by in by_time.items())
            parts.append(b'%s"%s":[%s]' % (b"," if i else b"", g.encode(), rows))
        parts += [b'},"by_workflow":[', pairs("by_workflow", self.by_workflow), b'],"by_user":[']
        parts += [pairs("by_user", self.by_user), b"]}"]
        self._encoded = fresh  # what left (pruned, compacted) leaves the cache too
        return b"".join(parts)

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
    def from_json(
        cls,
        data: dict[str, Any],
        *,
        max_series: int = 10_000,
        minute_detail_s: int = MINUTE_DETAIL_S,
        hour_detail_s: int = HOUR_DETAIL_S,
        clock: Callable[[], float] = time.time,
    ) -> Rollups:
        """Rollups from :meth:`to_json` (hour and day buckets of older snapshots lose their histograms)."""
        out = cls(max_series=max_series, minute_detail_s=minute_detail_s, hour_detail_s=hour_detail_s, clock=clock)
        dims = out._intern
        out.records = int(data["records"])
        out.totals = {dims(_dims(k)): Sums.from_json(v) for k, v in data["totals"]}
        for g, width in GRANULARITIES.items():
            out.buckets[g] = {
                int(start): {
                    dims(_dims(k)): Sums.from_json(v) if width == 60 else Sums.from_json(v).core() for k, v in entries
                }
                for start, entries in data["buckets"][g]
            }
        out.by_workflow = {(str(k[0]), str(k[1])): Sums.from_json(v) for k, v in data["by_workflow"]}
        out.by_user = {(str(k[0]), str(k[1])): Sums.from_json(v) for k, v in data["by_user"]}
        out.compact(clock())
        out.compacted = 0
        return out


def _pair_json(key: tuple[str, ...], sums: Sums) -> list[Any]:
    return [list(key), sums.to_json()]


def _bucket_json(start: int, by_dims: dict[Dims, Sums]) -> list[Any]:
    return [start, [[list(k), v.to_json()] for k, v in by_dims.items()]]


def _dims(values: list[Any]) -> Dims:
    if len(values) != 6:
        raise ValueError("dims entry has the wrong length")
    a, b, c, d, e, f = (str(v) for v in values)
    return (a, b, c, d, e, f)
