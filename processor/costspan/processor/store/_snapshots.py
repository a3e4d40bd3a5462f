"""Atomic snapshots of the rollups with the ledger position they include (temp file, fsync, rename)."""

from __future__ import annotations

import json
import logging
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from costspan.processor.store._ledger import Position
from costspan.processor.store._rollups import Rollups

__all__ = ["Snapshot", "SnapshotStore", "read_checked", "write_checked"]

logger = logging.getLogger(__name__)

_NAME_RE: Final = re.compile(r"^snapshot-(\d{8})-(\d{12})\.json$")
_FORMAT: Final = 1


@dataclass(frozen=True, slots=True)
class Snapshot:
    position: Position
    rollups: Rollups


class SnapshotStore:
    """Keeps the newest ``keep`` snapshots in ``directory``; loads the newest valid one."""

    def __init__(self, directory: Path, *, keep: int = 2, max_series: int = 10_000) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.directory = directory
        self.keep = keep
        self.max_series = max_series
        self.corrupt = 0

    def _existing(self) -> list[tuple[Position, Path]]:
        return snapshot_files(self.directory, _NAME_RE)

    def save(self, position: Position, rollups_json: dict[str, Any]) -> Path:
        """Write a snapshot atomically; older ones beyond ``keep`` are removed."""
        self.directory.mkdir(parents=True, exist_ok=True)
        body = json.dumps(
            {"position": [position.segment, position.offset], "rollups": rollups_json}, separators=(",", ":")
        ).encode()
        final = write_checked(
            self.directory / f"snapshot-{position.segment:08d}-{position.offset:012d}.json", _FORMAT, body
        )
        for _, path in self._existing()[self.keep :]:
            path.unlink(missing_ok=True)
        return final

    def load(self) -> Snapshot | None:
        """The newest snapshot that passes its checksum; corrupt ones are reported and skipped."""
        for position, path in self._existing():
            try:
                data = load_json(read_checked(path, _FORMAT))
                stored = Position(int(data["position"][0]), int(data["position"][1]))
                if stored != position:
                    raise ValueError("position does not match the file name")
                rollups = Rollups.from_json(data["rollups"], max_series=self.max_series)
            except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
                self.corrupt += 1
                logger.warning("snapshot %s is corrupt (%s); trying an older one", path.name, exc)
                continue
            return Snapshot(position, rollups)
        return None


def write_checked(final: Path, file_format: int, body: bytes) -> Path:
    """Write ``body`` under a header line (format, CRC-32) atomically: temp file, fsync, rename, fsync
    of the directory. The directory must exist."""
    data = json.dumps({"format": file_format, "crc32": zlib.crc32(body)}).encode() + b"\n" + body
    temp = final.with_suffix(".tmp")
    with temp.open("wb") as fh:
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
    which also takes what orjson refuses (an escaped lone surrogate in a tenant id)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


def read_checked(path: Path, file_format: int) -> bytes:
    """The body of a file :func:`write_checked` wrote; ``ValueError`` if its format or checksum is wrong."""
    raw = path.read_bytes()
    header_raw, body = raw.split(b"\n", 1)
    header = json.loads(header_raw)
    if not isinstance(header, dict) or header.get("format") != file_format or header.get("crc32") != zlib.crc32(body):
        raise ValueError("checksum or format mismatch")
    return body
