"""One priced LLM call, as the ledger stores it: ids, times, dimensions, usage, cost — never content."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final, NamedTuple

__all__ = ["RECORD_VERSION", "CallRecord", "TokenCounts", "record_from_json", "record_to_json"]

#: Bumped when the stored shape changes; readers accept every version up to this one.
RECORD_VERSION = 1


class TokenCounts(NamedTuple):
    """Usage in the semconv-inclusive meaning (input includes cache reads and writes; output reasoning)."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    cache_write_1h: int = 0
    reasoning: int = 0

    @property
    def uncached_input(self) -> int:
        return self.input - self.cache_read - self.cache_write


class CallRecord(NamedTuple):
    """Everything costspan keeps about one LLM call.

    A named tuple rather than a frozen dataclass: one is built for every LLM span on the ingest hot
    path, and a frozen dataclass's ``__init__`` alone costs several microseconds.

    ``key`` is the dedupe identity (trace id + span id, hex). Money fields are ``Decimal`` and are
    ``None`` when the call is unpriced: an unknown price is never written as 0.
    """

    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int
    end_ns: int
    service: str
    tenant: str
    workflow: str
    user: str
    session: str
    provider: str
    model: str
    operation: str
    source: str
    tokens: TokenCounts
    tokens_estimated: bool
    cost_status: str  # priced | estimated | unpriced
    unpriced_reason: str
    cost_total: Decimal | None
    cost_input: Decimal | None
    cost_output: Decimal | None
    cost_cache_read: Decimal | None
    cost_cache_write: Decimal | None
    cost_other: Decimal | None
    pricing_version: str
    error_type: str
    #: Seconds from the request to the first streamed chunk (streams only).
    ttfc_s: float | None = None
    #: The project the call belongs to (``costspan.project.id``); its own dimension beside the tenant.
    project: str = ""
    #: The budget reservation the guard took for this call (``costspan.budget.reservation_id``), if any.
    reservation_id: str = ""

    @property
    def key(self) -> str:
        return self.trace_id + self.span_id

    @property
    def duration_s(self) -> float:
        return max(self.end_ns - self.start_ns, 0) / 1e9

    @property
    def status(self) -> str:
        """Outcome of the call: ``ok`` or ``error``."""
        return "error" if self.error_type else "ok"


def _money(value: Decimal | None) -> str:
    return "null" if value is None else '"' + str(value) + '"'


def record_to_json(record: CallRecord) -> str:
    """The record as one compact JSON array: the format version, then the fields in declared order.

    Token counts are a nested array (input, output, cache_read, cache_write, cache_write_1h,
    reasoning); money is a decimal string or null. Written by hand around the C string escaper
    (``json.encoder.encode_basestring``): a generic ``json.dumps`` costs several times more and
    this runs for every stored call.
    """
    e = _escape
    r = record
    t = r.tokens
    return (
        f"[{RECORD_VERSION},{e(r.trace_id)},{e(r.span_id)},{e(r.parent_span_id)},{int(r.start_ns)},"
        f"{int(r.end_ns)},{e(r.service)},{e(r.tenant)},{e(r.workflow)},{e(r.user)},{e(r.session)},"
        f"{e(r.provider)},{e(r.model)},{e(r.operation)},{e(r.source)},"
        f"[{int(t[0])},{int(t[1])},{int(t[2])},{int(t[3])},{int(t[4])},{int(t[5])}],"
        f"{'true' if r.tokens_estimated else 'false'},{e(r.cost_status)},{e(r.unpriced_reason)},"
        f"{_money(r.cost_total)},{_money(r.cost_input)},{_money(r.cost_output)},{_money(r.cost_cache_read)},"
        f"{_money(r.cost_cache_write)},{_money(r.cost_other)},{e(r.pricing_version)},{e(r.error_type)},"
        f"{'null' if r.ttfc_s is None else repr(float(r.ttfc_s))},{e(r.project)},{e(r.reservation_id)}]"
    )


_escape: Callable[[str], str] = json.encoder.encode_basestring


def record_from_json(text: str | bytes) -> CallRecord:
    """Inverse of :func:`record_to_json`; raises ``ValueError`` (or ``TypeError``) on a malformed record."""
    data: list[Any] = json.loads(text)
    # Records written before ``ttfc_s`` (one field fewer) or ``project``/``reservation_id`` (two fewer) are read too.
    if not isinstance(data, list) or not data or data[0] != RECORD_VERSION or len(data) - 1 not in _LENGTHS:
        raise ValueError("unsupported or malformed ledger record")
    f = data[1:]
    money = [None if x is None else Decimal(str(x)) for x in f[18:24]]
    return CallRecord(
        str(f[0]),
        str(f[1]),
        str(f[2]),
        int(f[3]),
        int(f[4]),
        str(f[5]),
        str(f[6]),
        str(f[7]),
        str(f[8]),
        str(f[9]),
        str(f[10]),
        str(f[11]),
        str(f[12]),
        str(f[13]),
        TokenCounts(*(int(x) for x in f[14])),
        bool(f[15]),
        str(f[16]),
        str(f[17]),
        money[0],
        money[1],
        money[2],
        money[3],
        money[4],
        money[5],
        str(f[24]),
        str(f[25]),
        None if len(f) < 27 or f[26] is None else float(f[26]),
        str(f[27]) if len(f) > 27 else "",
        str(f[28]) if len(f) > 28 else "",
    )


_LENGTHS: Final = (len(CallRecord._fields), len(CallRecord._fields) - 2, len(CallRecord._fields) - 3)
