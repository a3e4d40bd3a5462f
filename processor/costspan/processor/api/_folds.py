"""Sums over a window of days (or hours) with the settled part memoized: a query merges only the newest.

A route's window is mostly days that no longer change: calls arrive for the newest day (or hour),
rarely for an older one. :func:`fold_days` merges a per-day dict of sums (``by_call``,
``by_provider``, ``by_project``) over a window: the days before the newest are merged once and
memoized; each query copies that and merges the newest day on top. :func:`hour_views` memoizes
what a route shows of each hour (its JSON row), and the rows of the days before the newest.

A memo is used only while its *stamp* still matches: the index's ``generation`` (bumped by pruning
and snapshot loads), how many days it covers and the sum of their calls. Every call added to a
day adds to that day's ``total.calls`` (sums never shrink except by pruning), so any change
to a memoized day, a late call included, changes the stamp and the sums are merged afresh.
Everything here runs under the index's lock; the memos are bounded (least recently used first out).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Final, NamedTuple, TypeVar

from costspan.processor.api._index import DAY_S, TenantDay, UsageIndex
from costspan.processor.store._sums import Sums

__all__ = ["fold_days", "hour_views", "memo_get", "memo_put", "merge_into"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
#: Folds shorter than this are merged directly (the memo would cost more than it saves).
_MIN_DAYS: Final = 3


class _Memo:
    """Bounded least-recently-used map of ``key -> (stamp, value)``."""

    __slots__ = ("entries", "size")

    def __init__(self, size: int) -> None:
        self.entries: OrderedDict[Hashable, tuple[Hashable, object]] = OrderedDict()
        self.size = size

    def get(self, key: Hashable, stamp: Hashable) -> object | None:
        found = self.entries.get(key)
        if found is None or found[0] != stamp:
            return None
        self.entries.move_to_end(key)
        return found[1]

    def put(self, key: Hashable, stamp: Hashable, value: object) -> None:
        self.entries[key] = (stamp, value)
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)


class _Memos(NamedTuple):
    """One index's memos."""

    folds: _Memo  # window folds: a few KB each
    hours: _Memo  # per-hour views of a (tenant, provider filter, view): up to 90 days of hours each
    readers: _Memo  # the readers' own (memo_get / memo_put)
    hour_windows: _Memo  # the views of a window's settled days


_MEMOS: weakref.WeakKeyDictionary[UsageIndex, _Memos] = weakref.WeakKeyDictionary()
_MEMOS_LOCK: Final = threading.Lock()  # creating an index's memos (each index's own lock guards the rest)


def _memos(index: UsageIndex) -> _Memos:
    memos = _MEMOS.get(index)
    if memos is None:
        with _MEMOS_LOCK:
            memos = _MEMOS.get(index)
            if memos is None:
                memos = _MEMOS[index] = _Memos(_Memo(512), _Memo(32), _Memo(256), _Memo(16))
    return memos


def memo_get(index: UsageIndex, key: Hashable, stamp: Hashable) -> object | None:
    """What :func:`memo_put` kept under ``key`` with the same ``stamp`` (None: nothing, or stale).
    Call under ``index.read()``."""
    return _memos(index).readers.get(key, stamp)


def memo_put(index: UsageIndex, key: Hashable, stamp: Hashable, value: object) -> None:
    """Keep ``value`` under ``key`` while ``stamp`` holds (bounded: the least recently used go)."""
    _memos(index).readers.put(key, stamp, value)


def merge_into(into: dict[K, Sums], sums: dict[K, Sums], *, histogram: bool) -> None:
    """Merge each of ``sums`` into ``into`` (new keys get a copy, never the index's own Sums)."""
    for key, agg in sums.items():
        mine = into.get(key)
        if mine is None:
            into[key] = agg.copy() if histogram else agg.core()
        else:
            mine.merge(agg, histogram=histogram)


def _fold(
    days: list[tuple[int, TenantDay]], pick: Callable[[TenantDay], dict[K, Sums]], histogram: bool
) -> dict[K, Sums]:
    out: dict[K, Sums] = {}
    for _, td in days:
        merge_into(out, pick(td), histogram=histogram)
    return out


