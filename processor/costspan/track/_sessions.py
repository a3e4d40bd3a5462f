"""Sessions by id, answered from totals kept as calls are stored (not from a read of the ledger).

:class:`SessionIndex` reads the in-process store's ledger once, when it is attached (its tail with the
store's commits held off, so every call is counted exactly once), then adds each newly stored call from the
store's commit listener and applies repricing corrections as cost deltas. A lookup is one dictionary
read. It holds at most ``max_sessions`` sessions: past that the tenth whose last calls are oldest is
dropped (counted in :attr:`SessionIndex.dropped`) and their ids go into a fixed-size Bloom filter; a
lookup of a session the filter may hold answers ``None`` (its totals may be partial or gone), so the
caller reads the ledger for that one session instead.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from costspan.processor.store import Store
from costspan.processor.store._corrections import Correction, correction_from_json, is_correction
from costspan.processor.store._ledger import Ledger, Position
from costspan.processor.store._records import CallRecord, record_from_json

__all__ = ["DEFAULT_MAX_SESSIONS", "SessionIndex", "SessionTotals", "totals_of"]

logger = logging.getLogger(__name__)

#: Sessions kept by default (a few hundred bytes each).
DEFAULT_MAX_SESSIONS = 100_000
#: Bits of the filter of dropped session ids (128 KiB), and hashes per id.
_FILTER_BITS = 1 << 20
_FILTER_HASHES = 4


class _Dropped:
    """A Bloom filter of the dropped session ids: never a false "not dropped"."""

    __slots__ = ("_bits",)

    def __init__(self) -> None:
        self._bits = bytearray(_FILTER_BITS // 8)

    @staticmethod
    def _positions(session_id: str) -> list[int]:
        digest = hashlib.blake2b(session_id.encode("utf-8", "surrogatepass"), digest_size=4 * _FILTER_HASHES).digest()
        return [int.from_bytes(digest[i : i + 4], "little") % _FILTER_BITS for i in range(0, 4 * _FILTER_HASHES, 4)]

    def add(self, session_id: str) -> None:
        for p in self._positions(session_id):
            self._bits[p >> 3] |= 1 << (p & 7)

    def __contains__(self, session_id: str) -> bool:
        return all(self._bits[p >> 3] & (1 << (p & 7)) for p in self._positions(session_id))


@dataclass(frozen=True, slots=True)
class SessionTotals:
    """What one session's calls cost, from the processor's records."""

    session_id: str
    calls: int = 0
    cost_usd: Decimal = Decimal(0)
    unpriced: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    first_call: datetime | None = None
    last_call: datetime | None = None
    tenants: tuple[str, ...] = ()
    models: dict[str, int] = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)
class _Sums:
    """One session's calls of one tenant."""

    calls: int = 0
    cost: Decimal = Decimal(0)
    unpriced: int = 0
    tin: int = 0
    tout: int = 0
    first_ns: int = 0
    last_ns: int = 0
    models: dict[str, int] = field(default_factory=dict)

    def add(self, r: CallRecord) -> None:
        self.calls += 1
        if r.cost_total is None:
            self.unpriced += 1
        else:
            self.cost += r.cost_total
        self.tin += r.tokens.input
        self.tout += r.tokens.output
        self.first_ns = r.start_ns if self.calls == 1 else min(self.first_ns, r.start_ns)
        self.last_ns = max(self.last_ns, r.start_ns)
        self.models[r.model] = self.models.get(r.model, 0) + 1


def totals_of(session_id: str, sums: list[tuple[str, _Sums]]) -> SessionTotals:
    """One session's totals over its ``(tenant, sums)`` rows."""
    if not sums:
        return SessionTotals(session_id=session_id)
    models: dict[str, int] = {}
    for _, s in sums:
        for model, n in s.models.items():
            models[model] = models.get(model, 0) + n
    return SessionTotals(
        session_id=session_id,
        calls=sum(s.calls for _, s in sums),
        cost_usd=sum((s.cost for _, s in sums), Decimal(0)),
        unpriced=sum(s.unpriced for _, s in sums),
        input_tokens=sum(s.tin for _, s in sums),
        output_tokens=sum(s.tout for _, s in sums),
        first_call=datetime.fromtimestamp(min(s.first_ns for _, s in sums) / 1e9, UTC),
        last_call=datetime.fromtimestamp(max(s.last_ns for _, s in sums) / 1e9, UTC),
        tenants=tuple(sorted(t for t, _ in sums)),
        models=models,
    )


