"""The ledger: append-only segment files, one checksummed line per call record.

A line is ``<crc32 hex8> <key hex48> <start_ns> <record json>\\n``; the checksum covers everything after
its own field. The key and start time sit before the JSON so start-up can rebuild the dedupe set and
retention can date a segment without parsing records. A torn last line (a crash mid-write) is
detected at open, reported and cut off; a bad line elsewhere is reported and skipped.
"""

from __future__ import annotations

import logging
import os
import re
import time
import zlib
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Final, Literal, NamedTuple

from costspan.processor.store._files import private_dir, private_open

__all__ = ["KEY_MASK", "FsyncPolicy", "Ledger", "LedgerLine", "Position", "compact_int", "encode_line"]

logger = logging.getLogger(__name__)

FsyncPolicy = Literal["always", "never"]
_SEGMENT_RE: Final = re.compile(r"^segment-(\d{8})\.log$")
_READ_CHUNK: Final = 1 << 20
KEY_MASK: Final = (1 << 64) - 1
_MIX: Final = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9)


def compact_int(value: int) -> int:
    """The 64-bit dedupe key of a trace id + span id read as one int: its 64-bit thirds, each
    multiplied by its own odd constant, XORed (ids made of one counter do not cancel out)."""
    a, b, c = _MIX
    return ((value & KEY_MASK) * a ^ ((value >> 64) & KEY_MASK) * b ^ (value >> 128) * c) & KEY_MASK


class Position(NamedTuple):
    """A place in the ledger: segment number and byte offset within it (ordered as a tuple)."""

    segment: int
    offset: int


class LedgerLine(NamedTuple):
    """One valid line (named tuples: a replay or the usage index makes one per stored call)."""

    key: str
    start_ns: int
    payload: bytes  # the record's JSON
    end: Position  # the position just after this line


def encode_line(key: str, start_ns: int, payload: str) -> bytes:
    body = f"{key} {start_ns} {payload}".encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def _decode_line(line: bytes) -> tuple[str, int, bytes] | None:
    """``(key, start_ns, payload)`` of a complete line without its newline, or ``None`` if corrupt."""
    if len(line) < 10 or line[8:9] != b" ":
        return None
    body = line[9:]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        key, start, payload = body.split(b" ", 2)
        return key.decode("ascii"), int(start), payload
    except ValueError:
        return None


