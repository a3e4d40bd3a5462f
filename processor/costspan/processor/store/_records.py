"""One priced LLM call, as the ledger stores it: ids, times, dimensions, usage, cost — never content."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final, NamedTuple

import orjson

__all__ = [
    "RECORD_VERSION",
    "CallRecord",
    "TokenCounts",
    "record_from_json",
    "record_to_json",
]

#: Bumped when the stored shape changes; readers accept every version up to this one.
RECORD_VERSION = 1


#: ``CallRecord.source`` of a call logged over ``POST /api/usage/calls`` rather than emitted as a span.
API_SOURCE: Final = "costspan-api"


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


def _record_to_json_text(record: CallRecord) -> str:
    """:func:`record_to_json` written by hand around the C string escaper (the fallback)."""
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


def record_to_json(record: CallRecord) -> str:
    """The record as one compact JSON array: the format version, then the fields in declared order.

    Token counts are a nested array (input, output, cache_read, cache_write, cache_write_1h,
    reasoning); money is a decimal string or null. Built by orjson from one tuple (this runs for
    every stored call); a record orjson refuses (an int beyond 64 bits, a string with a lone
    surrogate) is written by hand around the C string escaper, which decides what happens to it.
    """
    (
        trace_id,
        span_id,
        parent_span_id,
        start_ns,
        end_ns,
        service,
        tenant,
        workflow,
        user,
        session,
        provider,
        model,
        operation,
        source,
        tokens,
        estimated,
        status,
        reason,
        c0,
        c1,
        c2,
        c3,
        c4,
        c5,
        version,
        error_type,
        ttfc,
        project,
        reservation,
    ) = record
    if type(start_ns) is not int or type(end_ns) is not int or type(ttfc) not in (float, type(None)):
        return _record_to_json_text(record)
    try:
        return _dumps(
            (
                RECORD_VERSION,
                trace_id,
                span_id,
                parent_span_id,
                start_ns,
                end_ns,
                service,
                tenant,
                workflow,
                user,
                session,
                provider,
                model,
                operation,
                source,
                tuple(tokens),
                bool(estimated),
                status,
                reason,
                None if c0 is None else str(c0),
                None if c1 is None else str(c1),
                None if c2 is None else str(c2),
                None if c3 is None else str(c3),
                None if c4 is None else str(c4),
                None if c5 is None else str(c5),
                version,
                error_type,
                ttfc,
                project,
                reservation,
            )
        ).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return _record_to_json_text(record)


_dumps: Callable[[Any], bytes] = orjson.dumps


def record_from_json(text: str | bytes) -> CallRecord:
    """Inverse of :func:`record_to_json`; raises ``ValueError`` (or ``TypeError``) on a malformed record.

    Runs for every record the usage index, a commit listener or a replay reads back, so the common
    case is parsed by orjson. orjson and the standard parser agree on everything they both take but
    integers beyond 64 bits, which orjson makes floats: a record with 20 digits in a row (a minus
    counted as one; no 64-bit number is longer), or one orjson refuses, is parsed by the standard parser.
    """
    if type(text) is bytes:
        long_number = _TWENTY_DIGITS in text.translate(_DIGITS_AS_ZERO)
    else:
        long_number = _TWENTY_DIGITS_TEXT in str(text).translate(_DIGITS_AS_ZERO_TEXT)
    if not long_number:
        try:
            data = _fast_loads(text)
        except ValueError:  # orjson.JSONDecodeError (NaN, a lone surrogate, ...): the standard parser decides
            pass
        else:
            return _record(data)
    return _record(json.loads(text))


def _record(data: Any) -> CallRecord:
    # Records written before ``ttfc_s`` (one field fewer) or ``project``/``reservation_id`` (two fewer) are read too.
    if type(data) is not list or not data or data[0] != RECORD_VERSION or len(data) - 1 not in _LENGTHS:
        raise ValueError("unsupported or malformed ledger record")
    f = data[1:]
    tokens = f[14]
    if type(tokens) is list and len(tokens) == 6:
        t0, t1, t2, t3, t4, t5 = tokens
        counts = _new_tuple(TokenCounts, (int(t0), int(t1), int(t2), int(t3), int(t4), int(t5)))
    else:
        counts = TokenCounts(*(int(x) for x in tokens))
    if len(f) == _FULL:
        (a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, _, a15, a16, a17) = f[:18]
        (m0, m1, m2, m3, m4, m5, a24, a25, ttfc, a27, a28) = f[18:]
        # tuple.__new__: the named tuple's own __new__ is one more Python frame per record
        return _new_tuple(
            CallRecord,
            (
                str(a0),
                str(a1),
                str(a2),
                int(a3),
                int(a4),
                str(a5),
                str(a6),
                str(a7),
                str(a8),
                str(a9),
                str(a10),
                str(a11),
                str(a12),
                str(a13),
                counts,
                bool(a15),
                str(a16),
                str(a17),
                _money_of(m0),
                _money_of(m1),
                _money_of(m2),
                _money_of(m3),
                _money_of(m4),
                _money_of(m5),
                str(a24),
                str(a25),
                None if ttfc is None else float(ttfc),
                str(a27),
                str(a28),
            ),
        )
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
        counts,
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


_FULL: Final = len(CallRecord._fields)
_fast_loads: Callable[[str | bytes], Any] = orjson.loads
# every digit (and the minus) as "0", then one substring search: a C-speed look for a long number
_DIGITS_AS_ZERO: Final = bytes.maketrans(b"-123456789", b"0000000000")
_DIGITS_AS_ZERO_TEXT: Final = str.maketrans("-123456789", "0000000000")
_TWENTY_DIGITS: Final = b"0" * 20
_TWENTY_DIGITS_TEXT: Final = "0" * 20
_new_tuple: Final = tuple.__new__
_ZERO: Final = Decimal(0)


def _money_of(value: object) -> Decimal | None:
    if value is None:
        return None
    if value == "0":  # most calls have no cache writes and no other costs: one shared zero
        return _ZERO
    return Decimal(value if type(value) is str else str(value))


_LENGTHS: Final = (len(CallRecord._fields), len(CallRecord._fields) - 2, len(CallRecord._fields) - 3)
