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

from costspan.processor.ledger import Position
from costspan.processor.rollups import Rollups

__all__ = ["Snapshot", "SnapshotStore"]

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
        found = []
        if self.directory.is_dir():
            for path in self.directory.iterdir():
                match = _NAME_RE.match(path.name)
                if match:
                    found.append((Position(int(match.group(1)), int(match.group(2))), path))
        return sorted(found, reverse=True)

    def save(self, position: Position, rollups_json: dict[str, Any]) -> Path:
        """Write a snapshot atomically; older ones beyond ``keep`` are removed."""
        self.directory.mkdir(parents=True, exist_ok=True)
        body = json.dumps(
            {"position": [position.segment, position.offset], "rollups": rollups_json}, separators=(",", ":")
        ).encode()
        data = json.dumps({"format": _FORMAT, "crc32": zlib.crc32(body)}).encode() + b"\n" + body
        final = self.directory / f"snapshot-{position.segment:08d}-{position.offset:012d}.json"
        temp = final.with_suffix(".tmp")
        with temp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, final)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        for _, path in self._existing()[self.keep :]:
            path.unlink(missing_ok=True)
        return final

    def load(self) -> Snapshot | None:
        """The newest snapshot that passes its checksum; corrupt ones are reported and skipped."""
        for position, path in self._existing():
            try:
                raw = path.read_bytes()
                header_raw, body = raw.split(b"\n", 1)
                header = json.loads(header_raw)
                if header.get("format") != _FORMAT or header.get("crc32") != zlib.crc32(body):
                    raise ValueError("checksum or format mismatch")
                data = json.loads(body)
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
