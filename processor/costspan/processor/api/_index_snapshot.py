"""Snapshots of the usage index with the ledger position they include, so a restart replays only the tail.

The store's pattern (:mod:`costspan.processor.store._snapshots`): a header line ``{"format", "crc32"}`` then
the JSON body; written to a temp file, fsynced, renamed, the directory fsynced; the newest ``keep``
are kept, named by their position. Loading takes the newest that passes its checksum and whose
position the ledger still reaches; a corrupt one is logged, counted and skipped (an older one, or
a full replay, takes its place).

A tenant-day's sums are encoded once and reused while the day does not change (past days rarely
do), so a periodic snapshot mostly re-encodes today.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from costspan.processor.api._index import TenantDay, UsageIndex
from costspan.processor.store._ledger import Position
from costspan.processor.store._snapshots import load_json, read_checked, snapshot_files, write_checked
from costspan.processor.store._sums import Agg, Series

__all__ = ["IndexSnapshots", "LoadResult"]

logger = logging.getLogger(__name__)

_NAME_RE: Final = re.compile(r"^index-(\d{8})-(\d{12})\.json$")
_FORMAT: Final = 1


def _aggs(d: dict[Any, Agg]) -> list[Any]:
    return [[k, a.to_json()] for k, a in d.items()]


def _day_json(td: TenantDay) -> dict[str, Any]:
    return {
        "total": td.total.to_json(),
        "calls": [[list(k), a.to_json()] for k, a in td.by_call.items()],
        "providers": _aggs(td.by_provider),
        "projects": [[list(k), a.to_json()] for k, a in td.by_project.items()],
        "sessions": _aggs(td.by_session),
        "session_total": td.sessions.to_json(),
        "services": sorted(td.services),
        "tenants": sorted(td.tenants),
    }


def _day_from(d: dict[str, Any]) -> TenantDay:
    td = TenantDay(total=Agg.from_json(d["total"]), sessions=Agg.from_json(d["session_total"]))
    td.by_call = {(k[0], k[1], k[2]): Agg.from_json(a) for k, a in d["calls"]}
    td.by_provider = {k: Agg.from_json(a) for k, a in d["providers"]}
    td.by_project = {(k[0], k[1]): Agg.from_json(a) for k, a in d["projects"]}
    td.by_session = {k: Agg.from_json(a) for k, a in d["sessions"]}
    td.services = set(d["services"])
    td.tenants = set(d["tenants"])
    return td


@dataclass(frozen=True, slots=True)
class LoadResult:
    position: Position | None  # None: no usable snapshot
    path: Path | None
    seconds: float


class IndexSnapshots:
    """Saves and loads :class:`UsageIndex` snapshots in ``directory``."""

    def __init__(self, directory: Path, *, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.directory = directory
        self.keep = keep
        self.corrupt = 0
        # what was last encoded, by key: (the value's stamp, its encoded row); see _encoded
        self._days: dict[tuple[Any, ...], tuple[Any, str]] = {}
        self._hours: dict[tuple[Any, ...], tuple[Any, str]] = {}
        self._series: dict[tuple[Any, ...], tuple[Any, str]] = {}

    def existing(self) -> list[tuple[Position, Path]]:
        return snapshot_files(self.directory, _NAME_RE)

    # --- saving -------------------------------------------------------------------------------------
    def _encode(self, index: UsageIndex) -> tuple[Position | None, bytes]:
        """The body, taken under the index's lock: what did not change since the last snapshot (a
        tenant's day, an hour, a user's or workflow's series) comes encoded from the cache, so the lock
        is held for little more than a walk over the keys."""
        dumps = json.dumps
        with index.lock:
            position = index.position
            days = self._encoded(
                self._days,
                ((who, day, td) for who, per in index.days.items() for day, td in per.items()),
                lambda td: td.total.requests,
                _day_json,
            )
            hours = self._encoded(
                self._hours,
                ((who, hour, by) for who, per in index.hours.items() for hour, by in per.items()),
                lambda by: sum(a.requests for a in by.values()),
                _aggs,
            )
            series = self._encoded(
                self._series,
                ((t, dim, n, s) for (t, dim), names in index.series.items() for n, s in names.items()),
                lambda s: (s.cum[-1].requests, len(s.days), s.days[0]) if s.days else None,
                lambda s: s.to_json(),
            )
            head: dict[str, Any] = {
                "position": None if position is None else [position.segment, position.offset],
                "records": index.records,
                "max_sessions_per_day": index.max_sessions_per_day,
            }
            session_last = {t: dict(s) for t, s in index.session_last.items()}
            multi = {t: dict(s) for t, s in index.multi_day.items()}
        head["session_last"] = session_last
        head["multi_day"] = multi
        text = dumps(head, separators=(",", ":"))
        body = f'{text[:-1]},"hours":[{hours}],"series":[{series}],"days":[{days}]}}'.encode()
        return position, body

    @staticmethod
    def _encoded(
        cache: dict[tuple[Any, ...], tuple[Any, str]],
        entries: Iterable[tuple[Any, ...]],
        stamp: Callable[[Any], Any],
        to_json: Callable[[Any], Any],
    ) -> str:
        """``entries`` (key parts..., value) as the JSON rows ``[key parts..., value's JSON]``, joined;
        a value whose ``stamp`` is unchanged since the last call is not encoded again. Keys gone from
        ``entries`` leave the cache."""
        dumps = json.dumps
        rows = []
        seen = set()
        for *key_parts, value in entries:
            key = tuple(key_parts)
            seen.add(key)
            now = stamp(value)
            cached = cache.get(key)
            if cached is None or cached[0] != now:
                row = dumps([*key_parts, to_json(value)], separators=(",", ":"))
                cached = cache[key] = (now, row)
            rows.append(cached[1])
        for key in [k for k in cache if k not in seen]:
            del cache[key]
        return ",".join(rows)

    def save(self, index: UsageIndex) -> Path | None:
        """Write a snapshot atomically (None when the index has no ledger position yet)."""
        position, body = self._encode(index)
        if position is None:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        final = write_checked(
            self.directory / f"index-{position.segment:08d}-{position.offset:012d}.json", _FORMAT, body
        )
        for _, path in self.existing()[self.keep :]:
            path.unlink(missing_ok=True)
        return final

    # --- loading ------------------------------------------------------------------------------------
    def load(self, index: UsageIndex) -> LoadResult:
        """Fill an empty ``index`` from the newest valid snapshot; its position tells where replay starts."""
        t0 = time.perf_counter()
        for position, path in self.existing():
            try:
                data = load_json(read_checked(path, _FORMAT))
                stored = data["position"]
                if Position(int(stored[0]), int(stored[1])) != position:
                    raise ValueError("position does not match the file name")
                self._check_reachable(index, position)
                self._fill(index, data)
            except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
                self.corrupt += 1
                logger.warning("usage index snapshot %s is unusable (%s); trying an older one", path.name, exc)
                _clear(index)
                continue
            index.position = position
            return LoadResult(position, path, time.perf_counter() - t0)
        return LoadResult(None, None, time.perf_counter() - t0)

    @staticmethod
    def _check_reachable(index: UsageIndex, position: Position) -> None:
        """A snapshot ahead of the ledger (the ledger lost its tail) cannot be used."""
        if index.ledger_dir is None:
            return
        segment = index.ledger_dir / f"segment-{position.segment:08d}.log"
        if segment.exists() and segment.stat().st_size < position.offset:
            raise ValueError("the ledger ends before the snapshot's position")

    @staticmethod
    def _fill(index: UsageIndex, data: dict[str, Any]) -> None:
        with index.lock:
            index.records = int(data["records"])
            for who, day, d in data["days"]:
                index.days.setdefault(who, {})[int(day)] = _day_from(d)
            for who, hour, by in data["hours"]:
                index.hours.setdefault(who, {})[int(hour)] = {k: Agg.from_json(a) for k, a in by}
            for row in data["series"]:
                if len(row) == 4:  # one name's series
                    tenant, dim, name, d = row
                    index.series.setdefault((tenant, dim), {})[name] = Series.from_json(d)
                else:  # a tenant's names together (snapshots written before 26 Nov 2026)
                    tenant, dim, names = row
                    index.series.setdefault((tenant, dim), {}).update((n, Series.from_json(d)) for n, d in names)
            index.session_last = {t: {n: int(d) for n, d in s.items()} for t, s in data["session_last"].items()}
            index.multi_day = {t: {n: int(d) for n, d in s.items()} for t, s in data["multi_day"].items()}
            index.rebuild_views()


def _clear(index: UsageIndex) -> None:
    with index.lock:
        index.days.clear()
        index.hours.clear()
        index.series.clear()
        index.session_last.clear()
        index.multi_day.clear()
        index.records = 0
        index.rebuild_views()
