"""A batch's calls summed by everything the commit listeners tell calls apart by.

The store's commit listeners (the usage index, budget settlement, the spike rule) each looked at
every stored call on the store's single writer thread: at 20,000 spans/s that, and re-reading each
call from its ledger line for them, was most of the server's CPU. Instead the place that prepares a
batch (an ingest worker process, usually) sums its calls once per distinct :class:`CallDims` — a
batch of 512 spans from one service typically has a few dozen — and the listeners fold the sums.
A record that only a listener's slow path needs (a reservation to settle) is found by its row.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from decimal import Decimal
from typing import NamedTuple

from costspan.instrumentation import attributes as attr
from costspan.processor.store._records import API_SOURCE, CallRecord, outcome_of
from costspan.processor.store._sums import Sums, latency_bucket

__all__ = ["CallDims", "CallSums", "sum_calls"]

_DAY_S = 86400
_OK = attr.OUTCOME_OK
_BLOCKED = attr.OUTCOME_BLOCKED
_DEGRADED = attr.OUTCOME_DEGRADED
_HOUR_S = 3600


class CallDims(NamedTuple):
    """What tells one call's sums from another's, for every commit listener."""

    tenant: str
    service: str
    workflow: str
    user: str
    project: str
    session: str
    provider: str
    model: str
    operation: str
    day: int  # UTC day start, in seconds
    hour: int  # UTC hour start, in seconds
    reservation_id: str
    #: Logged over ``POST /api/usage/calls`` without the reservation id its check answered: charged,
    #: never settled against another call's reservation.
    api_unreserved: bool


class CallSums(NamedTuple):
    """The :class:`~costspan.processor.store._sums.Sums` of the calls sharing one :class:`CallDims`,
    and their rows in the batch."""

    sums: Sums
    rows: list[int]

    @property
    def cost(self) -> Decimal | None:
        """The summed cost for budgets: ``None`` when no call of the group was priced."""
        return None if self.sums.unpriced == self.sums.requests else self.sums.cost


def sum_calls(records: Iterable[CallRecord], rows: Iterable[int] | None = None) -> dict[CallDims, CallSums]:
    """Sum ``records`` by :class:`CallDims`; ``rows`` are their positions in the batch (default 0, 1, ...)."""
    out: dict[CallDims, CallSums] = {}
    new = tuple.__new__
    for row, r in zip(rows if rows is not None else itertools.count(), records, strict=False):
        start_s = r.start_ns // 1_000_000_000
        reservation = r.reservation_id
        dims = new(
            CallDims,
            (
                r.tenant,
                r.service,
                r.workflow,
                r.user,
                r.project,
                r.session,
                r.provider,
                r.model,
                r.operation,
                start_s - start_s % _DAY_S,
                start_s - start_s % _HOUR_S,
                reservation,
                not reservation and r.source == API_SOURCE,
            ),
        )
        group = out.get(dims)
        if group is None:
            group = out[dims] = new(CallSums, (Sums(), []))
        outcome = r.outcome or outcome_of(r)
        if outcome != _OK:  # blocked: counted apart from the sent calls; degraded: counted among them
            if outcome == _BLOCKED:
                group.sums.blocked += 1
                group.rows.append(row)
                continue
            if outcome == _DEGRADED and not r.error_type:
                group.sums.degraded += 1
        if r.cost_total is None:
            group.sums.unpriced_tokens += r.tokens.input + r.tokens.output
        latency_ms = max(r.end_ns - r.start_ns, 0) / 1e6
        t = r.tokens
        group.sums.add_values(
            1 if r.error_type else 0,
            r.cost_total,
            t.input,
            t.output,
            t.cache_read,
            latency_ms,
            latency_bucket(latency_ms),
        )
        group.rows.append(row)
    return out
