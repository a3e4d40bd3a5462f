"""Pre-aggregated usage indexes the API answers from: per tenant × UTC day (and hour) × dimension.

Everything a route asks is summed when a call is added, so a query touches O(days × keys) small
sums, never the calls: per tenant (and for every tenant together, :data:`ALL`) and UTC day, the
total and sums per provider (with latency histograms), per (provider, model, operation), per
(project, provider) and per session; per hour, sums per provider; per tenant, every user's and
workflow's sums over days, kept cumulative (:class:`Series`: a window is one subtraction).

Feeding: :meth:`UsageIndex.on_commit` (the store's commit listener: the records just made durable,
with the ledger position after them) or :meth:`UsageIndex.catch_up` (reads the ledger from the
position the index includes: start-up replay, or an index without a store hook). Both go by ledger
position, under the index's lock, so a record is never counted twice. :mod:`._index_snapshot` saves
and loads the index with its position so a restart replays only the ledger's tail.
"""

from __future__ import annotations

import heapq
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Final, TypeVar

from costspan.processor.api._session_aging import AGE_EVERY_S, age_sessions
from costspan.processor.store._batch import Committed
from costspan.processor.store._callsums import CallDims, sum_calls
from costspan.processor.store._corrections import Correction, correction_sums
from costspan.processor.store._ledger import Ledger, Position
from costspan.processor.store._records import CallRecord
from costspan.processor.store._series import Series
from costspan.processor.store._snapshots import replay
from costspan.processor.store._sums import Sums
from costspan.processor.store._validate import CardinalityLimits, NameBounds

__all__ = ["ALL", "DAY_S", "DIMS", "HOUR_S", "CallKey", "TenantDay", "UsageIndex"]

logger = logging.getLogger(__name__)

DAY_S: Final = 86400
HOUR_S: Final = 3600
#: The key of the every-tenant sums (not a valid tenant id: tenant ids are printable).
ALL: Final = "\x00all"
#: The per-name dimensions kept as cumulative series per tenant.
DIMS: Final = ("user", "workflow")

_K = TypeVar("_K")

#: (provider, model, operation)
CallKey = tuple[str, str, str]


@dataclass(slots=True)
class TenantDay:
    """One tenant's (or every tenant's) calls of one UTC day.

    ``total`` and ``by_provider`` keep latency histograms; ``by_project`` (keyed (project,
    provider)), ``by_session`` and ``sessions`` (the calls of every counted session) are kept for
    a tenant's own days only.
    """

    total: Sums = field(default_factory=Sums)
    by_call: dict[CallKey, Sums] = field(default_factory=dict)
    by_provider: dict[str, Sums] = field(default_factory=dict)
    by_project: dict[tuple[str, str], Sums] = field(default_factory=dict)
    by_session: dict[str, Sums] = field(default_factory=dict)
    sessions: Sums = field(default_factory=Sums)
    services: set[str] = field(default_factory=set)
    tenants: set[str] = field(default_factory=set)
    #: Sessions no longer in ``by_session`` (aged: see :mod:`._session_aging`), still in ``sessions``.
    aged_sessions: int = 0
    #: (stamp, limit) -> the day's most expensive sessions, in the day's order (see top_sessions)
    top_cache: dict[tuple[int, int, Decimal, int], list[str]] = field(default_factory=dict)

    def top_sessions(self, limit: int) -> list[str]:
        """The ``limit`` sessions with the highest cost this day (ties: the earlier first), in the day's order."""
        stamp = (len(self.by_session), self.sessions.requests, self.sessions.cost, limit)
        found = self.top_cache.get(stamp)
        if found is None:
            ranked = heapq.nlargest(limit, enumerate(self.by_session.items()), key=lambda e: e[1][1].cost)
            found = [name for _, (name, _) in sorted(ranked, key=lambda e: e[0])]
            self.top_cache.clear()  # a day's sessions change only while the day is young
            self.top_cache[stamp] = found
        return found


def _agg(into: dict[_K, Sums], key: _K) -> Sums:
    a = into.get(key)
    if a is None:
        a = into[key] = Sums()
    return a


