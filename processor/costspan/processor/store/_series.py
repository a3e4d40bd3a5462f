"""One name's (a user's, a workflow's) :class:`~costspan.processor.store._sums.Sums` over UTC days: :class:`Series`."""

from __future__ import annotations

import bisect
from decimal import Decimal
from typing import Any, Final

from costspan.processor.store._sums import Sums

__all__ = ["Series"]

_ZERO: Final = Decimal(0)


class Series:
    """One name's (a user's, a workflow's) sums over UTC days, kept cumulative.

    ``cum[i]`` holds every call up to and including ``days[i]``, so the sums of any window are one
    subtraction: O(log days) per name instead of a merge per day. Calls arrive for the newest day
    (one add); a call for an older day is added to every later entry.
    """

    __slots__ = ("cum", "days")

    def __init__(self) -> None:
        self.days: list[int] = []
        self.cum: list[Sums] = []

    def add(self, day: int, values: tuple[int, Decimal | None, int, int, int, float]) -> None:
        days = self.days
        if days and days[-1] == day:
            self.cum[-1].add_values(*values, -1)
            return
        if not days or day > days[-1]:
            base = self.cum[-1].copy() if days else Sums()
            base.add_values(*values, -1)
            days.append(day)
            self.cum.append(base)
            return
        i = bisect.bisect_left(days, day)
        if days[i] != day:
            base = self.cum[i - 1].copy() if i else Sums()
            days.insert(i, day)
            self.cum.insert(i, base)
        for a in self.cum[i:]:
            a.add_values(*values, -1)

    def merge(self, day: int, sums: Sums) -> None:
        """:meth:`add` for the sums of several calls of ``day``."""
        days = self.days
        if days and days[-1] == day:
            self.cum[-1].merge(sums, histogram=False)
            return
        i = bisect.bisect_left(days, day)
        if i == len(days) or days[i] != day:
            base = self.cum[i - 1].copy() if i else Sums()
            days.insert(i, day)
            self.cum.insert(i, base)
        for a in self.cum[i:]:
            a.merge(sums, histogram=False)

    def _before(self, day: int) -> Sums | None:
        """Cumulative sums of the days before ``day`` (None: nothing before it)."""
        i = bisect.bisect_left(self.days, day)
        return self.cum[i - 1] if i else None

    def _through(self, day: int) -> Sums | None:
        i = bisect.bisect_right(self.days, day)
        return self.cum[i - 1] if i else None

    def between(self, first: int, last: int) -> Sums:
        """Sums of the days in ``[first, last]`` (a new Sums)."""
        upto = self._through(last)
        if upto is None:
            return Sums()
        before = self._before(first)
        return upto.copy() if before is None else upto.minus(before)

    def cost_between(self, first: int, last: int) -> tuple[int, Decimal]:
        """``(requests, cost)`` of the days in ``[first, last]``."""
        days = self.days
        if days and first <= days[0] and days[-1] <= last:  # the window holds every day: no search
            whole = self.cum[-1]
            return whole.requests, whole.cost
        upto = self._through(last)
        if upto is None:
            return 0, _ZERO
        before = self._before(first)
        if before is None:
            return upto.requests, upto.cost
        return upto.requests - before.requests, upto.cost - before.cost

    def per_day(self, first: int, last: int) -> list[tuple[int, Sums]]:
        """``(day, sums of that day)`` for the days with calls in ``[first, last]``, oldest first."""
        days, cum = self.days, self.cum
        out = []
        for i in range(bisect.bisect_left(days, first), bisect.bisect_right(days, last)):
            out.append((days[i], cum[i].minus(cum[i - 1]) if i else cum[i].copy()))
        return out

    def drop_before(self, day: int) -> None:
        """Forget the days before ``day``: the later entries no longer count them."""
        i = bisect.bisect_left(self.days, day)
        if not i:
            return
        gone = self.cum[i - 1]
        self.days = self.days[i:]
        self.cum = [a.minus(gone) for a in self.cum[i:]]

    def to_json(self) -> list[Any]:
        return [self.days, [a.to_json() for a in self.cum]]

    @classmethod
    def from_json(cls, d: list[Any]) -> Series:
        s = cls()
        s.days = [int(x) for x in d[0]]
        s.cum = [Sums.from_json(a) for a in d[1]]
        return s
