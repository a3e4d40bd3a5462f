"""The dedupe window: the span ids stored in the last N hours of arrival, as compact 64-bit keys.

An exporter retries a failed export for minutes (the OTLP exporters' backoff tops out well under an
hour), so a span id only has to be remembered for the retry window, not forever. The window holds
one bucket per hour of *arrival* (the hour the writer stored the call, not the call's start time):
every key in one set for the membership test, and each bucket's keys again in an ``array('q')``
(8 bytes a key) so the oldest hour is evicted with one C-speed ``difference_update``.

A key is the trace id + span id (hex) mixed to 64 bits (:func:`compact_int`): ~75 bytes an id in
the window (a 36-byte int, its set slot, 8 bytes in its hour's array) against ~85 for the 192-bit
int kept before. Two different spans share a key with probability ~n²/2⁶⁵ (n the keys in the window).

Persistence, incremental: a bucket is written once, when its hour is over, to
``<dir>/dedupe-hour-<hour>.keys`` (immutable); each snapshot (``dedupe-<segment>-<offset>.json``, at
the rollup snapshot's ledger position) names the closed hours it relies on and holds the open
bucket's keys. Start-up loads them instead of reading every ledger line.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from array import array
from collections.abc import Container
from pathlib import Path
from typing import Final

from costspan.processor.store._files import private_dir
from costspan.processor.store._ledger import KEY_MASK, Position, compact_int
from costspan.processor.store._snapshots import SNAPSHOT_FORMAT, Snapshots, load_json, read_checked, write_checked

__all__ = ["KEY_MASK", "DedupeWindow", "compact_int", "compact_key"]

logger = logging.getLogger(__name__)

_HOUR_FORMAT: Final = 1
_HOUR_RE: Final = re.compile(r"^dedupe-hour-(\d+)\.keys$")


def compact_key(key: str) -> int:
    """The 64-bit key of a hex trace id + span id."""
    return compact_int(int(key, 16))


class DedupeWindow:
    """The keys of the last ``hours`` hours of arrival. Not thread-safe: the store's writer owns it.

    ``hours=0`` keeps every key forever (the behaviour before the window: memory grows with calls).
    """

    def __init__(self, hours: int = 6) -> None:
        if hours < 0:
            raise ValueError("dedupe window hours must be 0 (unbounded) or more")
        self.hours = hours
        self.keys: set[int] = set()
        self._buckets: dict[int, array[int]] = {}  # arrival hour -> its keys
        self._written: set[int] = set()  # closed hours whose file exists
        self._hour = -1  # the open bucket's hour
        self._open: array[int] = array("Q")
        self.evicted = 0  # keys dropped from the window (counter)

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: int) -> bool:
        """``key``: a compact key."""
        return key in self.keys

    def contains_full(self, value: int) -> bool:
        """Whether the full trace id + span id ``value`` (an int) is in the window."""
        return compact_int(value) in self.keys

    def full_keys(self) -> Container[int]:
        """The window as a container of full trace id + span id ints (what a ledger replay tests)."""
        return _FullKeys(self.keys)

    def add(self, key: int) -> None:
        if key not in self.keys:
            self.keys.add(key)
            self._open.append(key)

    def roll(self, hour: int, directory: Path | None = None) -> None:
        """Make ``hour`` the open bucket (the previous one closes: written to ``directory``), evict old hours."""
        if hour == self._hour:
            return
        if self._hour >= 0 and self._open:
            self._buckets[self._hour] = self._open
            if directory is not None:
                self._write_hour(directory, self._hour, self._open)
        self._hour = hour
        self._open = self._buckets.pop(hour) if hour in self._buckets else array("Q")
        if self.hours:
            self._evict(hour - self.hours + 1, directory)

    def _evict(self, first_kept: int, directory: Path | None) -> None:
        old = [h for h in self._buckets if h < first_kept]
        for h in old:
            bucket = self._buckets.pop(h)
            self.keys.difference_update(bucket)
            self.evicted += len(bucket)
        if directory is not None and directory.is_dir():
            # one hour of slack: the older of the two kept snapshots may still name it
            for path in directory.iterdir():
                match = _HOUR_RE.match(path.name)
                if match and int(match.group(1)) < first_kept - 1:
                    path.unlink(missing_ok=True)
                    self._written.discard(int(match.group(1)))

    def _write_hour(self, directory: Path, hour: int, keys: array[int]) -> None:
        private_dir(directory)
        write_checked(directory / f"dedupe-hour-{hour}.keys", _HOUR_FORMAT, keys.tobytes())
        self._written.add(hour)

    # --- snapshots ----------------------------------------------------------------------------------
    def snapshot_body(self, position: Position) -> bytes:
        """The snapshot at ``position``: closed hours by name (their files are written), the rest inline."""
        inline = {str(self._hour): self._open} if self._open else {}
        for hour, bucket in self._buckets.items():
            if hour not in self._written:
                inline[str(hour)] = bucket
        body = {
            "position": [position.segment, position.offset],
            "window_hours": self.hours,
            "open_hour": self._hour,
            "closed": sorted(h for h in self._buckets if h in self._written),
            "inline": {h: base64.b64encode(b.tobytes()).decode("ascii") for h, b in inline.items()},
        }
        return json.dumps(body, separators=(",", ":")).encode()

    def save(self, snapshots: Snapshots, position: Position) -> None:
        snapshots.save(position, self.snapshot_body(position))

    def load(self, snapshots: Snapshots, position: Position, now_hour: int) -> bool:
        """Restore the window of the snapshot at exactly ``position``; False (and empty) if there is none
        usable: the caller then rebuilds it from the ledger."""
        path = next((p for found, p in snapshots.existing() if found == position), None)
        if path is None:
            return False
        try:
            data = load_json(read_checked(path, SNAPSHOT_FORMAT))
            stored = data["position"]
            if Position(int(stored[0]), int(stored[1])) != position:
                raise ValueError("position does not match the file name")
            closed = [int(h) for h in data["closed"]]
            buckets: dict[int, array[int]] = {}
            for hour in closed:
                buckets[hour] = _keys(read_checked(snapshots.directory / f"dedupe-hour-{hour}.keys", _HOUR_FORMAT))
            for hour, text in data["inline"].items():
                buckets[int(hour)] = _keys(base64.b64decode(text))
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            snapshots.corrupt += 1
            logger.warning("dedupe snapshot %s is unusable (%s); the window is rebuilt from the ledger", path.name, exc)
            return False
        self._buckets = buckets
        self._written = set(closed)
        for bucket in buckets.values():
            self.keys.update(bucket)
        # the newest bucket is open again (appended to if the server restarts within its hour)
        if buckets:
            self._hour = max(buckets)
            self._open = self._buckets.pop(self._hour)
            self._written.discard(self._hour)
        self.roll(now_hour, snapshots.directory)
        return True


class _FullKeys:
    __slots__ = ("_keys",)

    def __init__(self, keys: set[int]) -> None:
        self._keys = keys

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int) and compact_int(value) in self._keys


def _keys(raw: bytes) -> array[int]:
    keys = array("Q")
    if len(raw) % keys.itemsize:
        raise ValueError("dedupe keys are not whole 8-byte ints")
    keys.frombytes(raw)
    return keys
