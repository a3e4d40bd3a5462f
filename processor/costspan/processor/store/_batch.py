"""A batch of call records prepared for the store: dedupe keys, ledger lines and rollup groups.

Preparing is the CPU-heavy part of ingest (JSON encoding, checksums, aggregation). It runs where
the records were normalized — in the receiver, in an ingest worker process, or in the in-process
SpanProcessor — so the store's single writer only dedupes, appends, fsyncs and merges.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from costspan.processor.store._callsums import CallDims, CallSums, sum_calls
from costspan.processor.store._ledger import Position, compact_int, encode_line
from costspan.processor.store._records import CallRecord, record_from_json, record_to_json
from costspan.processor.store._rollups import RollupGroups, group_records

__all__ = ["CallKey", "Committed", "PreparedBatch", "call_key", "prepare", "records_of", "sums_of"]


class CallKey(NamedTuple):
    """What dedupe needs of a record: its identity, its parent's, its usage and who emitted it."""

    key: str  # trace id + span id (hex)
    parent_key: str  # trace id + parent span id, or "" for a root span
    fingerprint: tuple[int, int]  # input and output tokens
    preferred: bool  # costspan's own or costspan-enriched span
    compact: int  # the dedupe window's 64-bit key of ``key`` (computed where the batch is prepared)


def call_key(record: CallRecord) -> CallKey:
    return CallKey(
        record.trace_id + record.span_id,
        record.trace_id + record.parent_span_id if record.parent_span_id else "",
        (record.tokens.input, record.tokens.output),
        record.source.startswith("costspan"),
        compact_int(int(record.trace_id + record.span_id, 16)),
    )


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    keys: list[CallKey]
    lines: list[bytes]
    groups: RollupGroups
    records: list[CallRecord] | None = None  # kept when prepared in-process (saves re-parsing)
    #: The calls summed for the commit listeners (see :mod:`._callsums`): prepared where the batch is
    #: when its records are not kept, so the store's writer folds sums instead of re-reading lines.
    sums: dict[CallDims, CallSums] | None = None

    def __len__(self) -> int:
        return len(self.keys)


def prepare(records: list[CallRecord], *, keep_records: bool = True, with_sums: bool | None = None) -> PreparedBatch:
    """``with_sums`` defaults to ``not keep_records``: kept records are summed on demand instead."""
    return PreparedBatch(
        keys=[call_key(r) for r in records],
        lines=[encode_line(r.trace_id + r.span_id, r.start_ns, record_to_json(r)) for r in records],
        groups=group_records(records),
        records=records if keep_records else None,
        sums=sum_calls(records) if (not keep_records if with_sums is None else with_sums) else None,
    )


def records_of(batch: PreparedBatch, indices: list[int]) -> list[CallRecord]:
    """The records at ``indices``, re-read from their ledger lines when the batch did not keep them."""
    if batch.records is not None:
        return [batch.records[i] for i in indices]
    out = []
    for i in indices:
        line = batch.lines[i]
        payload = line.rstrip(b"\n").split(b" ", 3)[3]
        out.append(record_from_json(payload))
    return out


def sums_of(batch: PreparedBatch, kept: list[int]) -> dict[CallDims, CallSums]:
    """The sums of the calls at ``kept``: the prepared sums when every call was kept, else summed anew."""
    if batch.sums is not None and len(kept) == len(batch):
        return batch.sums
    return sum_calls(records_of(batch, kept), kept)


class Committed:
    """What one group commit stored, as the commit listeners see it: the calls summed by
    :class:`~costspan.processor.store._callsums.CallDims` per batch, the records on demand, and the ledger
    position just after them."""

    __slots__ = ("_records", "end", "parts")

    def __init__(self, parts: list[tuple[PreparedBatch, list[int]]], end: Position) -> None:
        self.parts = [(batch, kept) for batch, kept in parts if kept]
        self.end = end
        self._records: list[CallRecord] | None = None

    def __bool__(self) -> bool:
        return bool(self.parts)

    def records(self) -> list[CallRecord]:
        """Every stored record, in order (re-read from the ledger lines when the batch did not keep them)."""
        if self._records is None:
            self._records = [r for batch, kept in self.parts for r in records_of(batch, kept)]
        return self._records

    def sums(self) -> Iterator[tuple[PreparedBatch, dict[CallDims, CallSums]]]:
        """Per batch, its stored calls summed (``CallSums.rows`` index the batch: see :meth:`rows`)."""
        for batch, kept in self.parts:
            yield batch, sums_of(batch, kept)

    @staticmethod
    def rows(batch: PreparedBatch, rows: list[int]) -> list[CallRecord]:
        return records_of(batch, rows)
