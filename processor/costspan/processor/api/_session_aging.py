"""Sessions aged into their day: a settled day keeps its most expensive sessions, not every session.

A session has ~10 calls, so per-session state grows with the calls: a :class:`Sums` per session
and day, its last day in ``session_last`` and its name under the cardinality bound, all kept for
the days' whole retention. Once a day is older than ``session_detail_days`` (default 2),
:func:`age_sessions` keeps in its ``by_session`` only the ``keep_sessions`` most expensive sessions
(default 100) and every session seen on several days; the others are counted in the day's
``aged_sessions`` (their calls and cost stay in the day's ``sessions`` sums). Sessions last seen
before the cut leave ``session_last`` at the hourly prune and free their place under the session bound.

What the sessions route answers stays the same for a ``limit`` up to ``keep_sessions``: its counts
add ``aged_sessions``, its top sessions are among each day's kept ones, and a multi-day session is
kept on every day it was seen. What aging cannot tell: a call that arrives for a session after it
was aged (resumed or exported days later) starts a new entry, so that session counts twice in a
window holding both days. :attr:`UsageIndex.sessions_aged` counts the aged sessions
(``costspan_index_sessions_aged_total``).
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from costspan.processor.api._index import UsageIndex

__all__ = ["AGE_EVERY_S", "age_sessions"]

#: How often (seconds) the index ages the settled days' sessions while it is fed.
AGE_EVERY_S: Final = 60.0
_DAY_S: Final = 86400


def age_sessions(index: UsageIndex, now_s: float, *, forget: bool = False) -> int:
    """Age the sessions of the days older than the index's ``session_detail_days`` (call under the
    index's lock); returns how many left a day's ``by_session``. ``forget`` (the hourly prune): the
    sessions last seen before the cut leave ``session_last`` too."""
    cut = now_s - index.session_detail_days * _DAY_S
    keep = index.keep_sessions
    aged = 0
    for tenant, days in index.days.items():
        multi = index.multi_day.get(tenant, {})
        for day, td in days.items():
            sessions = td.by_session
            if day >= cut or len(sessions) <= keep:
                continue
            top = heapq.nlargest(keep, sessions.items(), key=lambda e: e[1].cost)
            kept = {name for name, _ in top}
            gone = [name for name in sessions if name not in kept and name not in multi]
            for name in gone:
                del sessions[name]
            td.aged_sessions += len(gone)
            td.top_cache.clear()
            aged += len(gone)
    for tenant, last in index.session_last.items() if forget else ():
        old = [name for name, day in last.items() if day < cut]
        if old:
            for name in old:
                del last[name]
            index.bounds.forget(tenant, "session", old)
    if aged:
        index.sessions_aged += aged
        index.generation += 1
    return aged
