"""The store: ledger (truth) + rollups (derived) + snapshots, written by one thread with group commit.

Callers submit batches of call records and get a future that resolves once the records are in the
ledger (fsynced under the default policy) and in the rollups. Pending work is bounded: a submit
that does not fit raises :class:`QueueFullError` (the receiver answers 503), it is never dropped.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from costspan.processor.store._batch import Committed, PreparedBatch, call_key, prepare, records_of
from costspan.processor.store._corrections import (
    MARKER,
    Correction,
    correction_groups,
    correction_line,
    current_records,
    latest_corrections,
)
from costspan.processor.store._dedupe import Deduplicator, PendingCalls
from costspan.processor.store._files import open_to_others, private_dir
from costspan.processor.store._history import History
from costspan.processor.store._ledger import FsyncPolicy, Ledger, Position
from costspan.processor.store._records import CallRecord, record_from_json
from costspan.processor.store._rollups import GRANULARITIES, Rollups, group_records, subtract_groups
from costspan.processor.store._snapshots import Snapshots, replay
from costspan.processor.store._sums import Sums
from costspan.processor.store._validate import REJECTED_PREFIX

__all__ = ["Committed", "IngestResult", "QueueFullError", "Store", "StoreConfig"]

logger = logging.getLogger(__name__)

_DAY_S = 86400


def _arrival_hour() -> int:
    """The hour (since the epoch) a call stored now arrives in: the dedupe window's bucket."""
    return int(time.time()) // 3600


class QueueFullError(RuntimeError):
    """The ingest queue has no room for the batch; retry later."""


@dataclass(frozen=True, slots=True)
class IngestResult:
    stored: int
    duplicate_spans: int
    duplicate_calls: int


@dataclass(frozen=True, slots=True)
class StoreConfig:
    data_dir: Path
    fsync: FsyncPolicy = "always"
    max_pending_records: int = 100_000
    snapshot_interval_s: float = 30.0
    segment_bytes: int = 64 * 1024 * 1024
    ledger_retention_days: int = 90
    rollup_retention_days: int = 400
    minute_retention_days: int = 2
    #: Per-minute rollups are kept for the calls of the last this many hours (then hour and day only).
    minute_detail_hours: int = 48
    #: Per-hour rollups are kept for the calls of the last this many days (then day only).
    hour_detail_days: int = 7
    hour_retention_days: int = 90
    max_series: int = 10_000
    dedupe_recent: int = 50_000
    # dedupe window and columnar history
    dedupe_window_hours: int = 6  # span ids remembered for this many hours of arrival (0: forever)
    history: bool = True  # compact closed ledger segments to Parquet in a child process
    segment_seconds: float = 3600.0  # a ledger segment closes after this long (or segment_bytes)

    def __post_init__(self) -> None:
        if self.max_pending_records < 1:
            raise ValueError("max_pending_records must be at least 1")
        if self.snapshot_interval_s <= 0:
            raise ValueError("snapshot_interval_s must be positive")
        if min(self.ledger_retention_days, self.rollup_retention_days) < 1:
            raise ValueError("retention must be at least one day")
        if self.dedupe_window_hours < 0:
            raise ValueError("dedupe_window_hours must be 0 (unbounded) or more")
        if self.minute_detail_hours < 1 or self.hour_detail_days < 1:
            raise ValueError("minute_detail_hours and hour_detail_days must be at least 1")


