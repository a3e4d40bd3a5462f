"""Settling stored calls against the budgets: what the store's writer runs after each group commit.

A call that carries the guard's reservation id settles exactly that reservation; a call logged over
the API without one is charged and never settles another call's reservation; the rest settle the
oldest open reservation of the same scope and model, or are charged when none is open.

Each call counts in the budget periods that contain its start (the stored ``start_ns``): a call
stored today that started yesterday is not in today's daily budget.
"""

from __future__ import annotations

from decimal import Decimal

from costspan.instrumentation import attributes as attr
from costspan.processor.budgets._book import BudgetBook
from costspan.processor.budgets._model import Budget, Call
from costspan.processor.budgets._periods import same_period
from costspan.processor.store._batch import Committed
from costspan.processor.store._callsums import CallDims
from costspan.processor.store._corrections import Correction
from costspan.processor.store._records import API_SOURCE, CallRecord, outcome_of

__all__ = ["settle_committed", "settle_corrections", "settle_records"]


def _call_of(c: CallRecord | CallDims) -> Call:
    """The budgets' view of a stored call (an empty dimension is no dimension)."""
    return Call(
        tenant=c.tenant or None,
        service=c.service or None,
        workflow=c.workflow or None,
        user=c.user or None,
        project=c.project or None,
        provider=c.provider or None,
        model=c.model or None,
    )


def settle_records(book: BudgetBook, records: list[CallRecord]) -> None:
    """Settle (or record) each newly stored call against the budgets. Runs on the store's writer.

    A record carrying the guard's reservation id settles exactly that reservation (whatever model
    the provider answered with); one without settles the oldest of the same scope and model.
    """
    for r in records:
        if outcome_of(r) == attr.OUTCOME_BLOCKED:
            continue  # refused by a budget before it was sent: nothing to settle, nothing spent
        call = _call_of(r)
        tokens = r.tokens.input + r.tokens.output
        at = r.start_ns / 1e9
        if r.source == API_SOURCE and not r.reservation_id:
            # logged over the API without the id its check answered: charge it, and never settle another
            # in-flight call's reservation that merely shares its scope and model
            book.record(call, r.cost_total, tokens, at=at)
        else:
            book.settle_call(call, r.cost_total, tokens, reservation_id=r.reservation_id or None, at=at)


def _one_period(budgets: list[Budget], hour: int) -> bool:
    """Whether the UTC hour starting at ``hour`` lies in one period of every budget (not so only where a
    budget's time zone is off UTC by a part of an hour)."""
    return all(same_period(b.period, b.timezone, hour, hour + 3599) for b in budgets)


def settle_committed(book: BudgetBook, committed: Committed) -> None:
    """:func:`settle_records` over the calls' sums: the calls of one scope and model that settle no
    reservation (none is open for them, or they were logged over the API without an id) are charged
    in one step; a call carrying a reservation id settles it; the rest go one by one.

    A group's calls started in the same UTC hour (``CallDims.hour``): charged as started at its first
    second, they count in the same periods as one by one — unless the hour straddles a period boundary
    (a time zone off UTC by a part of an hour), then they go one by one with their own start."""
    if not book.enabled:
        return
    budgets = book.budgets()
    for batch, sums in committed.sums():
        for d, s in sums.items():
            if not _one_period(budgets, d.hour):
                settle_records(book, committed.rows(batch, s.rows))
                continue
            call = _call_of(d)
            n = s.sums.requests
            if not n:
                continue  # only blocked calls: never sent, nothing spent
            tokens = s.sums.input_tokens + s.sums.output_tokens
            at = float(d.hour)
            if d.api_unreserved:
                book.record(call, s.cost, tokens, requests=n, at=at)
            elif d.reservation_id:
                book.settle_call(call, s.cost, tokens, requests=n, reservation_id=d.reservation_id, at=at)
            elif not book.record_unreserved(call, s.cost, tokens, n, at=at):
                settle_records(book, committed.rows(batch, s.rows))


def settle_corrections(book: BudgetBook, corrections: list[Correction]) -> None:
    """Repriced calls: each one's cost change (new minus old; an unpriced call's old cost counts as 0)
    is charged, or credited, to the budget periods that contain the call's start time; requests and
    tokens are unchanged. Runs where the corrections are stored (the store's correction listener)."""
    if not book.enabled:
        return
    for c in corrections:
        delta = (c.new.cost_total or _ZERO) - (c.old.cost_total or _ZERO)
        if delta:
            book.record(_call_of(c.new), delta, 0, requests=0, at=c.new.start_ns / 1e9)


_ZERO = Decimal(0)