class Ledger:
    """Append-only, segment-rotated, durably written call records. Single writer; not thread-safe."""

    def __init__(
        self,
        directory: Path,
        *,
        fsync: FsyncPolicy = "always",
        segment_bytes: int = 64 * 1024 * 1024,
        segment_seconds: float = 3600.0,
    ) -> None:
        if segment_bytes < 1024:
            raise ValueError("segment_bytes must be at least 1024")
        if segment_seconds <= 0:
            raise ValueError("segment_seconds must be positive")
        #: a segment closes at ``segment_bytes`` or once it has been written to for this long, so the
        #: calls not yet in the columnar history (the open segment: see _history) stay few
        self.segment_seconds = segment_seconds
        self._opened = time.monotonic()
        self.directory = directory
        self.fsync_policy: FsyncPolicy = fsync
        self.segment_bytes = segment_bytes
        self.corrupt_lines = 0
        self.torn_tail_bytes = 0
        self._fd: int | None = None
        #: closed segment -> the newest start time of its records (closed segments never change)
        self._newest_start: dict[int, int] = {}
        self._segment = 0
        self._offset = 0

    # --- reading ------------------------------------------------------------------------------------
    def segments(self) -> list[int]:
        found = []
        for path in self.directory.glob("segment-*.log"):
            match = _SEGMENT_RE.match(path.name)
            if match:
                found.append(int(match.group(1)))
        return sorted(found)

    def _path(self, segment: int) -> Path:
        return self.directory / f"segment-{segment:08d}.log"

    def read(self, start: Position | None = None) -> Iterator[LedgerLine]:
        """Every valid line from ``start`` on (a corrupt line is counted and skipped)."""
        new = tuple.__new__
        for segment in self.segments():
            if start is not None and segment < start.segment:
                continue
            offset = start.offset if start is not None and segment == start.segment else 0
            with self._path(segment).open("rb") as fh:
                fh.seek(offset)
                tail = b""  # an incomplete line: completed by the next chunk, or left (still being written)
                while chunk := fh.read(_READ_CHUNK):
                    lines = (tail + chunk if tail else chunk).split(b"\n")
                    tail = lines.pop()
                    for raw in lines:
                        end = offset + len(raw) + 1
                        decoded = _decode_line(raw)
                        if decoded is not None:
                            # tuple.__new__: the named tuples' own __new__ is one more Python frame per line
                            yield new(LedgerLine, (*decoded, new(Position, (segment, end))))
                        else:
                            self.corrupt_lines += 1
                            logger.warning("ledger segment %d: corrupt line at offset %d skipped", segment, offset)
                        offset = end

    def scan_keys(self, until: Position, seen: set[int], window: deque[bytes]) -> tuple[int, int]:
        """Add the key (as a 64-bit int: :func:`compact_int`) of every valid line ending at or before
        ``until`` to ``seen``; the newest lines' record JSON goes to ``window`` (a bounded deque). Returns (lines added,
        duplicate lines skipped). :meth:`read` does this too, at several times the cost per line: a
        restart runs it over every line the snapshot already includes."""
        added = duplicates = 0
        tail: deque[bytes] = deque(maxlen=window.maxlen)
        crc = zlib.crc32
        for segment in self.segments():
            if segment > until.segment:
                break
            with self._path(segment).open("rb") as fh:
                data = fh.read(until.offset) if segment == until.segment else fh.read()
            offset = 0
            newest = 0
            for raw in data.split(b"\n")[:-1]:  # complete lines: ``until`` is a line's end
                view = memoryview(raw)
                try:
                    valid = raw[8] == 32 and int(raw[:8], 16) == crc(view[9:])
                except (ValueError, IndexError):
                    valid = False
                if not valid:
                    self.corrupt_lines += 1
                    logger.warning("ledger segment %d: corrupt line at offset %d skipped", segment, offset)
                else:
                    space = raw.index(b" ", 9)
                    key = int(raw[9:space], 16)
                    key = compact_int(key)
                    after_start = raw.index(b" ", space + 1)
                    start_ns = int(raw[space + 1 : after_start])
                    newest = max(newest, start_ns)
                    if raw[after_start + 1 : after_start + 2] == b"{":
                        pass  # a correction of a call stored before it (see _corrections): not a call
                    elif key in seen:
                        duplicates += 1
                    else:
                        seen.add(key)
                        tail.append(raw)
                        added += 1
                offset += len(raw) + 1
            if segment < until.segment:  # a closed segment, read whole: retention needs no second read
                self._newest_start[segment] = newest
        for raw in tail:
            window.append(raw.split(b" ", 3)[3])
        return added, duplicates

    def tail(self, until: Position, count: int) -> list[bytes]:
        """The record JSON of the last ``count`` valid call lines ending at or before ``until`` (oldest
        first): the segment of ``until`` is read up to it, and the ones before only while lines are missing."""
        found: list[bytes] = []
        for segment in reversed(self.segments()):
            if segment > until.segment:
                continue
            with self._path(segment).open("rb") as fh:
                data = fh.read(until.offset) if segment == until.segment else fh.read()
            lines = data.split(b"\n")[:-1]
            for raw in reversed(lines):
                decoded = _decode_line(raw)
                if decoded is None or decoded[2][:1] == b"{":
                    continue  # corrupt (counted by replay), or a correction (not a call)
                found.append(decoded[2])
                if len(found) >= count:
                    return found[::-1]
        return found[::-1]

    # --- writing ------------------------------------------------------------------------------------
    def open(self) -> None:
        """Prepare for appending: cut a torn tail off the last segment, or start the first one."""
        private_dir(self.directory)
        segments = self.segments()
        if not segments:
            self._start_segment(1)
            return
        last = segments[-1]
        path = self._path(last)
        good = self._last_good_offset(path)
        size = path.stat().st_size
        if good < size:
            self.torn_tail_bytes += size - good
            logger.warning("ledger segment %d: torn last record (%d bytes) found and cut off", last, size - good)
            with path.open("r+b") as fh:
                fh.truncate(good)
                os.fsync(fh.fileno())
        self._segment = last
        self._offset = good
        self._opened = time.monotonic()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)

    @staticmethod
    def _last_good_offset(path: Path) -> int:
        """Offset after the last complete, valid line; only a trailing run of bad lines is cut."""
        good = 0
        offset = 0
        with path.open("rb") as fh:
            for raw in fh:
                offset += len(raw)
                if raw.endswith(b"\n") and _decode_line(raw[:-1]) is not None:
                    good = offset
        return good

    def _start_segment(self, segment: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
        path = self._path(segment)
        self._fd = private_open(path, os.O_WRONLY | os.O_APPEND)
        self._segment = segment
        self._offset = 0
        self._opened = time.monotonic()
        self._sync_directory()

    def _sync_directory(self) -> None:
        if self.fsync_policy == "never":
            return
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @property
    def position(self) -> Position:
        return Position(self._segment, self._offset)

    def append(self, lines: list[bytes]) -> Position:
        """Write ``lines`` and make them durable per the fsync policy; returns the new end position."""
        if self._fd is None:
            raise RuntimeError("ledger is not open")
        if self._offset >= self.segment_bytes or (
            self._offset and time.monotonic() - self._opened >= self.segment_seconds
        ):
            self._start_segment(self._segment + 1)
        data = memoryview(b"".join(lines))
        while data:
            written = os.write(self._fd, data)
            data = data[written:]
            self._offset += written
        if self.fsync_policy == "always":
            os.fdatasync(self._fd)
        return self.position

    def sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None

    # --- retention ----------------------------------------------------------------------------------
    def drop_segments_before(self, cutoff_ns: int, keep_from: Position) -> list[int]:
        """Delete closed segments whose every record started before ``cutoff_ns``.

        ``keep_from`` (the newest snapshot's position) is never passed: replay needs what follows it.
        """
        dropped = []
        for segment in self.segments():
            if segment >= min(self._segment, keep_from.segment):
                break
            newest = self._newest_start.get(segment)
            if newest is None:
                newest = 0
                for line in self.read(Position(segment, 0)):
                    if line.end.segment != segment:
                        break
                    newest = max(newest, line.start_ns)
                self._newest_start[segment] = newest
            if newest < cutoff_ns:
                self._path(segment).unlink()
                self._newest_start.pop(segment, None)
                dropped.append(segment)
        if dropped:
            self._sync_directory()
            logger.info("ledger retention dropped %d segment(s)", len(dropped))
        return dropped