class Store:
    """Thread-safe facade; the ledger, dedupe index and rollup writes belong to the writer thread."""

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self.ledger = Ledger(
            config.data_dir / "ledger",
            fsync=config.fsync,
            segment_bytes=config.segment_bytes,
            segment_seconds=config.segment_seconds,
        )
        self.snapshots = Snapshots(config.data_dir / "snapshots", "snapshot")
        self.rollups = Rollups(
            max_series=config.max_series,
            minute_detail_s=config.minute_detail_hours * 3600,
            hour_detail_s=config.hour_detail_days * _DAY_S,
        )
        self.lock = threading.Lock()  # guards rollups and counters for readers
        self._commit_lock = threading.Lock()  # a snapshot never sees an append without its merge
        self.counters: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()  # internal errors by component
        self._dedupe = Deduplicator(recent_capacity=config.dedupe_recent, window_hours=config.dedupe_window_hours)
        self._dedupe_snapshots = Snapshots(config.data_dir / "dedupe", "dedupe")
        self.history = History(self.ledger.directory, config.data_dir / "history", enabled=config.history)
        self._pending: deque[tuple[PreparedBatch, Future[IngestResult]]] = deque()
        self._pending_records = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._closed = False
        self._snapshot_position: Position = Position(0, 0)
        self._last_snapshot = time.monotonic()
        self._last_retention = 0.0
        self.started = False
        self._listeners: list[Callable[[list[CallRecord]], None]] = []
        self._sum_listeners: list[Callable[[Committed], None]] = []
        self._correction_listeners: list[Callable[[list[Correction], Position], None]] = []

    # --- counters ---------------------------------------------------------------------------------
    def count(self, key: str, n: int = 1, *, error: bool = False) -> None:
        """Add ``n`` to a counter (``error``: to the internal errors of component ``key``). Thread-safe."""
        with self.lock:
            (self.errors if error else self.counters)[key] += n

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """A consistent copy of ``(counters, internal errors by component)``."""
        with self.lock:
            return dict(self.counters), dict(self.errors)

    # --- life cycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Open the ledger, load the newest valid snapshot, replay the ledger after it, start writing."""
        if self.started:
            return
        private_dir(self.config.data_dir, tighten=False)
        if open_to_others(self.config.data_dir):
            logger.warning(
                "data dir %s may be entered by other users (mode %o): its files are 0600, but `chmod 700` it",
                self.config.data_dir,
                self.config.data_dir.stat().st_mode & 0o777,
            )
        self.ledger.open()
        config = self.config
        snapshot = self.snapshots.load(
            lambda _, data: Rollups.from_json(
                data["rollups"],
                max_series=config.max_series,
                minute_detail_s=config.minute_detail_hours * 3600,
                hour_detail_s=config.hour_detail_days * _DAY_S,
            )
        )
        after = Position(0, 0)
        if snapshot is not None:
            self.rollups = snapshot.value
            after = snapshot.position
        ledger_duplicates = self._load_dedupe(after)
        dedupe = self._dedupe
        replayed = replay(
            self.ledger,
            after,
            self.rollups.add_all,
            seen=dedupe.seen.full_keys(),
            remember=lambda record: dedupe.remember(call_key(record)),
            correct=lambda corrections: self.rollups.merge_groups(correction_groups(corrections)),
        )
        ledger_duplicates += replayed.duplicates
        if replayed.unreadable:
            self.errors["ledger"] += replayed.unreadable
            self.counters[REJECTED_PREFIX + "invalid_stored_record"] += replayed.unreadable
        if self.ledger.corrupt_lines or self.ledger.torn_tail_bytes:
            self.errors["ledger"] += self.ledger.corrupt_lines + (1 if self.ledger.torn_tail_bytes else 0)
        if self.snapshots.corrupt:
            self.errors["snapshot"] += self.snapshots.corrupt
        self._snapshot_position = after
        self.counters["replayed_records"] = replayed.records
        self.counters["ledger_duplicates_skipped"] = ledger_duplicates
        logger.info(
            "store started: snapshot at %s, %d record(s) replayed, %d known span(s)",
            after,
            replayed.records,
            len(self._dedupe),
        )
        self._apply_retention()
        self._thread = threading.Thread(target=self._run, name="costspan-ledger-writer", daemon=True)
        self._thread.start()
        self.started = True

    def _load_dedupe(self, after: Position) -> int:
        """Fill the dedupe window as it was at ``after`` (the rollup snapshot's position): from the dedupe
        snapshot taken with it, else (an older data dir, a lost file) from every ledger line before it.
        The newest calls before it are read back too, so a parent/child duplicate is still caught."""
        window = self._dedupe.seen
        hour = _arrival_hour()
        if after == Position(0, 0) or window.load(self._dedupe_snapshots, after, hour):
            window.roll(hour, self._dedupe_snapshots.directory)
            if after.segment:
                self._remember_window(deque(self.ledger.tail(after, self.config.dedupe_recent)))
            return 0
        window.roll(hour, self._dedupe_snapshots.directory)
        logger.info("no dedupe snapshot at %s: the dedupe window is rebuilt from the ledger", after)
        recent: deque[bytes] = deque(maxlen=self.config.dedupe_recent)
        keys: set[int] = set()
        _, duplicates = self.ledger.scan_keys(after, keys, recent)
        for key in keys:
            window.add(key)
        self._remember_window(recent)
        return duplicates

    def _remember_window(self, payloads: deque[bytes]) -> None:
        """Put the calls stored before the snapshot (the newest ``dedupe_recent``) in the dedupe window."""
        for payload in payloads:
            try:
                record = record_from_json(payload)
            except (ValueError, KeyError, TypeError):
                continue  # not replayed either: the rollups came from the snapshot
            self._dedupe.remember(call_key(record))

    def close(self, timeout: float = 30.0) -> None:
        """Drain pending work, snapshot, close the ledger. Safe to call twice."""
        if self._closed or not self.started:
            self._closed = True
            return
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self.history.stop()
        try:
            self.snapshot()
        except OSError:
            self.count("snapshot", error=True)
            logger.exception("final snapshot failed")
        self.ledger.close()
        self._closed = True

    @property
    def closing(self) -> bool:
        return self._closing or self._closed

    @property
    def pending_records(self) -> int:
        """Records queued and not yet taken by the writer."""
        return self._pending_records

    def has_room(self) -> bool:
        """Whether the ingest queue can take at least one more record right now."""
        return self._pending_records < self.config.max_pending_records

    # --- ingest -----------------------------------------------------------------------------------
    def submit(self, batch: PreparedBatch) -> Future[IngestResult]:
        """Queue ``batch``; the future resolves once it is durable. Raises QueueFullError."""
        future: Future[IngestResult] = Future()
        if not len(batch):
            future.set_result(IngestResult(0, 0, 0))
            return future
        with self._cond:
            if self._closing or not self.started:
                raise QueueFullError("store is not accepting records")
            if self._pending_records + len(batch) > self.config.max_pending_records:
                self.count("rejected_queue_full", len(batch))
                raise QueueFullError("ingest queue is full")
            self._pending.append((batch, future))
            self._pending_records += len(batch)
            self._cond.notify()
        return future

    def ingest(self, records: list[CallRecord], timeout: float = 30.0) -> IngestResult:
        """Prepare, submit and wait (for in-process use and tests)."""
        return self.submit(prepare(records)).result(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    remaining = self.config.snapshot_interval_s - (time.monotonic() - self._last_snapshot)
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                batches = list(self._pending)
                self._pending.clear()
                self._pending_records = 0
                closing = self._closing
            if batches:
                self._commit(batches)
            if time.monotonic() - self._last_snapshot >= self.config.snapshot_interval_s:
                self._periodic()
            if closing and not batches:
                return

    def _commit(self, batches: list[tuple[PreparedBatch, Future[IngestResult]]]) -> None:
        with self._commit_lock:
            self._commit_locked(batches)

    def _commit_locked(self, batches: list[tuple[PreparedBatch, Future[IngestResult]]]) -> None:
        """Group commit: dedupe every pending batch, one append + fsync, then merge the rollups."""
        results: list[IngestResult] = []
        lines: list[bytes] = []
        merges = []
        committed: list[tuple[PreparedBatch, list[int]]] = []
        pending = PendingCalls() if len(batches) > 1 else None
        self._dedupe.seen.roll(_arrival_hour(), self._dedupe_snapshots.directory)
        try:
            for batch, _ in batches:
                filtered = self._dedupe.filter(batch.keys, pending)
                groups = batch.groups
                if filtered.dropped:
                    groups = subtract_groups(groups, group_records(records_of(batch, filtered.dropped)))
                if len(filtered.kept) == len(batch):
                    lines.extend(batch.lines)
                else:
                    lines.extend(batch.lines[i] for i in filtered.kept)
                merges.append((groups, [batch.keys[i] for i in filtered.kept]))
                committed.append((batch, list(filtered.kept)))
                results.append(IngestResult(len(filtered.kept), filtered.duplicate_spans, filtered.duplicate_calls))
            if lines:
                self.ledger.append(lines)
        except Exception as exc:
            with self.lock:
                self.errors["ledger"] += 1
            logger.exception("ledger write failed; %d batch(es) answered with an error", len(batches))
            for _, future in batches:
                future.set_exception(exc)
            return
        with self.lock:
            for groups, kept in merges:
                for call in kept:
                    self._dedupe.remember(call)
                self.rollups.merge_groups(groups)
            self.counters["dedupe_evicted"] = self._dedupe.seen.evicted
            for result in results:
                self.counters["stored_records"] += result.stored
                self.counters["duplicate_spans"] += result.duplicate_spans
                self.counters["duplicate_calls"] += result.duplicate_calls
        if self._listeners or self._sum_listeners:
            self._notify(Committed(committed, self.ledger.position))
        for (_, future), result in zip(batches, results, strict=True):
            future.set_result(result)

    def add_commit_listener(self, listener: Callable[[list[CallRecord]], None]) -> None:
        """Call ``listener(records)`` on the writer thread with every newly stored batch of records,
        after they are durable and before the export is acknowledged (budgets settle, indexes grow).
        Not called for records replayed at start-up. A listener's error is logged, counted, survived."""
        self._listeners.append(listener)

    def add_sums_listener(self, listener: Callable[[Committed], None]) -> None:
        """Like :meth:`add_commit_listener`, but ``listener(committed)`` gets a :class:`Committed`:
        the calls summed by dimensions (cheap to fold), the records only if it asks for them."""
        self._sum_listeners.append(listener)

    # --- corrections (repricing) ------------------------------------------------------------------
    def add_correction_listener(self, listener: Callable[[list[Correction], Position], None]) -> None:
        """Call ``listener(corrections, end)`` once corrections are durable (``end``: the ledger
        position after them), with no append in between. Errors are logged, counted, survived."""
        self._correction_listeners.append(listener)

    def correct(self, corrections: list[Correction]) -> Position:
        """Append ``corrections`` to the ledger (after the records they correct), apply their cost
        deltas to the rollups and tell the correction listeners. Serialized with the writer's commits."""
        if not self.started or self.closing:
            raise QueueFullError("store is not accepting records")
        if not corrections:
            return self.ledger.position
        lines = [correction_line(c) for c in corrections]
        groups = correction_groups(corrections)
        marker = self.ledger.directory / MARKER
        if not marker.exists():
            marker.touch()
        with self._commit_lock:
            end = self.ledger.append(lines)
            with self.lock:
                self.rollups.merge_groups(groups)
                self.counters["repriced_records"] += len(corrections)
            for listener in self._correction_listeners:
                try:
                    listener(corrections, end)
                except Exception:
                    with self.lock:
                        self.errors["listener"] += 1
                    logger.exception("a correction listener failed; the corrections are stored")
        return end

    def commits_paused(self) -> AbstractContextManager[bool]:
        """While held, no group commit runs (nor its listeners): what the ledger holds then is exactly
        what the commit listeners have seen. Never take it on the writer thread (a listener)."""
        return self._commit_lock

    def _notify(self, committed: Committed) -> None:
        if not committed:
            return
        calls: list[Callable[[], None]] = [functools.partial(f, committed) for f in self._sum_listeners]
        if self._listeners:
            records = committed.records()
            calls += [functools.partial(f, records) for f in self._listeners]
        for call in calls:
            try:
                call()
            except Exception:
                with self.lock:
                    self.errors["listener"] += 1
                logger.exception("a commit listener failed; the records are stored")

    def _periodic(self) -> None:
        try:
            self.snapshot()
            if time.monotonic() - self._last_retention > 3600:
                self._apply_retention()
            self.history.poll(self.ledger.segments(), self.ledger.position.segment)
        except Exception:
            with self.lock:
                self.errors["snapshot"] += 1
            logger.exception("periodic snapshot or retention failed")
        self._last_snapshot = time.monotonic()

    # --- snapshots and retention ------------------------------------------------------------------
    def snapshot(self) -> Position:
        """Write a snapshot of the rollups and the ledger position they include."""
        with self._commit_lock, self.lock:  # only what changed since the last snapshot is encoded
            position = self.ledger.position
            data = self.rollups.encode()
            dedupe = self._dedupe.seen.snapshot_body(position)
        self.ledger.sync()
        # the dedupe window first: a rollup snapshot always finds its window (else start rebuilds it)
        self._dedupe_snapshots.save(position, dedupe)
        body = b'{"position":[%d,%d],"rollups":%s}' % (position.segment, position.offset, data)
        self.snapshots.save(position, body)
        self._snapshot_position = position
        self._last_snapshot = time.monotonic()
        return position

    def _apply_retention(self) -> None:
        now = time.time()
        self._last_retention = time.monotonic()
        keep = {
            "minute": self.config.minute_retention_days * _DAY_S,
            "hour": self.config.hour_retention_days * _DAY_S,
            "day": self.config.rollup_retention_days * _DAY_S,
        }
        with self.lock:
            self.rollups.prune(int(now), {g: keep[g] for g in GRANULARITIES})
        cutoff_ns = int((now - self.config.ledger_retention_days * _DAY_S) * 1e9)
        if self.ledger.drop_segments_before(cutoff_ns, self._snapshot_position):
            self.history.drop_before(set(self.ledger.segments()))

    # --- reading ----------------------------------------------------------------------------------
    def dedupe_window_size(self) -> int:
        """Span ids in the dedupe window now."""
        return len(self._dedupe.seen)

    def grand_total(self) -> Sums:
        with self.lock:
            return self.rollups.grand_total()

    def read_records(self) -> list[CallRecord]:
        """Every record in the ledger, each with its newest correction's cost (for tests,
        recomputation and the usage API's exports)."""
        reader = Ledger(self.ledger.directory, fsync="never")
        corrected = latest_corrections(reader.read()) if (reader.directory / MARKER).exists() else {}
        return list(current_records(reader.read(), corrected))
