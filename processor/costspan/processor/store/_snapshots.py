"""Snapshot and replay, once for the store's rollups and the usage index: :class:`Snapshots` and :func:`replay`.

A snapshot is derived state with the ledger position it includes, written atomically (temp file,
fsync, rename, fsync of the directory) under a header line ``{"format", "crc32"}``, named
``<prefix>-<segment>-<offset>.json``; the newest ``keep`` are kept. Loading takes the newest one
whose checksum, position and contents check out (a corrupt one is logged, counted and skipped: an
older one, or a full replay, takes its place). Then :func:`replay` reads the ledger after that
position and folds its records, 4,096 at a time, into the state.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import zlib
from collections.abc import Callable, Container
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

import orjson

from costspan.processor.store._corrections import Correction, correction_from_json, is_correction
from costspan.processor.store._files import private_dir, private_file
from costspan.processor.store._ledger import Ledger, Position
from costspan.processor.store._records import CallRecord, record_from_json

__all__ = [
    "SNAPSHOT_FORMAT",
    "Loaded",
    "Replayed",
    "Snapshots",
    "load_json",
    "read_checked",
    "replay",
    "snapshot_files",
    "write_checked",
]

logger = logging.getLogger(__name__)

#: The header's format number of every snapshot file.
SNAPSHOT_FORMAT: Final = 1
#: Records folded at a time by :func:`replay`.
REPLAY_CHUNK: Final = 4096
_UNUSABLE: Final = (OSError, ValueError, KeyError, TypeError, IndexError)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Loaded(Generic[T]):
    """The newest usable snapshot: the ledger position it includes, its file, what was made of it."""

    position: Position
    path: Path
    value: T
    seconds: float


class Snapshots:
    """The snapshots named ``<prefix>-<segment>-<offset>.json`` in ``directory``, newest first."""

    def __init__(self, directory: Path, prefix: str, *, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.directory = directory
        self.prefix = prefix
        self.keep = keep
        self.corrupt = 0  # snapshots found unusable by load
        self._name_re = re.compile(rf"^{re.escape(prefix)}-(\d{{8}})-(\d{{12}})\.json$")

    def existing(self) -> list[tuple[Position, Path]]:
        return snapshot_files(self.directory, self._name_re)

    def save(self, position: Position, body: bytes) -> Path:
        """Write ``body`` (a JSON object whose ``"position"`` is ``position``) atomically; older files
        beyond ``keep`` are removed."""
        private_dir(self.directory)
        name = f"{self.prefix}-{position.segment:08d}-{position.offset:012d}.json"
        final = write_checked(self.directory / name, SNAPSHOT_FORMAT, body)
        for _, path in self.existing()[self.keep :]:
            path.unlink(missing_ok=True)
        return final

    def load(
        self, use: Callable[[Position, dict[str, Any]], T], *, discard: Callable[[], None] | None = None
    ) -> Loaded[T] | None:
        """``use(position, body)`` of the newest snapshot that passes its checksum and whose body names
        the position of its file name. A snapshot ``use`` refuses (``ValueError``, ``KeyError``,
        ``TypeError``, ``IndexError``) is counted in :attr:`corrupt`, ``discard()`` undoes what it did,
        and the next older one is tried. None: no usable snapshot."""
        t0 = time.perf_counter()
        for position, path in self.existing():
            try:
                data = load_json(read_checked(path, SNAPSHOT_FORMAT))
                stored = data["position"]
                if Position(int(stored[0]), int(stored[1])) != position:
                    raise ValueError("position does not match the file name")
                value = use(position, data)
            except _UNUSABLE as exc:
                self.corrupt += 1
                logger.warning("snapshot %s is unusable (%s); trying an older one", path.name, exc)
                if discard is not None:
                    discard()
                continue
            return Loaded(position, path, value, time.perf_counter() - t0)
        return None


@dataclass(frozen=True, slots=True)
class Replayed:
    records: int  # folded
    duplicates: int  # skipped: their key was already seen
    unreadable: int  # skipped: their JSON is not a record
    end: Position | None  # just after the last line read (None: no line)


def replay(
    ledger: Ledger,
    after: Position | None,
    fold: Callable[[list[CallRecord]], None],
    *,
    seen: Container[int] | None = None,
    remember: Callable[[CallRecord], None] | None = None,
    limit: int | None = None,
    advance: Callable[[Position], None] | None = None,
    correct: Callable[[list[Correction]], None] | None = None,
) -> Replayed:
    """Fold the records of the ledger lines after ``after`` into ``fold``, :data:`REPLAY_CHUNK` at a time.

    ``seen``: keys (the line's hex key as an int) to skip as duplicates; ``remember(record)`` for each
    record read; at most ``limit`` records; ``advance(position)`` after each fold, with the position
    just after the lines read so far (so state and position move together). ``correct(corrections)``
    applies the correction lines (see :mod:`._corrections`), after every record before them is folded;
    without it they are skipped.
    """
    folded = duplicates = unreadable = 0
    chunk: list[CallRecord] = []
    corrections: list[Correction] = []  # consecutive correction lines, applied together
    end: Position | None = None
    for line in ledger.read(after):
        if limit is not None and folded >= limit:
            break
        if is_correction(line.payload):
            end = line.end
            if correct is None:
                continue
            try:
                correction = correction_from_json(line.payload)
            except (ValueError, KeyError, TypeError):
                unreadable += 1
                logger.warning("ledger correction at %s cannot be read; skipped", line.end)
                continue
            if chunk:  # the records before the corrections first
                fold(chunk)
                chunk = []
            corrections.append(correction)
            continue
        end = line.end
        if corrections and correct is not None:
            correct(corrections)
            corrections = []
        if seen is not None and int(line.key, 16) in seen:
            duplicates += 1  # written by a commit that failed after a partial write
            continue
        try:
            record = record_from_json(line.payload)
        except (ValueError, KeyError, TypeError) as exc:
            unreadable += 1
            if unreadable == 1:  # logged once per replay; the count follows at the end
                logger.warning("ledger record at %s cannot be read (%s); skipped", line.end, exc)
            continue
        if remember is not None:
            remember(record)
        chunk.append(record)
        folded += 1
        if len(chunk) >= REPLAY_CHUNK:
            fold(chunk)
            chunk = []
            if advance is not None:
                advance(end)
    if chunk:
        fold(chunk)
    if corrections and correct is not None:
        correct(corrections)
    if advance is not None and end is not None:
        advance(end)
    if unreadable > 1:
        logger.warning("%d ledger records could not be read and were skipped", unreadable)
    return Replayed(folded, duplicates, unreadable, end)


def write_checked(final: Path, file_format: int, body: bytes) -> Path:
    """Write ``body`` under a header line (format, CRC-32) atomically: temp file, fsync, rename, fsync
    of the directory. The directory must exist."""
    data = json.dumps({"format": file_format, "crc32": zlib.crc32(body)}).encode() + b"\n" + body
    temp = final.with_suffix(".tmp")
    with private_file(temp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temp, final)
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return final


def snapshot_files(directory: Path, name_re: re.Pattern[str]) -> list[tuple[Position, Path]]:
    """The snapshot files in ``directory`` (names matching ``name_re``: segment and offset as its two
    groups) with the ledger position each includes, newest first."""
    found = []
    if directory.is_dir():
        for path in directory.iterdir():
            match = name_re.match(path.name)
            if match:
                found.append((Position(int(match.group(1)), int(match.group(2))), path))
    return sorted(found, reverse=True)


def load_json(body: bytes) -> Any:
    """Parse a snapshot body: orjson (several times faster on the large ones), else the json module,
    which also takes what orjson refuses (an escaped lone surrogate in a tenant id).

    A number of 20 digits or more (beyond 64 bits: only an older version's unchecked token count
    summed) refuses the snapshot with ``ValueError``, so the sums are rebuilt from the ledger, whose
    replay skips the record; orjson would read such a number as a float. Found with one C-speed
    search for a number token (after ``[``, ``,``, ``:`` or a space) of 20 digits; a string that looks
    like one only sends the body to the json module.
    """
    digits = body.translate(_DIGITS_AS_ZERO)
    if not any(needle in digits for needle in _LONG_NUMBERS):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return json.loads(body, parse_int=_int64)


def _int64(text: str) -> int:
    value = int(text)
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"snapshot holds a number beyond 64 bits ({len(text)} digits)")
    return value


_DIGITS_AS_ZERO: Final = bytes.maketrans(b"-123456789", b"0000000000")
_LONG_NUMBERS: Final = tuple(lead + b"0" * 20 for lead in (b"[", b",", b":", b" "))


def read_checked(path: Path, file_format: int) -> bytes:
    """The body of a file :func:`write_checked` wrote; ``ValueError`` if its format or checksum is wrong."""
    raw = path.read_bytes()
    header_raw, body = raw.split(b"\n", 1)
    header = json.loads(header_raw)
    if not isinstance(header, dict) or header.get("format") != file_format or header.get("crc32") != zlib.crc32(body):
        raise ValueError("checksum or format mismatch")
    return body
