"""Columnar history: closed ledger segments as Parquet files, compacted by a child process, read by DuckDB.

``<data dir>/history/segment-<n>.parquet`` holds the calls of closed ledger segment ``n`` (see
:mod:`._compact` for the columns). :class:`History` starts the compaction child (``nice 19``, its
own interpreter: the server's GIL is never held by the Parquet writer) from the store's periodic
work, one at a time, and never waits for it. :func:`export_text` answers exports: the compacted
segments through DuckDB (embedded, its own threads, no GIL), the rest (the open segment, any not yet
compacted) from the JSON lines. pyarrow and duckdb are imported only there and in the child, so a
server that never exports does not load them.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, Literal

import costspan
from costspan.processor.store._compact import EXPORT_COLUMNS, parquet_path
from costspan.processor.store._files import private_dir, private_file

__all__ = ["BATCH_SEGMENTS", "EXPORT_BATCH", "History", "export_text"]

logger = logging.getLogger(__name__)

#: Segments one compaction child takes at most.
BATCH_SEGMENTS: Final = 8
#: Rows a DuckDB batch of an export holds.
EXPORT_BATCH: Final = 32 * 1024


class History:
    """The Parquet files of ``directory`` and the compaction child. Driven by the store's writer thread."""

    def __init__(self, ledger_dir: Path, directory: Path, *, enabled: bool = True) -> None:
        self.ledger_dir = ledger_dir
        self.directory = directory
        self.enabled = enabled
        self.compactions = 0  # children that finished well
        self.failures = 0  # children that failed (their segments are tried again later)
        self._child: subprocess.Popen[bytes] | None = None

    def compacted(self) -> set[int]:
        found = set()
        if self.directory.is_dir():
            for path in self.directory.glob("segment-*.parquet"):
                try:
                    found.add(int(path.name[8:16]))
                except ValueError:
                    continue
        return found

    @property
    def running(self) -> bool:
        return self._child is not None and self._child.poll() is None

    def poll(self, segments: list[int], open_segment: int) -> None:
        """Reap a finished child; start one for the closed segments without a Parquet file. Never blocks."""
        if not self.enabled:
            return
        if self._child is not None:
            code = self._child.poll()
            if code is None:
                return
            self._reap(code)
        done = self.compacted()
        pending = [s for s in segments if s < open_segment and s not in done][:BATCH_SEGMENTS]
        if pending:
            self._start(pending)

    def _reap(self, code: int) -> None:
        self._child = None
        if code == 0:
            self.compactions += 1
            return
        self.failures += 1
        errors = self.directory / "compact.err"
        tail = errors.read_text(errors="replace")[-2000:] if errors.exists() else ""
        logger.error("history compaction failed (exit %d); the JSON segments still serve: %s", code, tail)

    def _start(self, segments: list[int]) -> None:
        private_dir(self.directory)
        env = dict(os.environ)
        # the child imports this very code, wherever this process found it (a worktree, a test's path)
        roots = [str(Path(p).parent) for p in costspan.__path__]
        env["PYTHONPATH"] = os.pathsep.join([*roots, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        with private_file(self.directory / "compact.err", "wb") as errors:
            self._child = subprocess.Popen(
                [sys.executable, "-m", "costspan.processor.store._compact", str(self.ledger_dir), str(self.directory)]
                + [str(s) for s in segments],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                env=env,
                close_fds=True,
            )
        logger.info("history compaction of segment(s) %s started (pid %d)", segments, self._child.pid)

    def wait(self, timeout: float) -> bool:
        """Wait for the running child (tests, benchmarks); True when none is left running."""
        if self._child is None:
            return True
        try:
            code = self._child.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        self._reap(code)
        return True

    def stop(self) -> None:
        """At close: end a running child (its temp file is removed by the next one). Safe twice."""
        if self._child is not None and self._child.poll() is None:
            self._child.terminate()
            try:
                self._child.wait(5)
            except subprocess.TimeoutExpired:
                self._child.kill()
                self._child.wait()
        self._child = None

    def drop_before(self, kept_segments: set[int]) -> None:
        """Remove the Parquet files whose ledger segment retention removed."""
        for segment in self.compacted() - kept_segments:
            if kept_segments and segment < min(kept_segments):
                parquet_path(self.directory, segment).unlink(missing_ok=True)


def _where(
    first_ns: int, end_ns: int, tenant: str | None, user: str | None, project: str | None
) -> tuple[str, list[Any]]:
    clauses = ["start_ns >= ?", "start_ns < ?"]
    params: list[Any] = [first_ns, end_ns]
    for column, value in (("tenant_id", tenant), ("user_id", user), ("project_id", project)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    return " AND ".join(clauses), params


def export_text(
    files: list[Path],
    fmt: Literal["csv", "json"],
    first_ns: int,
    end_ns: int,
    tenant: str | None,
    user: str | None,
    project: str | None,
) -> Iterator[str]:
    """The rows of Parquet ``files`` (in order) in the window and scope, as text: CSV lines without a
    header (Arrow's CSV writer: every string quoted), or JSON objects joined by commas (the caller
    frames the array, a comma between chunks). Streamed in batches of :data:`EXPORT_BATCH` rows."""
    if not files:
        return
    import duckdb
    import pyarrow.csv as pa_csv

    where, params = _where(first_ns, end_ns, tenant, user, project)
    sources = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
    if fmt == "csv":
        # as Python's csv module writes them (True/False, 100.0)
        written = {
            "tokens_estimated": "CASE WHEN tokens_estimated THEN 'True' ELSE 'False' END AS tokens_estimated",
            "duration_ms": "duration_ms::VARCHAR AS duration_ms",
        }
        columns = ", ".join(written.get(c, c) for c in EXPORT_COLUMNS)
        query = f"SELECT {columns} FROM read_parquet([{sources}]) WHERE {where}"
    else:
        columns = ", ".join(EXPORT_COLUMNS)
        rows = f"SELECT {columns} FROM read_parquet([{sources}]) WHERE {where}"
        query = f"SELECT to_json(t)::VARCHAR AS j FROM ({rows}) t"
    options = pa_csv.WriteOptions(include_header=False, quoting_style="needed")
    con = duckdb.connect(":memory:", config={"threads": 2, "memory_limit": "512MB"})
    try:
        for batch in con.sql(query, params=params).to_arrow_reader(EXPORT_BATCH):
            if not batch.num_rows:
                continue
            if fmt == "json":
                yield ",".join(batch.column(0).to_pylist())
            else:
                out = io.BytesIO()
                pa_csv.write_csv(batch, out, options)
                yield out.getvalue().decode()
    finally:
        con.close()
