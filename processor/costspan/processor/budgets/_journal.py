"""Durable budget state: an append-only JSON-lines journal, atomic snapshots, replay; an audit log.

Every line is written with one ``os.write`` on an ``O_APPEND`` descriptor, so a line handed to the
OS survives ``kill -9``; ``fsync`` decides what survives a power loss (``always``, ``interval``
seconds, or ``never``). Lines carry the state's sequence number: a snapshot records the sequence it
includes, and replay skips what the snapshot already holds, so a crash between the snapshot's rename
and the journal's truncation double-counts nothing. A torn last line is cut off and logged.

:class:`JournaledState` is the one writer of a book's state: every change is an event it journals
(when there is a data directory) and then applies, the same way replay applies it.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from costspan.processor.budgets._model import Budget
from costspan.processor.budgets._periods import window
from costspan.processor.budgets._state import (
    BudgetState,
    Counter,
    Reservation,
    budget_from_json,
    decode_event,
    encode_event,
)
from costspan.processor.budgets._units import from_units, to_units
from costspan.processor.store._files import private_dir, private_file, private_open

__all__ = ["AuditLog", "FsyncPolicy", "Journal", "JournaledState"]

logger = logging.getLogger(__name__)

FsyncPolicy = Literal["always", "interval", "never"]
_DUMP = json.JSONEncoder(separators=(",", ":")).encode


@functools.lru_cache(maxsize=65536)
def _quoted(value: str | tuple[str | None, ...]) -> str:
    """JSON of a counter key or a call's dimensions (they repeat: encoded once)."""
    return _DUMP(list(value) if isinstance(value, tuple) else value)


JOURNAL = "budgets.journal.jsonl"
SNAPSHOT = "budgets.snapshot.json"
AUDIT = "budgets.audit.jsonl"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _inf(value: float) -> float | str:
    return "inf" if math.isinf(value) else value


