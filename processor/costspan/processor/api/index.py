"""Pre-aggregated usage indexes the API answers from: per tenant × UTC day (and hour) × dimension.

The index follows the ledger: :meth:`UsageIndex.catch_up` reads the lines appended since the last
call (a seek and a read of the new bytes; nothing when nothing is new) and folds them in, so no
hook in the store is needed. :meth:`UsageIndex.add_many` is the same fold for records already in
memory (a store hook, or the benchmark). A query touches O(days × distinct keys) small sums, never
the ledger.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Final

from costspan.processor.ledger import Ledger, Position
from costspan.processor.records import CallRecord, record_from_json

__all__ = ["ALL", "DAY_S", "HOUR_S", "Agg", "UsageIndex"]

logger = logging.getLogger(__name__)

DAY_S: Final = 86400
HOUR_S: Final = 3600
#: The key of the every-tenant sums (not a valid tenant id: tenant ids are printable).
ALL: Final = "\x00all"
_ZERO: Final = Decimal(0)
#: Latency histogram bounds in milliseconds: 5 % apart from 0.1 ms to about 30 minutes.
_LAT_BOUNDS: Final = tuple(0.1 * 1.05**i for i in range(int(math.log(1.8e7) / math.log(1.05)) + 1))


@dataclass(slots=True)
class Agg:
    """Sums over a set of calls. ``cost`` sums priced and estimated calls (unpriced add nothing)."""

    requests: int = 0
    errors: int = 0
    unpriced: int = 0
    cache_hits: int = 0
    cost: Decimal = _ZERO
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    latency_ms: float = 0.0
    latency: dict[int, int] = field(default_factory=dict)

    def add(self, r: CallRecord, latency_ms: float, *, histogram: bool = True) -> None:
        t = r.tokens
        bucket = bisect.bisect_left(_LAT_BOUNDS, latency_ms) if histogram else -1
        self.add_values(1 if r.error_type else 0, r.cost_total, t.input, t.output, t.cache_read, latency_ms, bucket)

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
            self.latency[bucket] = self.latency.get(bucket, 0) + 1

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
        if histogram:
            for b, n in o.latency.items():
                self.latency[b] = self.latency.get(b, 0) + n

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def quantile_ms(self, q: float) -> float | None:
        """Latency quantile in ms from the 5 %-wide histogram (the bucket's upper bound), None if empty."""
        counted = sum(self.latency.values())
        if not counted:
            return None
        rank = max(1, math.ceil(q * counted))
        seen = 0
        for b in sorted(self.latency):
            seen += self.latency[b]
            if seen >= rank:
                return _LAT_BOUNDS[min(b, len(_LAT_BOUNDS) - 1)]
        return _LAT_BOUNDS[-1]


#: (provider, model, operation)
CallKey = tuple[str, str, str]


@dataclass(slots=True)
class TenantDay:
    """One tenant's (or every tenant's) calls of one UTC day."""

    by_call: dict[CallKey, Agg] = field(default_factory=dict)
    by_workflow: dict[str, Agg] = field(default_factory=dict)
    by_user: dict[str, Agg] = field(default_factory=dict)
    by_session: dict[str, Agg] = field(default_factory=dict)
    services: set[str] = field(default_factory=set)
    tenants: set[str] = field(default_factory=set)


def _agg(into: dict[str, Agg], key: str) -> Agg:
    a = into.get(key)
    if a is None:
        a = into[key] = Agg()
    return a


class UsageIndex:
    """Thread-safe: folds happen under ``lock``; readers take it too (queries are short)."""

    def __init__(self, ledger_dir: Path | None = None, *, max_sessions_per_day: int = 100_000) -> None:
        self.lock = threading.RLock()
        self.days: dict[str, dict[int, TenantDay]] = {}  # tenant (or ALL) -> day start (s) -> sums
        self.hours: dict[str, dict[int, dict[str, Agg]]] = {}  # tenant (or ALL) -> hour start -> provider
        self.records = 0
        self.max_sessions_per_day = max_sessions_per_day
        self._ledger = Ledger(ledger_dir, fsync="never") if ledger_dir is not None else None
        self._position: Position | None = None
        self._stop = threading.Event()
        # flat views of the nested dicts, for the fold's hot path
        self._flat_days: dict[tuple[str, int], TenantDay] = {}
        self._flat_hours: dict[tuple[str, int], dict[str, Agg]] = {}
        self._thread: threading.Thread | None = None

    # --- feeding ------------------------------------------------------------------------------------
    def add_many(self, records: Iterable[CallRecord]) -> None:
        with self.lock:
            for r in records:
                self._add(r)

    def add(self, record: CallRecord) -> None:
        with self.lock:
            self._add(record)

    def _add(self, r: CallRecord) -> None:
        start_s = r.start_ns // 1_000_000_000
        day = start_s - start_s % DAY_S
        hour = start_s - start_s % HOUR_S
        latency_ms = max(r.end_ns - r.start_ns, 0) / 1e6
        bucket = bisect.bisect_left(_LAT_BOUNDS, latency_ms)
        t = r.tokens
        values = (1 if r.error_type else 0, r.cost_total, t.input, t.output, t.cache_read, latency_ms)
        key = (r.provider, r.model, r.operation)
        tenant = r.tenant
        flat_days = self._flat_days
        flat_hours = self._flat_hours
        for who in (tenant, ALL):
            td = flat_days.get((who, day))
            if td is None:
                td = flat_days[who, day] = self.days.setdefault(who, {}).setdefault(day, TenantDay())
            by_provider = flat_hours.get((who, hour))
            if by_provider is None:
                by_provider = flat_hours[who, hour] = self.hours.setdefault(who, {}).setdefault(hour, {})
            a = td.by_call.get(key)
            if a is None:
                a = td.by_call[key] = Agg()
            a.add_values(*values, bucket)
            td.services.add(r.service)
            td.tenants.add(tenant)
            _agg(by_provider, r.provider).add_values(*values, -1)
        own = flat_days[tenant, day]
        if r.workflow:
            _agg(own.by_workflow, r.workflow).add_values(*values, -1)
        if r.user:
            _agg(own.by_user, r.user).add_values(*values, -1)
        if r.session:
            sessions = own.by_session
            if r.session in sessions or len(sessions) < self.max_sessions_per_day:
                _agg(sessions, r.session).add_values(*values, -1)
        self.records += 1

    def catch_up(self, max_records: int | None = None) -> int:
        """Fold the ledger lines appended since the last call (at most ``max_records``); returns how many."""
        if self._ledger is None or not self._ledger.directory.exists():
            return 0
        added = 0
        with self.lock:
            for line in self._ledger.read(self._position):
                if max_records is not None and added >= max_records:
                    break
                try:
                    record = record_from_json(line.payload)
                except (ValueError, KeyError, TypeError):
                    logger.warning("usage index: unreadable ledger record at %s skipped", line.end)
                else:
                    self._add(record)
                    added += 1
                self._position = line.end
        return added

    def follow(self, interval_s: float = 0.2) -> None:
        """Catch up in a background thread every ``interval_s`` until :meth:`stop` (safe to call twice)."""
        if self._thread is not None or self._ledger is None:
            return
        self._stop.clear()

        def run() -> None:
            last_prune = 0.0
            while not self._stop.wait(interval_s):
                try:
                    while self.catch_up(max_records=2000) == 2000:  # let queries in between chunks
                        pass
                    if time.monotonic() - last_prune > 3600:
                        last_prune = time.monotonic()
                        self.prune(time.time())
                except Exception:  # keep following; the next round retries
                    logger.exception("usage index: following the ledger failed")

        self._thread = threading.Thread(target=run, name="costspan-usage-index", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def prune(self, now_s: float, *, day_retention_days: int = 400, hour_retention_days: int = 90) -> int:
        """Drop day sums older than ``day_retention_days`` and hour sums older than ``hour_retention_days``."""
        day_cut = now_s - day_retention_days * DAY_S
        hour_cut = now_s - hour_retention_days * DAY_S
        dropped = 0
        with self.lock:
            for flat, nested, cut in ((self._flat_days, self.days, day_cut), (self._flat_hours, self.hours, hour_cut)):
                for who, start in [k for k in flat if k[1] < cut]:
                    del flat[who, start]
                    del nested[who][start]
                    dropped += 1
        return dropped

    # --- reading ------------------------------------------------------------------------------------
    def tenant_ids(self) -> list[str]:
        with self.lock:
            return sorted(t for t in self.days if t != ALL)

    def day_range(self, tenant: str, first_day: int, last_day: int) -> list[tuple[int, TenantDay]]:
        """``(day start, sums)`` of ``tenant`` (or ALL) for days in ``[first_day, last_day]``, oldest first."""
        days = self.days.get(tenant)
        if not days:
            return []
        if last_day - first_day > 4 * len(days) * DAY_S:  # sparse: walk what exists
            return sorted((d, td) for d, td in days.items() if first_day <= d <= last_day)
        return [(d, days[d]) for d in range(first_day, last_day + 1, DAY_S) if d in days]

    def hour_range(self, tenant: str, first_hour: int, last_hour: int) -> list[tuple[int, dict[str, Agg]]]:
        hours = self.hours.get(tenant)
        if not hours:
            return []
        if last_hour - first_hour > 4 * len(hours) * HOUR_S:
            return sorted((h, a) for h, a in hours.items() if first_hour <= h <= last_hour)
        return [(h, hours[h]) for h in range(first_hour, last_hour + 1, HOUR_S) if h in hours]