def scan(records: list[CallRecord], session_id: str, tenant: str | None) -> SessionTotals:
    """One session's totals from a list of records (the ledger read: the fallback for a dropped session)."""
    found: dict[str, _Sums] = {}
    for r in records:
        if r.session == session_id and (tenant is None or r.tenant == tenant):
            found.setdefault(r.tenant, _Sums()).add(r)
    return totals_of(session_id, sorted(found.items()))


class SessionIndex:
    """Per session and tenant, the totals of the stored calls that carry a session id."""

    def __init__(self, max_sessions: int = DEFAULT_MAX_SESSIONS) -> None:
        if isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or max_sessions < 1:
            raise ValueError(f"max_sessions must be a positive int, got {max_sessions!r}")
        self.max_sessions = max_sessions
        self.dropped = 0
        self._dropped: _Dropped | None = None
        self._lock = threading.Lock()
        self._sessions: dict[str, dict[str, _Sums]] = {}

    def attach(self, store: Store) -> None:
        """Count what the store holds, then every call it stores from now on (call once, not on the
        store's writer thread). Two reads, as the budget book seeds a budget: the ledger as it is while
        the store goes on committing, then, with its commits held off, only the tail written since,
        and the listeners are added: a call is counted once, and a long ledger never stalls ingest."""
        mark = self._read(store, None)
        with store.commits_paused():  # nothing is committed between the tail and the listeners
            self._read(store, mark)
            store.add_commit_listener(self.add)
            store.add_correction_listener(self.correct)

    def _read(self, store: Store, after: Position | None) -> Position | None:
        """Count the ledger's lines after ``after`` (records, and corrections as deltas); where it ended."""
        mark = after
        batch: list[CallRecord] = []
        for line in Ledger(store.ledger.directory, fsync="never").read(after):
            mark = line.end
            try:
                if is_correction(line.payload):
                    self.add(batch)
                    batch = []
                    self.correct([correction_from_json(line.payload)], line.end)
                else:
                    batch.append(record_from_json(line.payload))
            except (ValueError, KeyError, TypeError):  # unreadable or out of range: skipped, as replay skips it
                continue
            if len(batch) >= 1000:
                self.add(batch)
                batch = []
        self.add(batch)
        return mark

    def add(self, records: list[CallRecord]) -> None:
        with self._lock:
            for r in records:
                if r.session:
                    self._sessions.setdefault(r.session, {}).setdefault(r.tenant, _Sums()).add(r)
            if len(self._sessions) > self.max_sessions:  # down to 90 %: a drop is rare, not per batch
                self._drop_oldest(len(self._sessions) - self.max_sessions * 9 // 10)

    def correct(self, corrections: list[Correction], end: Position) -> None:
        """A repriced call changes its session's cost (and whether it is priced), nothing else."""
        del end
        with self._lock:
            for c in corrections:
                sums = self._sessions.get(c.new.session, {}).get(c.new.tenant) if c.new.session else None
                if sums is None:
                    continue
                sums.cost += (c.new.cost_total or Decimal(0)) - (c.old.cost_total or Decimal(0))
                sums.unpriced += (c.new.cost_total is None) - (c.old.cost_total is None)

    def lookup(self, session_id: str, tenant: str | None = None) -> SessionTotals | None:
        """The session's totals (of ``tenant`` only, if given); ``None`` when the session may have been
        dropped (its totals here may be partial: read the ledger instead)."""
        with self._lock:
            if self._dropped is not None and session_id in self._dropped:
                return None
            rows = self._sessions.get(session_id)
            if rows is None:
                return SessionTotals(session_id=session_id)
            found = sorted((t, s) for t, s in rows.items() if tenant is None or t == tenant)
            return totals_of(session_id, found)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _drop_oldest(self, n: int) -> None:
        last = ((max(s.last_ns for s in rows.values()), sid) for sid, rows in self._sessions.items())
        if self._dropped is None:
            self._dropped = _Dropped()
        for _, sid in heapq.nsmallest(n, last):
            del self._sessions[sid]
            self._dropped.add(sid)
        self.dropped += n
        logger.info("costspan session index: dropped the %d oldest session(s) (max_sessions=%d)", n, self.max_sessions)
