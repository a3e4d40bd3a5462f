"""Compact closed ledger segments to Parquet: run as a child process, never in the server.

``python -m costspan.processor.store._compact <ledger dir> <history dir> <segment>...`` lowers its
own priority (``nice 19``), reads each closed JSON-lines segment, and writes
``<history dir>/segment-<n>.parquet`` atomically: a temp file, fsync, rename, fsync of the directory.
Until the rename the JSON-lines segment is the only copy readers use; after it, both hold the same
calls (the JSON segment stays the write-ahead truth until retention removes it). A crash or a
``kill -9`` at any point leaves either no Parquet file or a whole one (a stray ``.tmp`` is removed by
the next run).

One row per stored call, the first line of a span id within the segment (a line a failed commit
wrote twice is kept once); corrections (repricing) are not rows. The columns are the usage export's
(:data:`EXPORT_COLUMNS`, same values) followed by :data:`EXTRA_COLUMNS`; money is a decimal string
(exact), times are ``start_ns``/``end_ns`` (int64, UTC ns) and ``start_time`` (ISO 8601 text).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from costspan.processor.store._files import private_dir, private_open
from costspan.processor.store._ledger import Ledger, Position
from costspan.processor.store._records import CallRecord, outcome_of, record_from_json

__all__ = ["EXPORT_COLUMNS", "EXTRA_COLUMNS", "HISTORY_FORMAT", "compact_segment", "export_row", "parquet_path"]

#: Bumped when the columns change (in the file's key-value metadata).
HISTORY_FORMAT: Final = "1"

#: The usage export's columns, in order (CSV header; JSON object keys).
EXPORT_COLUMNS: Final = (
    "id", "start_time", "duration_ms", "tenant_id", "service", "workflow_id", "user_id", "session_id",
    "provider", "model", "operation", "input_tokens", "output_tokens", "cache_read_tokens",
    "cache_write_tokens", "reasoning_tokens", "tokens_estimated", "cost_status", "cost_usd",
    "input_cost_usd", "output_cost_usd", "cache_read_cost_usd", "cache_write_cost_usd", "error_type",
    "pricing_version", "project_id", "outcome",
)  # fmt: skip
#: Further columns of the Parquet files (for ad-hoc queries and repricing).
EXTRA_COLUMNS: Final = (
    "start_ns", "end_ns", "trace_id", "span_id", "parent_span_id", "source", "unpriced_reason",
    "cost_other_usd", "ttfc_s", "reservation_id",
)  # fmt: skip


def parquet_path(history: Path, segment: int) -> Path:
    return history / f"segment-{segment:08d}.parquet"


def _money(value: Any) -> str | None:
    return None if value is None else format(value, "f")


def export_row(r: CallRecord) -> list[Any]:
    """The export's values of ``r`` (:data:`EXPORT_COLUMNS`, in order)."""
    t = r.tokens
    start = datetime.fromtimestamp(r.start_ns / 1e9, UTC).isoformat().replace("+00:00", "Z")
    return [
        r.trace_id + r.span_id, start, round(max(r.end_ns - r.start_ns, 0) / 1e6, 3), r.tenant, r.service,
        r.workflow, r.user, r.session, r.provider, r.model, r.operation, t.input, t.output, t.cache_read,
        t.cache_write, t.reasoning, r.tokens_estimated, r.cost_status, _money(r.cost_total),
        _money(r.cost_input), _money(r.cost_output), _money(r.cost_cache_read), _money(r.cost_cache_write),
        r.error_type, r.pricing_version, r.project, outcome_of(r),
    ]  # fmt: skip


def _extra_row(r: CallRecord) -> list[Any]:
    return [
        r.start_ns, r.end_ns, r.trace_id, r.span_id, r.parent_span_id, r.source, r.unpriced_reason,
        _money(r.cost_other), r.ttfc_s, r.reservation_id,
    ]  # fmt: skip


def compact_segment(ledger_dir: Path, history: Path, segment: int) -> int:
    """Write the Parquet file of closed ``segment``; returns its rows. Imports pyarrow (a child's job)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ledger = Ledger(ledger_dir, fsync="never")
    seen: set[str] = set()
    columns: list[list[Any]] = [[] for _ in range(len(EXPORT_COLUMNS) + len(EXTRA_COLUMNS))]
    for line in ledger.read(Position(segment, 0)):
        if line.end.segment != segment:
            break
        if line.payload[:1] == b"{" or line.key in seen:
            continue  # a correction, or a line a failed commit wrote twice
        try:
            record = record_from_json(line.payload)
        except (ValueError, KeyError, TypeError):
            continue  # unreadable: skipped by every reader
        seen.add(line.key)
        for column, value in zip(columns, export_row(record) + _extra_row(record), strict=True):
            column.append(value)
    types = {
        "duration_ms": pa.float64(), "tokens_estimated": pa.bool_(), "ttfc_s": pa.float64(),
        **{c: pa.int64() for c in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
                                   "reasoning_tokens", "start_ns", "end_ns")},
    }  # fmt: skip
    names = EXPORT_COLUMNS + EXTRA_COLUMNS
    schema = pa.schema(
        [pa.field(n, types.get(n, pa.string())) for n in names],
        metadata={"costspan.history.format": HISTORY_FORMAT, "costspan.ledger.segment": str(segment)},
    )
    table = pa.table(dict(zip(names, columns, strict=True)), schema=schema)
    private_dir(history)
    final = parquet_path(history, segment)
    temp = final.with_suffix(".parquet.tmp")
    with open(temp, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)
        pq.write_table(table, fh, compression="zstd", row_group_size=128 * 1024)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temp, final)
    dir_fd = os.open(history, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    rows: int = table.num_rows
    return rows


def main(argv: list[str]) -> int:
    with contextlib.suppress(OSError):
        os.nice(19)  # the server's ingest and queries come first
    ledger_dir, history = Path(argv[0]), Path(argv[1])
    private_dir(history)
    # one child at a time, even across a restart (a killed server's child may still be running)
    lock = private_open(history / "compact.lock", os.O_RDWR)
    fcntl.flock(lock, fcntl.LOCK_EX)
    for stray in history.glob("*.parquet.tmp"):
        stray.unlink(missing_ok=True)
    for segment in (int(s) for s in argv[2:]):
        if parquet_path(history, segment).exists():
            continue  # done by the child before
        rows = compact_segment(ledger_dir, history, segment)
        sys.stdout.write(f"{segment} {rows}\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