def fold_days(
    index: UsageIndex,
    who: str,
    first: int,
    last: int,
    kind: str,
    pick: Callable[[TenantDay], dict[K, Sums]],
    *,
    histogram: bool = False,
) -> dict[K, Sums]:
    """``pick(day)``'s sums merged over the days ``[first, last]`` of ``who`` (a tenant or ALL): new
    Sums the caller owns; latency histograms only with ``histogram``. ``kind`` names ``pick`` in the
    memo (one kind, one pick). Call under ``index.read()``."""
    days = index.day_range(who, first, last)
    if len(days) < _MIN_DAYS:
        return _fold(days, pick, histogram)
    settled, newest = days[:-1], days[-1][1]
    stamp = (index.generation, len(settled), sum(td.total.calls for _, td in settled))
    key = (kind, who, first, settled[-1][0], histogram)
    memo = _memos(index).folds
    found = memo.get(key, stamp)
    if found is None:
        found = _fold(settled, pick, histogram)
        memo.put(key, stamp, found)
    base: dict[K, Sums] = found  # type: ignore[assignment]
    out = {k: a.copy() if histogram else a.core() for k, a in base.items()}
    merge_into(out, pick(newest), histogram=histogram)
    return out


def hour_views(
    index: UsageIndex,
    who: str,
    first: int,
    last: int,
    provider: str | None,
    view: Callable[[int, Sums], V],
    view_key: Hashable | None,
) -> list[V]:
    """``view(hour, sums)`` of each hour of ``who`` with calls in ``[first, last]`` (sums over its
    providers, or of ``provider`` only), oldest first. With a ``view_key`` (the same key, the same
    view) the views are memoized, so read them, never change them: each hour's under the hour's
    stamp (its calls), and the list of the hours before the newest day under those days' stamp, so
    a query builds only the newest day's hours that changed. Call under ``index.read()``."""
    if view_key is None:
        return [view(hour, _hour_sum(by, provider)) for hour, by in index.hour_range(who, first, last)]
    days = index.day_range(who, first - first % DAY_S, last)
    if not days:
        return []
    newest = max(days[-1][0], first)
    out: list[V] = []
    settled = days[:-1]
    if settled:
        stamp = (index.generation, len(settled), sum(td.total.calls for _, td in settled))
        key = (who, provider, view_key, first, newest)
        memo = _memos(index).hour_windows
        found = memo.get(key, stamp)
        if found is None:
            found = _per_hour(index, who, first, newest - 1, provider, view, view_key)
            memo.put(key, stamp, found)
        out += found  # type: ignore[arg-type]
    out += _per_hour(index, who, newest, last, provider, view, view_key)
    return out


def _hour_sum(by_provider: dict[str, Sums], provider: str | None) -> Sums:
    if provider is None:
        total = Sums()
        for a in by_provider.values():
            total.merge(a, histogram=False)
        return total
    one = by_provider.get(provider)
    return Sums() if one is None else one.core()


def _per_hour(
    index: UsageIndex,
    who: str,
    first: int,
    last: int,
    provider: str | None,
    view: Callable[[int, Sums], V],
    view_key: Hashable,
) -> list[V]:
    key = (who, provider, view_key)
    memo = _memos(index).hours
    per_hour = memo.get(key, index.generation)
    if per_hour is None:
        per_hour = {}
        memo.put(key, index.generation, per_hour)
    cache: dict[int, tuple[int, V]] = per_hour  # type: ignore[assignment]
    out: list[V] = []
    for hour, by_provider in index.hour_range(who, first, last):
        seen = 0  # every call of the hour adds to one provider's requests: the hour's stamp
        for a in by_provider.values():
            seen += a.calls
        hit = cache.get(hour)
        if hit is not None and hit[0] == seen:
            out.append(hit[1])
            continue
        value = view(hour, _hour_sum(by_provider, provider))
        cache[hour] = (seen, value)
        out.append(value)
    return out
