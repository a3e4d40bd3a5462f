"""Budget periods as [start, end) windows of epoch seconds, calendar-aligned in a time zone."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from costspan.processor.budgets._model import Period

__all__ = ["FOREVER", "same_period", "window"]

FOREVER = (0.0, math.inf)


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _epoch(local: datetime) -> float:
    return local.timestamp()  # zoneinfo resolves DST gaps and folds for wall-clock midnights


def window(period: Period, now: float, timezone: str = "UTC") -> tuple[float, float]:
    """The period containing ``now``: (start, end) epoch seconds; ``end`` is ``inf`` if it never ends.

    Day, week (Monday first), month and year start at local midnight in ``timezone``; an hour is the local
    clock hour (zones with half-hour offsets start on the half hour).
    """
    if period in (Period.TOTAL, Period.PER_REQUEST):
        return FOREVER
    tz = _zone(timezone)
    local = datetime.fromtimestamp(now, tz)
    if period is Period.HOUR:
        start = local.replace(minute=0, second=0, microsecond=0)
        begin = _epoch(start)
        return begin, begin + 3600.0
    midnight = datetime(local.year, local.month, local.day, tzinfo=tz)
    if period is Period.DAY:
        nxt = midnight + timedelta(days=1)
        return _epoch(midnight), _epoch(datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz))
    if period is Period.WEEK:
        first = midnight - timedelta(days=local.weekday())
        nxt = first + timedelta(days=7)
        return _epoch(datetime(first.year, first.month, first.day, tzinfo=tz)), _epoch(
            datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz)
        )
    if period is Period.YEAR:
        return _epoch(datetime(local.year, 1, 1, tzinfo=tz)), _epoch(datetime(local.year + 1, 1, 1, tzinfo=tz))
    first_of_month = datetime(local.year, local.month, 1, tzinfo=tz)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return _epoch(first_of_month), _epoch(datetime(year, month, 1, tzinfo=tz))


@lru_cache(maxsize=4096)
def same_period(period: Period, timezone: str, first: int, last: int) -> bool:
    """Whether the whole seconds ``first`` and ``last`` fall in the same period (period boundaries are
    whole seconds, so ``[first, last + 1)`` then lies in one period)."""
    return window(period, first, timezone) == window(period, last, timezone)


def as_datetime(epoch: float) -> datetime | None:
    """UTC datetime of an epoch, None for ``inf`` (a period that never resets)."""
    return None if math.isinf(epoch) else datetime.fromtimestamp(epoch, UTC)