class UsageIndex:
    """Thread-safe: feeding happens under the index's lock; readers hold it through :meth:`read`
    (queries are short), the snapshot loader through :meth:`write`."""

    def __init__(
        self,
        ledger_dir: Path | None = None,
        *,
        max_sessions_per_day: int = 100_000,
        cardinality: CardinalityLimits | None = None,
        count: Callable[[str, int], None] | None = None,
        session_detail_days: int = 2,
        keep_sessions: int = 100,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``cardinality``: how many models, users, workflows, sessions and projects one tenant may have
        (calls of names beyond it are summed as ``"(other)"``); ``count(reason, calls)`` hears of them."""
        self._lock = threading.RLock()  # feeding, and readers through read()
        self.bounds = NameBounds(cardinality or CardinalityLimits(), count)
        self.days: dict[str, dict[int, TenantDay]] = {}  # tenant (or ALL) -> day start (s) -> sums
        self.hours: dict[str, dict[int, dict[str, Sums]]] = {}  # tenant (or ALL) -> hour start -> provider
        self.series: dict[tuple[str, str], dict[str, Series]] = {}  # (tenant, dim) -> name -> sums over days
        self.session_last: dict[str, dict[str, int]] = {}  # tenant -> session -> last day it was counted
        self.multi_day: dict[str, dict[str, int]] = {}  # tenant -> sessions counted on 2+ days -> last day
        self.records = 0
        #: Bumped whenever sums change other than by adding a record (pruning, a snapshot load); with
        #: ``records`` it tells a reader whether anything changed since it last looked.
        self.generation = 0
        self.max_sessions_per_day = max_sessions_per_day
        if session_detail_days < 1 or keep_sessions < 1:
            raise ValueError("session_detail_days and keep_sessions must be at least 1")
        self.session_detail_days = session_detail_days
        self.keep_sessions = keep_sessions
        self.sessions_aged = 0  # sessions aged into their day (see _session_aging)
        self._clock = clock
        self._next_aging = 0.0
        self.ledger_dir = ledger_dir
        self._ledger = Ledger(ledger_dir, fsync="never") if ledger_dir is not None else None
        self.position: Position | None = None  # the ledger position every counted record is before
        self.live = False  # fed by on_commit (the ledger is no longer read)
        self._stop = threading.Event()
        # flat views of the nested dicts, for the fold's hot path
        self._flat_days: dict[tuple[str, int], TenantDay] = {}
        self._flat_hours: dict[tuple[str, int], dict[str, Sums]] = {}
        self._thread: threading.Thread | None = None

    # --- feeding ------------------------------------------------------------------------------------
    def add_many(self, records: Iterable[CallRecord]) -> None:
        with self._lock:
            self._add_records(list(records))

    def add(self, record: CallRecord) -> None:
        self.add_many([record])

    def on_commit(self, records: list[CallRecord], end: Position) -> None:
        """The store's commit listener: ``records`` were just appended, ending at ``end``.

        Runs on the store's writer (no append runs meanwhile). Until the first call the index has
        read the ledger itself; that call reads it up to ``end`` (this batch included), then the
        records are taken as they come.
        """
        self._take(end, lambda: self._add_records(records))

    def on_committed(self, committed: Committed) -> None:
        """:meth:`on_commit` from the store's sums listener: folds the calls' sums, not the calls."""
        self._take(committed.end, lambda: self._add_committed(committed))

    def on_corrected(self, corrections: list[Correction], end: Position) -> None:
        """The store's correction listener: ``corrections`` (repriced calls) were appended, ending at ``end``."""
        self._take(end, lambda: self._apply_corrections(corrections))

    def _apply_corrections(self, corrections: list[Correction]) -> None:
        """Each corrected call's cost delta, where its call was summed (requests and tokens unchanged)."""
        for dims, delta in correction_sums(corrections).items():
            self._add_sums(dims, delta)
        self.generation += 1  # sums changed without a new record: folded windows are stale

    def _take(self, end: Position, fold: Callable[[], None]) -> None:
        with self._lock:
            if not self.live:
                if self._ledger is not None:
                    self._read_ledger(None)
                else:
                    fold()
                self.position = end
                self.live = True
                return
            if self.position is not None and end <= self.position:
                return  # already counted
            fold()
            self.position = end

    def _add_records(self, records: list[CallRecord]) -> None:
        """Calls are summed first (:func:`~costspan.processor.store._callsums.sum_calls`), then folded."""
        for dims, s in sum_calls(records).items():
            self._add_sums(dims, s.sums)
        self._maybe_age()

    def _maybe_age(self) -> None:
        """Age the settled days' sessions (:mod:`._session_aging`) at most every ``AGE_EVERY_S``."""
        now = self._clock()
        if now >= self._next_aging:
            self._next_aging = now + AGE_EVERY_S
            age_sessions(self, now)

    def _add_committed(self, committed: Committed) -> None:
        for _, sums in committed.sums():
            for dims, s in sums.items():
                self._add_sums(dims, s.sums)
        self._maybe_age()

    def _add_sums(self, d: CallDims, a: Sums) -> None:
        """:meth:`_add` for the sums of calls sharing ``d`` (the same places, merged instead of added)."""
        tenant, provider, day, hour = d.tenant, d.provider, d.day, d.hour
        bound = self.bounds.name
        calls = a.requests
        key = (provider, bound(tenant, "model", d.model, calls), d.operation)
        for who in (tenant, ALL):
            td = self._flat_days.get((who, day))
            if td is None:
                td = self._flat_days[who, day] = self.days.setdefault(who, {}).setdefault(day, TenantDay())
            td.total.merge(a)
            _agg(td.by_call, key).merge(a, histogram=False)
            _agg(td.by_provider, provider).merge(a)
            td.services.add(d.service)
            td.tenants.add(tenant)
            by_provider = self._flat_hours.get((who, hour))
            if by_provider is None:
                by_provider = self._flat_hours[who, hour] = self.hours.setdefault(who, {}).setdefault(hour, {})
            _agg(by_provider, provider).merge(a, histogram=False)
        own = self._flat_days[tenant, day]
        if d.project:
            _agg(own.by_project, (bound(tenant, "project", d.project, calls), provider)).merge(a, histogram=False)
        for dim, given in (("workflow", d.workflow), ("user", d.user)):
            if given:
                name = bound(tenant, dim, given, calls)
                names = self.series.get((tenant, dim))
                if names is None:
                    names = self.series[tenant, dim] = {}
                s = names.get(name)
                if s is None:
                    s = names[name] = Series()
                s.merge(day, a)
        if d.session:
            into = self._session_agg(tenant, bound(tenant, "session", d.session, calls), own, day)
            if into is not None:
                into.merge(a, histogram=False)
                own.sessions.merge(a, histogram=False)
        self.records += a.calls

    def _session_agg(self, tenant: str, session: str, own: TenantDay, day: int) -> Sums | None:
        """Where a call of ``session`` on ``day`` is summed; None once the day's sessions are at the bound."""
        sessions = own.by_session
        a = sessions.get(session)
        if a is None:
            if len(sessions) >= self.max_sessions_per_day:
                return None  # counted nowhere (bounded memory)
            a = sessions[session] = Sums()
            last = self.session_last.setdefault(tenant, {})
            seen = last.get(session)
            if seen is None:
                last[session] = day
            else:
                last[session] = max(seen, day)
                self.multi_day.setdefault(tenant, {})[session] = last[session]
        return a

    def catch_up(self, max_records: int | None = None) -> int:
        """Fold the ledger lines after :attr:`position` (at most ``max_records``); returns how many.

        Does nothing once the index is fed by :meth:`on_commit`.
        """
        if self._ledger is None or self.live or not self._ledger.directory.exists():
            return 0
        with self._lock:
            if self.live:
                return 0
            return self._read_ledger(max_records)

    def _read_ledger(self, max_records: int | None) -> int:
        assert self._ledger is not None

        def advance(position: Position) -> None:
            self.position = position  # under the lock: readers see the position with its records

        return replay(
            self._ledger,
            self.position,
            self._add_records,
            limit=max_records,
            advance=advance,
            correct=self._apply_corrections,
        ).records

    def follow(self, interval_s: float = 0.2, *, every_hour: Callable[[], None] | None = None) -> None:
        """In a background thread until :meth:`stop`: catch up every ``interval_s`` while not fed by
        :meth:`on_commit`; prune hourly; call ``every_hour`` too (e.g. a snapshot). Safe to call twice."""
        if self._thread is not None:
            return
        self._stop.clear()

        def run() -> None:
            last_hourly = time.monotonic()
            while not self._stop.wait(interval_s):
                try:
                    while self.catch_up(max_records=2000) == 2000:  # let queries in between chunks
                        pass
                    if time.monotonic() - last_hourly > 3600:
                        last_hourly = time.monotonic()
                        self.prune(time.time())
                        if every_hour is not None:
                            every_hour()
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
        with self._lock:
            self.generation += 1
            for flat, nested, cut in ((self._flat_days, self.days, day_cut), (self._flat_hours, self.hours, hour_cut)):
                for who, start in [k for k in flat if k[1] < cut]:
                    del flat[who, start]
                    del nested[who][start]
                    dropped += 1
            first_kept = math.ceil(day_cut)
            for names in self.series.values():
                for name in [n for n, s in names.items() if s.days and s.days[-1] < first_kept]:
                    del names[name]
                for s in names.values():
                    s.drop_before(first_kept)
            age_sessions(self, now_s, forget=True)
            for per in (self.session_last, self.multi_day):
                for sessions in per.values():
                    for name in [n for n, d in sessions.items() if d < day_cut]:
                        del sessions[name]
            self._learn_names()  # a name no longer held frees its place under the bounds
        return dropped

    def rebuild_views(self) -> None:
        """Rebuild the flat views after the nested dicts were filled directly (a snapshot load)."""
        with self._lock:
            self.generation += 1
            self._flat_days = {(who, d): td for who, per in self.days.items() for d, td in per.items()}
            self._flat_hours = {(who, h): by for who, per in self.hours.items() for h, by in per.items()}
            self._learn_names()

    def _learn_names(self) -> None:
        """The names the loaded sums hold, known to the cardinality bounds (so they stay, and count)."""
        learn = self.bounds.learn
        self.bounds.clear()
        for (tenant, dim), names in self.series.items():
            learn(tenant, dim, list(names))
        for tenant, sessions in self.session_last.items():
            learn(tenant, "session", list(sessions))
        for tenant, days in self.days.items():
            if tenant == ALL:
                continue
            for td in days.values():
                learn(tenant, "model", [model for _, model, _ in td.by_call])
                learn(tenant, "project", [project for project, _ in td.by_project])

    # --- reading ------------------------------------------------------------------------------------
    def read(self) -> AbstractContextManager[bool]:
        """``with index.read():`` while reading the sums (the ranges, names and days below); feeding
        waits meanwhile, so hold it for one query's walk only. Reentrant; no copy is made."""
        return self._lock

    def write(self) -> AbstractContextManager[bool]:
        """``with index.write():`` while changing the sums other than by feeding (a snapshot load);
        readers and feeding wait. The same lock as :meth:`read`: the index has one."""
        return self._lock

    def tenant_ids(self) -> list[str]:
        with self._lock:
            return sorted(t for t in self.days if t != ALL)

    def day_range(self, tenant: str, first_day: int, last_day: int) -> list[tuple[int, TenantDay]]:
        """``(day start, sums)`` of ``tenant`` (or ALL) for days in ``[first_day, last_day]``, oldest first."""
        days = self.days.get(tenant)
        if not days:
            return []
        if last_day - first_day > 4 * len(days) * DAY_S:  # sparse: walk what exists
            return sorted((d, td) for d, td in days.items() if first_day <= d <= last_day)
        return [(d, days[d]) for d in range(first_day, last_day + 1, DAY_S) if d in days]

    def hour_range(self, tenant: str, first_hour: int, last_hour: int) -> list[tuple[int, dict[str, Sums]]]:
        hours = self.hours.get(tenant)
        if not hours:
            return []
        if last_hour - first_hour > 4 * len(hours) * HOUR_S:
            return sorted((h, a) for h, a in hours.items() if first_hour <= h <= last_hour)
        return [(h, hours[h]) for h in range(first_hour, last_hour + 1, HOUR_S) if h in hours]

    def names(self, tenant: str, dim: str) -> dict[str, Series]:
        """A tenant's users or workflows (``dim``) with their sums over days (read under :meth:`read`)."""
        return self.series.get((tenant, dim), {})
