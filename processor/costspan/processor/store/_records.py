"""One priced LLM call, as the ledger stores it: ids, times, dimensions, usage, cost — never content."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final, NamedTuple

import orjson

from costspan.instrumentation import attributes as attr

__all__ = [
    "MAX_TOKENS",
    "RECORD_VERSION",
    "CallRecord",
    "TokenCounts",
    "outcome_of",
    "record_from_json",
    "record_to_json",
]

#: Bumped when the stored shape changes; readers accept every version up to this one.
RECORD_VERSION = 1
#: The largest token count a call may have: larger ones are refused where they arrive and, written by
#: an older version, not read back (every sum would leave 64 bits).
MAX_TOKENS: Final = 10**12


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
    #: ``ok`` | ``degraded`` | ``blocked`` | ``error`` (``costspan.call.outcome``); empty in a record built
    #: without one: :func:`outcome_of` derives it.
    outcome: str = ""

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


def outcome_of(r: CallRecord) -> str:
    """The record's outcome; derived from its error and cost status when it carries none (a record
    stored before outcomes existed, or built without one): a budget's refusal is ``blocked``, any other
    error ``error``, a call not priced from reported usage ``degraded``, the rest ``ok``."""
    if r.outcome:
        return r.outcome
    error = r.error_type
    if error == attr.ERROR_TYPE_BUDGET_EXCEEDED or error.endswith("BudgetExceededError"):
        return attr.OUTCOME_BLOCKED
    if error:
        return attr.OUTCOME_ERROR
    return attr.OUTCOME_OK if r.cost_status == attr.STATUS_PRICED else attr.OUTCOME_DEGRADED


# ---------------------------------------------------------------------------------------------------
# The JSON codec, generated from the declaration above: the field order is written once, in CallRecord.
#
# A record is stored as one JSON array: the format version, then every field in declared order. How a
# field is written and read follows from its annotation (its kind, below). The encoder and the decoder
# run for every stored and every read call, so they are generated as straight-line code at import
# (one unpacking, one tuple, no loop and no call per field), which is what hand-written code would be.
# ---------------------------------------------------------------------------------------------------

#: A field's annotation → how it is stored: "str", "int", "bool", "tokens" (a nested array of the
#: counts), "money" (a decimal string or null), "seconds" (a float or null).
_KINDS: Final = {
    "str": "str",
    "int": "int",
    "bool": "bool",
    "TokenCounts": "tokens",
    "Decimal | None": "money",
    "float | None": "seconds",
}
#: The shorter layouts earlier versions wrote, each named by its last field: a record written before
#: ``ttfc_s`` existed ends at ``error_type``, one written before ``project`` and ``reservation_id`` at
#: ``ttfc_s``, one written before ``outcome`` at ``reservation_id``. The fields after the last one
#: read as their declared defaults, except the outcome, derived by :func:`outcome_of`.
_OLDER_LAYOUTS: Final = ("error_type", "ttfc_s", "reservation_id")


def _kinds() -> tuple[str, ...]:
    kinds = []
    for name in CallRecord._fields:
        annotation = CallRecord.__annotations__[name]  # a ForwardRef: this module postpones annotations
        kind = _KINDS.get(str(getattr(annotation, "__forward_arg__", annotation)))
        if kind is None:
            raise TypeError(f"CallRecord.{name}: no JSON codec for {annotation!r}; add its kind to _KINDS")
        kinds.append(kind)
    return tuple(kinds)


def _unpacked(count: int, lead: str = "") -> str:
    return lead + ", ".join(f"v{i}" for i in range(count)) + (",)" if count == 1 else "")


def _encoder_source(kinds: tuple[str, ...]) -> str:
    """``record_to_json``: orjson over one tuple, or the text encoder for what orjson cannot take."""
    checks = [f"type(v{i}) is not int" for i, k in enumerate(kinds) if k == "int"]
    checks += [f"type(v{i}) not in _FLOAT_OR_NONE" for i, k in enumerate(kinds) if k == "seconds"]
    stored = {
        "str": "{v}",
        "int": "{v}",
        "bool": "bool({v})",
        "tokens": "tuple({v})",
        "money": "None if {v} is None else str({v})",
        "seconds": "{v}",
    }
    values = ", ".join([repr(RECORD_VERSION)] + [stored[k].format(v=f"v{i}") for i, k in enumerate(kinds)])
    return (
        "def record_to_json(record):\n"
        f"    {_unpacked(len(kinds))} = record\n"
        f"    if {' or '.join(checks) or 'False'}:\n"
        "        return _record_to_json_text(record)\n"
        "    try:\n"
        f"        return _dumps(({values})).decode()\n"
        "    except TypeError:  # orjson.JSONEncodeError is a TypeError\n"
        "        return _record_to_json_text(record)\n"
    )


def _text_encoder_source(kinds: tuple[str, ...]) -> str:
    """``_record_to_json_text``: the same array written around the C string escaper."""
    counts = len(TokenCounts._fields)
    written = {
        "str": "{{_escape({v})}}",
        "int": "{{int({v})}}",
        "bool": "{{'true' if {v} else 'false'}}",
        "tokens": "[" + ",".join(f"{{{{int({{v}}[{j}])}}}}" for j in range(counts)) + "]",
        "money": "{{_money({v})}}",
        "seconds": "{{'null' if {v} is None else repr(float({v}))}}",
    }
    parts = [str(RECORD_VERSION)] + [written[k].format(v=f"v{i}") for i, k in enumerate(kinds)]
    return (
        f'def _record_to_json_text(record):\n    {_unpacked(len(kinds))} = record\n    return f"[{",".join(parts)}]"\n'
    )


def _decoder_source(kinds: tuple[str, ...]) -> str:
    """``_record``: the parsed array (any layout) back to a record, every field checked by its type."""
    read = {
        "str": "str({v})",
        "int": "int({v})",
        "bool": "bool({v})",
        "tokens": "c{i}",
        "money": "_money_of({v})",
        "seconds": "None if {v} is None else float({v})",
    }
    counts = len(TokenCounts._fields)
    t = ", ".join(f"t{j}" for j in range(counts))
    ints = ", ".join(f"int(t{j})" for j in range(counts))
    lines = [
        "def _record(data):",
        "    if type(data) is not list or not data or data[0] != _VERSION:",
        "        raise ValueError(_MALFORMED)",
        "    size = len(data)",
    ]
    lengths = [len(kinds)] + [CallRecord._fields.index(last) + 1 for last in _OLDER_LAYOUTS]
    for length in lengths:
        lines.append(f"    if size == {length + 1}:")
        lines.append(f"        {_unpacked(length, '_, ')} = data")
        for i in range(length):
            if kinds[i] == "tokens":  # the common shape without a generator; any other length as it always was
                lines += [
                    f"        if type(v{i}) is list and len(v{i}) == {counts}:",
                    f"            {t} = v{i}",
                    f"            c{i} = _new(TokenCounts, ({ints},))",
                    "        else:",
                    f"            c{i} = TokenCounts(*(int(x) for x in v{i}))",
                ]
        values = [read[k].format(v=f"v{i}", i=i) for i, k in enumerate(kinds[:length])]
        values += [f"_default_{name}" for name in CallRecord._fields[length:]]
        # tuple.__new__: the named tuple's own __new__ is one more Python frame per record
        made = f"_new(CallRecord, ({', '.join(values)},))"
        lines.append(f"        return {made}" if length == len(kinds) else f"        return _with_outcome({made})")
    lines.append("    raise ValueError(_MALFORMED)")
    return "\n".join(lines) + "\n"


def _money(value: Decimal | None) -> str:
    return "null" if value is None else '"' + str(value) + '"'


def _money_of(value: object) -> Decimal | None:
    if value is None:
        return None
    if value == "0":  # most calls have no cache writes and no other costs: one shared zero
        return _ZERO
    return Decimal(value if type(value) is str else str(value))


_ZERO: Final = Decimal(0)


def _with_outcome(r: CallRecord) -> CallRecord:
    """A record of an older layout with its outcome derived."""
    return r._replace(outcome=outcome_of(r))


def _codec() -> tuple[str, dict[str, Any]]:
    kinds = _kinds()
    source = _encoder_source(kinds) + "\n" + _text_encoder_source(kinds) + "\n" + _decoder_source(kinds)
    namespace: dict[str, Any] = {
        "__name__": __name__,
        "CallRecord": CallRecord,
        "TokenCounts": TokenCounts,
        "_VERSION": RECORD_VERSION,
        "_MALFORMED": "unsupported or malformed ledger record",
        "_FLOAT_OR_NONE": (float, type(None)),
        "_dumps": orjson.dumps,
        "_escape": json.encoder.encode_basestring,
        "_money": _money,
        "_money_of": _money_of,
        "_with_outcome": _with_outcome,
        "_new": tuple.__new__,
        **{f"_default_{name}": value for name, value in CallRecord._field_defaults.items()},
    }
    exec(compile(source, f"<{__name__} codec>", "exec"), namespace)  # our own source, generated above
    return source, namespace


#: The generated source of the codec (for a reader, or a traceback into it).
CODEC_SOURCE, _generated = _codec()
_record_to_json_text: Final[Callable[[CallRecord], str]] = _generated["_record_to_json_text"]
_record: Final[Callable[[Any], CallRecord]] = _generated["_record"]
#: The record as one compact JSON array: the format version, then the fields in declared order.
#:
#: Token counts are a nested array (input, output, cache_read, cache_write, cache_write_1h,
#: reasoning); money is a decimal string or null. Built by orjson from one tuple (this runs for
#: every stored call); a record orjson refuses (an int beyond 64 bits, a string with a lone
#: surrogate) is written by hand around the C string escaper, which decides what happens to it.
record_to_json: Final[Callable[[CallRecord], str]] = _generated["record_to_json"]


def record_from_json(text: str | bytes) -> CallRecord:
    """Inverse of :func:`record_to_json`; raises ``ValueError`` (or ``TypeError``) on a malformed record.

    Reads the current layout and the shorter ones earlier versions wrote (see ``_OLDER_LAYOUTS``).
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
    record = _record(json.loads(text))
    tokens = record.tokens
    if min(tokens) < 0 or max(tokens) > MAX_TOKENS:  # only a long number can be out of range: checked here
        raise ValueError(f"stored record has a token count out of range (0 to {MAX_TOKENS})")
    return record


_fast_loads: Callable[[str | bytes], Any] = orjson.loads
# every digit (and the minus) as "0", then one substring search: a C-speed look for a long number
_DIGITS_AS_ZERO: Final = bytes.maketrans(b"-123456789", b"0000000000")
_DIGITS_AS_ZERO_TEXT: Final = str.maketrans("-123456789", "0000000000")
_TWENTY_DIGITS: Final = b"0" * 20
_TWENTY_DIGITS_TEXT: Final = "0" * 20
