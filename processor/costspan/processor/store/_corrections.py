"""Corrections: a call's cost recomputed later (``costspan reprice``), kept beside the original.

The ledger stays append-only: a repriced call gets a correction line after it, with the call's key
and start time like any record, whose payload holds the record as it was (``old``) and as it is now
(``new``: the same call, usage and times, with the new cost and pricing version). The original line
is never touched. Everything derived from the ledger applies a correction as a delta: the cost (and
its parts) changes, requests and tokens do not; an unpriced call that is now priced leaves the
unpriced count. Readers of individual calls see the newest ``new`` of a call.

A correction's payload is a JSON object (a record's is an array), so one byte tells them apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Final, NamedTuple

import orjson

from costspan.processor.store._callsums import CallDims, sum_calls
from costspan.processor.store._ledger import LedgerLine, encode_line
from costspan.processor.store._records import CallRecord, record_from_json, record_to_json
from costspan.processor.store._rollups import RollupGroups, group_records
from costspan.processor.store._sums import Sums

__all__ = [
    "MARKER",
    "Correction",
    "correction_from_json",
    "correction_groups",
    "correction_line",
    "correction_sums",
    "current_records",
    "is_correction",
    "latest_corrections",
]

#: A file in the ledger's directory once it holds a correction: readers of individual calls look for
#: corrections only then (the common ledger, never repriced, is read once).
MARKER: Final = "repriced"
#: The first bytes of every correction payload.
_PREFIX: Final = b'{"reprice":'
_FORMAT: Final = 1


class Correction(NamedTuple):
    """One call repriced: ``old`` and ``new`` differ only in their cost fields and pricing version."""

    old: CallRecord
    new: CallRecord
    at: float  # when the reprice ran (Unix seconds)

    @property
    def key(self) -> str:
        return self.new.trace_id + self.new.span_id


def is_correction(payload: bytes) -> bool:
    """Whether a ledger line's payload is a correction (not a call record)."""
    return payload.startswith(_PREFIX)


def correction_line(c: Correction) -> bytes:
    """The ledger line of ``c``: keyed and dated like the call it corrects."""
    payload = f'{{"reprice":{_FORMAT},"at":{c.at!r},"old":{record_to_json(c.old)},"new":{record_to_json(c.new)}}}'
    return encode_line(c.key, c.new.start_ns, payload)


def correction_from_json(payload: bytes) -> Correction:
    """Raises ``ValueError`` (or ``KeyError``, ``TypeError``) for a malformed correction."""
    data: Any = orjson.loads(payload)
    if not isinstance(data, dict) or data.get("reprice") != _FORMAT:
        raise ValueError("unsupported or malformed correction")
    old = record_from_json(orjson.dumps(data["old"]))
    new = record_from_json(orjson.dumps(data["new"]))
    if old.trace_id + old.span_id != new.trace_id + new.span_id or old.start_ns != new.start_ns:
        raise ValueError("a correction's old and new records are not one call")
    return Correction(old, new, float(data["at"]))


def _without_noise(delta: Sums) -> Sums:
    """A correction changes no duration: the float sums' subtraction leftovers are zeroed."""
    delta.latency_ms = 0.0
    if delta.detail is not None:
        delta.detail.duration_sum = 0.0
        delta.detail.ttfc_sum = 0.0
    return delta


def correction_groups(corrections: Iterable[Correction]) -> RollupGroups:
    """The rollups' delta of ``corrections``: new minus old per group (no requests, no tokens)."""
    items = list(corrections)
    new = group_records(c.new for c in items)
    old = group_records(c.old for c in items)
    out: list[dict[Any, Sums]] = []
    pairs: tuple[tuple[dict[Any, Sums], dict[Any, Sums]], ...] = (
        (new.by_minute, old.by_minute),
        (new.by_workflow, old.by_workflow),
        (new.by_user, old.by_user),
    )
    for after, before in pairs:
        deltas: dict[Any, Sums] = {}
        for key, sums in after.items():
            delta = sums.copy()
            delta.subtract(before[key])  # old and new share every dimension and the minute
            deltas[key] = _without_noise(delta)
        out.append(deltas)
    return RollupGroups(out[0], out[1], out[2], 0)


def correction_sums(corrections: Iterable[Correction]) -> dict[CallDims, Sums]:
    """The commit listeners' delta of ``corrections``: new minus old per :class:`CallDims` (core only)."""
    items = list(corrections)
    new = sum_calls(c.new for c in items)
    old = sum_calls(c.old for c in items)
    return {dims: _without_noise(s.sums.minus(old[dims].sums)) for dims, s in new.items()}


def current_records(lines: Iterable[LedgerLine], corrected: dict[str, CallRecord]) -> Iterator[CallRecord]:
    """The call records of ``lines``, each as its newest correction in ``corrected`` (key -> record)
    has it; correction lines themselves are skipped. Raises as ``record_from_json`` does."""
    for line in lines:
        if is_correction(line.payload):
            continue
        record = record_from_json(line.payload)
        yield corrected.get(line.key, record)


def latest_corrections(lines: Iterable[LedgerLine]) -> dict[str, CallRecord]:
    """Key -> the newest corrected record, from the correction lines among ``lines`` (others skipped;
    an unreadable correction is skipped as replay skips it)."""
    out: dict[str, CallRecord] = {}
    for line in lines:
        if is_correction(line.payload):
            try:
                out[line.key] = correction_from_json(line.payload).new
            except (ValueError, KeyError, TypeError):
                continue
    return out
