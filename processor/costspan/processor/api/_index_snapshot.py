"""Snapshots of the usage index with the ledger position they include, so a restart replays only the tail.

Written and loaded by the store's :class:`~costspan.processor.store._snapshots.Snapshots` (checked,
atomic, the newest ``keep`` kept, named by their position); loading also asks that the ledger still
reaches the position. A corrupt one is logged, counted and skipped (an older one, or a full replay,
takes its place); :meth:`UsageIndex.catch_up` replays the ledger after it.

A tenant-day's sums are encoded once and reused while the day does not change (past days rarely
do), so a periodic snapshot mostly re-encodes today.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from costspan.processor.api._index import TenantDay, UsageIndex
from costspan.processor.store._ledger import Position
from costspan.processor.store._series import Series
from costspan.processor.store._snapshots import Snapshots
from costspan.processor.store._sums import Sums

__all__ = ["IndexSnapshots", "LoadResult"]

logger = logging.getLogger(__name__)


def _aggs(d: dict[Any, Sums]) -> list[Any]:
    return [[k, a.to_json()] for k, a in d.items()]


def _day_json(td: TenantDay) -> dict[str, Any]:
    return {
        "total": td.total.to_json(),
        "calls": [[list(k), a.to_json()] for k, a in td.by_call.items()],
        "providers": _aggs(td.by_provider),
        "projects": [[list(k), a.to_json()] for k, a in td.by_project.items()],
        "sessions": _aggs(td.by_session),
        "session_total": td.sessions.to_json(),
        "aged_sessions": td.aged_sessions,
        "services": sorted(td.services),
        "tenants": sorted(td.tenants),
    }


def _day_from(d: dict[str, Any]) -> TenantDay:
    td = TenantDay(total=Sums.from_json(d["total"]), sessions=Sums.from_json(d["session_total"]))
    td.by_call = {(k[0], k[1], k[2]): Sums.from_json(a) for k, a in d["calls"]}
    td.by_provider = {k: Sums.from_json(a) for k, a in d["providers"]}
    td.by_project = {(k[0], k[1]): Sums.from_json(a) for k, a in d["projects"]}
    td.by_session = {k: Sums.from_json(a) for k, a in d["sessions"]}
    td.aged_sessions = int(d.get("aged_sessions", 0))
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
        self.files = Snapshots(directory, "index", keep=keep)
        # what was last encoded, by key: (the value's stamp, its encoded row); see _encoded
        self._days: dict[tuple[Any, ...], tuple[Any, str]] = {}
        self._hours: dict[tuple[Any, ...], tuple[Any, str]] = {}
        self._series: dict[tuple[Any, ...], tuple[Any, str]] = {}

    @property
    def corrupt(self) -> int:
        """Snapshots found unusable."""
        return self.files.corrupt

    def existing(self) -> list[tuple[Position, Path]]:
        return self.files.existing()

    # --- saving -------------------------------------------------------------------------------------
    def _encode(self, index: UsageIndex) -> tuple[Position | None, bytes]:
        """The body, taken under the index's lock: what did not change since the last snapshot (a
        tenant's day, an hour, a user's or workflow's series) comes encoded from the cache, so the lock
        is held for little more than a walk over the keys."""
        dumps = json.dumps
        with index.read():
            position = index.position
            days = self._encoded(
                self._days,
                ((who, day, td) for who, per in index.days.items() for day, td in per.items()),
                lambda td: (td.total.calls, td.total.cost, td.aged_sessions),  # a reprice changes the cost only
                _day_json,
            )
            hours = self._encoded(
                self._hours,
                ((who, hour, by) for who, per in index.hours.items() for hour, by in per.items()),
                lambda by: (sum(a.calls for a in by.values()), sum(a.cost for a in by.values())),
                _aggs,
            )
            series = self._encoded(
                self._series,
                ((t, dim, n, s) for (t, dim), names in index.series.items() for n, s in names.items()),
                lambda s: (s.cum[-1].calls, s.cum[-1].cost, len(s.days), s.days[0]) if s.days else None,
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
        return self.files.save(position, body)

    # --- loading ------------------------------------------------------------------------------------
    def load(self, index: UsageIndex) -> LoadResult:
        """Fill an empty ``index`` from the newest valid snapshot; its position tells where replay starts."""

        def use(position: Position, data: dict[str, Any]) -> None:
            self._check_reachable(index, position)
            self._fill(index, data)
            index.position = position

        loaded = self.files.load(use, discard=lambda: _clear(index))
        if loaded is None:
            return LoadResult(None, None, 0.0)
        return LoadResult(loaded.position, loaded.path, loaded.seconds)

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
        with index.write():
            index.records = int(data["records"])
            for who, day, d in data["days"]:
                index.days.setdefault(who, {})[int(day)] = _day_from(d)
            for who, hour, by in data["hours"]:
                index.hours.setdefault(who, {})[int(hour)] = {k: Sums.from_json(a) for k, a in by}
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
    with index.write():
        index.days.clear()
        index.hours.clear()
        index.series.clear()
        index.session_last.clear()
        index.multi_day.clear()
        index.records = 0
        index.rebuild_views()