class Journal:
    """The budget journal and snapshot in ``directory``."""

    def __init__(
        self, directory: str | os.PathLike[str], *, fsync: FsyncPolicy = "interval", fsync_interval: float = 1.0
    ) -> None:
        if fsync not in ("always", "interval", "never"):
            raise ValueError(f"fsync must be 'always', 'interval' or 'never', got {fsync!r}")
        if fsync_interval <= 0:
            raise ValueError("fsync_interval must be positive")
        self.directory = Path(directory)
        private_dir(self.directory)
        self._fsync = fsync
        self._interval = fsync_interval
        self._last_sync = time.monotonic()
        self._path = self.directory / JOURNAL
        self._fd: int | None = None

    # --- writing ------------------------------------------------------------------------------------
    def _open(self) -> int:
        if self._fd is None:
            self._fd = private_open(self._path, os.O_WRONLY | os.O_APPEND)
        return self._fd

    def append(self, seq: int, event: list[Any]) -> None:
        if event[0] == "r":  # the hot event, by hand; the same JSON as json.dumps (ids are [0-9a-z_-])
            _, rid, at, expires, match, items = event
            amounts = ",".join(f'[{_quoted(key)},"{amount!s}"]' for key, amount in items)
            line = f'[{seq},"r","{rid}",{at!r},{expires!r},{_quoted(match)},[{amounts}]]\n'
        elif event[0] == "s":
            amounts = ",".join(f'[{_quoted(key)},"{amount!s}"]' for key, amount in event[2])
            at = event[3] if len(event) > 3 else ...  # the call's start (None: unknown); absent in old events
            tail = "" if at is ... else f",{at!r}" if type(at) is float else "," + json.dumps(at)
            line = f'[{seq},"s","{event[1]}",[{amounts}]{tail}]\n'
        else:
            line = json.dumps([seq, *encode_event(event)], separators=(",", ":")) + "\n"
        fd = self._open()
        os.write(fd, line.encode())
        if self._fsync == "always":
            os.fsync(fd)
        elif self._fsync == "interval":
            now = time.monotonic()
            if now - self._last_sync >= self._interval:
                os.fsync(fd)
                self._last_sync = now

    def sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = None

    def snapshot(self, state: BudgetState) -> None:
        """Write ``state`` atomically (temp, fsync, rename), then empty the journal it includes."""
        data = {
            "version": 1,
            "seq": state.seq,
            "written_at": datetime.now(UTC).isoformat(),
            "budgets": [b.to_json() for b in state.budgets.values()],
            "counters": [
                {
                    "key": c.key,
                    "budget_id": c.budget.id,
                    "values": list(c.values),
                    "start": _inf(c.start),
                    "end": _inf(c.end),
                    "spent": str(c.spent),
                    "reserved": str(c.reserved),
                    "fired": sorted(c.fired),
                }
                for c in state.counters.values()
            ],
            "reservations": [
                {
                    "rid": r.rid,
                    "at": r.at,
                    "expires": r.expires,
                    "match": list(r.match),
                    "items": [[k, str(a)] for k, a in state.held_amounts(r)],
                }
                for r in state.reservations.values()
            ],
        }
        tmp = self.directory / (SNAPSHOT + ".tmp")
        with private_file(tmp, "w") as fh:
            json.dump(data, fh, separators=(",", ":"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.directory / SNAPSHOT)
        _fsync_dir(self.directory)
        fd = self._open()
        os.ftruncate(fd, 0)
        os.fsync(fd)

    # --- reading ------------------------------------------------------------------------------------
    def load(self) -> BudgetState:
        """The newest snapshot plus the journal after it."""
        state = BudgetState()
        snap = self.directory / SNAPSHOT
        if snap.exists():
            _load_snapshot(state, json.loads(snap.read_text(encoding="utf-8")))
        if not self._path.exists():
            return state
        raw = self._path.read_bytes()
        good = 0
        replayed = 0
        for line in raw.splitlines(keepends=True):
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("torn line")
                seq, *body = json.loads(line)
                event = decode_event(body)
            except (ValueError, TypeError, KeyError) as exc:
                if good + len(line) < len(raw):
                    raise ValueError(f"budget journal {self._path} is corrupt at byte {good}: {exc}") from None
                logger.warning("budget journal: dropping a torn last line (%d bytes)", len(line))
                break
            good += len(line)
            if seq <= state.seq:
                continue
            if seq != state.seq + 1:
                logger.warning("budget journal: sequence jumps from %d to %d", state.seq, seq)
            state.apply(event)
            state.seq = seq
            replayed += 1
        if good < len(raw):
            with open(self._path, "r+b") as fh:
                fh.truncate(good)
        logger.info("budget state loaded: seq %d, %d journal events replayed", state.seq, replayed)
        return state


def _load_snapshot(state: BudgetState, data: dict[str, Any]) -> None:
    for b in data["budgets"]:
        budget = budget_from_json(b)
        state.budgets[budget.id] = budget
    for c in data["counters"]:
        owner = state.budgets.get(c["budget_id"])
        if owner is None:
            continue
        state.counters[c["key"]] = Counter(
            key=c["key"],
            budget=owner,
            values=tuple(c["values"]),
            start=float(c["start"]),
            end=float(c["end"]),
            spent=Decimal(c["spent"]),
            held=to_units(Decimal(c["reserved"]), owner.unit),
            fired=set(c["fired"]),
        )
    counters = state.counters
    for r in data["reservations"]:
        items = [(k, to_units(Decimal(a), counters[k].budget.unit)) for k, a in r["items"] if k in counters]
        res = Reservation(r["rid"], float(r["at"]), float(r["expires"]), tuple(r["match"]), items)
        state.reservations[res.rid] = res
        state.by_match.setdefault(res.match, deque()).append(res.rid)
    state.seq = int(data["seq"])


class AuditLog:
    """Who changed which budget, when, from what to what. One fsynced JSON line per change."""

    def __init__(self, path: str | os.PathLike[str] | None, *, clock: Callable[[], float] = time.time) -> None:
        self._path = Path(path) if path is not None else None
        self._clock = clock
        self._memory: list[dict[str, Any]] = []

    def write(self, actor: str, action: str, budget_id: str, before: Any, after: Any) -> dict[str, Any]:
        entry = {
            "at": datetime.fromtimestamp(self._clock(), UTC).isoformat(),
            "actor": actor,
            "action": action,
            "budget_id": budget_id,
            "before": before,
            "after": after,
        }
        if self._path is None:
            self._memory.append(entry)
            return entry
        with private_file(self._path, "a") as fh:
            fh.write(json.dumps(entry, separators=(",", ":")) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return entry

    def entries(self, budget_id: str | None = None) -> list[dict[str, Any]]:
        if self._path is None:
            rows = list(self._memory)
        elif not self._path.exists():
            rows = []
        else:
            rows = []
            for line in self._path.read_text(encoding="utf-8").splitlines():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    logger.warning("audit log: skipping an unreadable line")
        return [r for r in rows if budget_id is None or r.get("budget_id") == budget_id]


class JournaledState:
    """A book's :class:`BudgetState` and its journal: every change is one event, journaled first
    (with a data directory), then applied. Without ``data_dir`` the state lives in memory only.

    Not thread-safe: the book holds its lock around every call.
    """

    __slots__ = ("_snapshot_every", "_snapshot_seq", "journal", "reserve", "state")

    def __init__(self, data_dir: str | Path | None, *, fsync: FsyncPolicy, snapshot_every: int) -> None:
        self.journal = Journal(data_dir, fsync=fsync) if data_dir is not None else None
        self.state = self.journal.load() if self.journal is not None else BudgetState()
        self._snapshot_every = snapshot_every
        self._snapshot_seq = self.state.seq
        #: Commit the check's ``["r", rid, at, expires, dims, items]`` for holds already added to their
        #: counters (``items``: counter key, whole units). Without a journal it is the state's own
        #: :meth:`~BudgetState.take` (no call in between: the check's hot path). If the journal write
        #: raises, nothing is registered: the caller takes its holds back off the counters.
        self.reserve: Callable[[str, float, float, tuple[str | None, ...], list[tuple[str, int]]], None] = (
            self.state.take if self.journal is None else self._journal_and_take
        )

    def commit(self, event: list[Any]) -> None:
        """Journal ``event`` as the next sequence number, then apply it."""
        if self.journal is not None:
            self.journal.append(self.state.seq + 1, event)
        self.state.apply(event)

    def _journal_and_take(
        self, rid: str, at: float, expires: float, dims: tuple[str | None, ...], items: list[tuple[str, int]]
    ) -> None:
        state = self.state
        assert self.journal is not None
        counters = state.counters  # the counters were just held on: every key is there
        amounts = [(key, from_units(n, counters[key].budget.unit)) for key, n in items]
        self.journal.append(state.seq + 1, ["r", rid, at, expires, dims, amounts])
        state.take(rid, at, expires, dims, items)

    def roll(self, budget: Budget, key: str, values: tuple[str, ...], now: float) -> Counter:
        """Open the counter ``key`` of ``budget``, or roll it, to the period containing ``now``."""
        start, end = window(budget.period, now, budget.timezone)
        self.commit(["o", key, budget.id, values, start, end])
        return self.state.counters[key]

    def snapshot(self) -> None:
        """Write a snapshot now (no-op without a data directory)."""
        if self.journal is not None:
            self.journal.snapshot(self.state)
            self._snapshot_seq = self.state.seq

    def snapshot_if_due(self) -> None:
        """Snapshot once ``snapshot_every`` events have been journaled since the last one."""
        if self.journal is not None and self.state.seq - self._snapshot_seq >= self._snapshot_every:
            self.snapshot()

    def close(self) -> None:
        """Snapshot and close the journal."""
        self.snapshot()
        if self.journal is not None:
            self.journal.close()
