"""A batch of call records prepared for the store: dedupe keys, ledger lines and rollup groups.

Preparing is the CPU-heavy part of ingest (JSON encoding, checksums, aggregation). It runs where
the records were normalized — in the receiver, in an ingest worker process, or in the in-process
SpanProcessor — so the store's single writer only dedupes, appends, fsyncs and merges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from costspan.processor.ledger import encode_line
from costspan.processor.records import CallRecord, record_from_json, record_to_json
from costspan.processor.rollups import RollupGroups, group_records

__all__ = ["CallKey", "PreparedBatch", "call_key", "prepare", "records_of"]


class CallKey(NamedTuple):
    """What dedupe needs of a record: its identity, its parent's, its usage and who emitted it."""

    key: str  # trace id + span id (hex)
    parent_key: str  # trace id + parent span id, or "" for a root span
    fingerprint: tuple[int, int]  # input and output tokens
    preferred: bool  # costspan's own or costspan-enriched span


def call_key(record: CallRecord) -> CallKey:
    return CallKey(
        record.trace_id + record.span_id,
        record.trace_id + record.parent_span_id if record.parent_span_id else "",
        (record.tokens.input, record.tokens.output),
        record.source.startswith("costspan"),
    )


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    keys: list[CallKey]
    lines: list[bytes]
    groups: RollupGroups
    records: list[CallRecord] | None = None  # kept when prepared in-process (saves re-parsing)

    def __len__(self) -> int:
        return len(self.keys)


def prepare(records: list[CallRecord], *, keep_records: bool = True) -> PreparedBatch:
    return PreparedBatch(
        keys=[call_key(r) for r in records],
        lines=[encode_line(r.trace_id + r.span_id, r.start_ns, record_to_json(r)) for r in records],
        groups=group_records(records),
        records=records if keep_records else None,
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
