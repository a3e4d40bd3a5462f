"""Export benchmark: the usage export from the JSON-lines ledger vs. from Parquet (DuckDB) + the JSON tail.

    .venv/bin/python -m tests.benchmarks.bench_export [--calls 500000] [--segment-mib 64]

Shape (as :mod:`tests.benchmarks.bench_realistic`): 50 tenants, 2,000 users, 300 workflows, 20 models,
sessions of ~10 calls, start times uniform over the last 30 days at any minute, random 128-bit trace
and 64-bit span ids, ~30 % with cache reads. Stored by a real :class:`Store` (fsync never: the
benchmark is about reading) in ledger segments of ``--segment-mib``; then:

1. the whole 30-day export (CSV and JSON), every segment read from its JSON lines (no Parquet: what
   exports did before the columnar history), rows/s;
2. the closed segments compacted to Parquet by the store's child process (wall time, file sizes);
3. the same exports again: compacted segments through DuckDB, the open segment from its JSON lines,
   rows/s, and the ratio; the rows are checked to be the same;
4. one tenant's export of one day (the route's typical query), ms.

The export is driven through the route's body generator (what ``GET /api/usage/export`` streams),
in process, so the figure is the export's own cost, not HTTP's.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from costspan.processor.api._routes_calls import _export_body
from costspan.processor.store._history import History, export_text
from costspan.processor.store._records import CallRecord
from costspan.processor.store._store import Store, StoreConfig
from tests.support.records import call_record

__all__ = ["main"]

DAY_NS = 86_400 * 10**9
FORMATS: tuple[Literal["csv", "json"], ...] = ("csv", "json")
MODELS = [
    (p, f"{p}-model-{i}") for p in ("openai", "anthropic", "google", "mistral", "cohere", "xai") for i in range(4)
][:20]


def _calls(n: int, now_ns: int, rng: random.Random) -> list[CallRecord]:
    out = []
    for _ in range(n):
        tenant = rng.randrange(50)
        provider, model = MODELS[rng.randrange(len(MODELS))]
        start = now_ns - rng.randrange(30 * DAY_NS)
        out.append(
            call_record(
                0,
                start_ns=start,
                latency_ms=rng.uniform(100, 4000),
                cost=f"{rng.uniform(0.0001, 0.05):.6f}",
                tokens=(
                    rng.randrange(50, 8000),
                    rng.randrange(10, 1200),
                    rng.randrange(0, 2000) if rng.random() < 0.3 else 0,
                ),
                trace_id=f"{rng.getrandbits(128):032x}",
                span_id=f"{rng.getrandbits(64):016x}",
                tenant=f"tenant-{tenant:02d}",
                user=f"user-{rng.randrange(2000):04d}",
                workflow=f"wf-{rng.randrange(300):03d}",
                session=f"s-{rng.randrange(max(n // 10, 1)):07d}",
                provider=provider,
                model=model,
                service=f"svc-{tenant % 7}",
            )
        )
    return out


def _export(
    fmt: Literal["csv", "json"], store: Store, history: History, window: tuple[int, int], tenant: str | None = None
) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    digest = hashlib.sha256()
    size = 0
    for chunk in _export_body(fmt, store.ledger.directory, history, *window, (tenant, None, None)):
        data = chunk.encode()
        size += len(data)
        digest.update(data)
    return time.perf_counter() - t0, size, digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=500_000)
    parser.add_argument("--segment-mib", type=int, default=64)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    rng = random.Random(16)
    now_ns = time.time_ns()
    with tempfile.TemporaryDirectory(prefix="costspan-bench-export-") as tmp:
        data_dir = args.data_dir or Path(tmp)
        config = StoreConfig(
            data_dir=data_dir, fsync="never", snapshot_interval_s=3600, segment_bytes=args.segment_mib << 20
        )
        store = Store(config)
        store.start()
        t0 = time.perf_counter()
        for first in range(0, args.calls, 10_000):
            store.ingest(_calls(min(10_000, args.calls - first), now_ns, rng), timeout=120)
        print(
            f"stored {args.calls:,} calls in {time.perf_counter() - t0:.1f} s, {len(store.ledger.segments())} segments"
        )
        window = (now_ns - 31 * DAY_NS, now_ns + DAY_NS)
        plain = History(store.ledger.directory, data_dir / "no-parquet")

        results: dict[str, dict[str, tuple[float, int, str]]] = {"json-lines": {}, "parquet": {}}
        for fmt in FORMATS:
            results["json-lines"][fmt] = _export(fmt, store, plain, window)
        t0 = time.perf_counter()
        store.history.poll(store.ledger.segments(), store.ledger.position.segment)
        store.history.wait(3600)
        compaction_s = time.perf_counter() - t0
        files = sorted(store.history.directory.glob("*.parquet"))
        parquet_mib = sum(p.stat().st_size for p in files) / 2**20
        ledger_mib = sum(p.stat().st_size for p in store.ledger.directory.glob("*.log")) / 2**20
        print(
            f"compacted {len(files)} closed segment(s) in a nice-19 child: {compaction_s:.1f} s wall, "
            f"{parquet_mib:.1f} MiB Parquet for {ledger_mib:.1f} MiB of JSON lines"
        )
        for fmt in FORMATS:
            results["parquet"][fmt] = _export(fmt, store, store.history, window)
        for fmt in FORMATS:
            before, after = results["json-lines"][fmt], results["parquet"][fmt]
            same = "same bytes" if before[2] == after[2] else "bytes differ (same rows: see the component tests)"
            print(
                f"export {fmt:4} {args.calls:,} rows: JSON lines {args.calls / before[0]:>10,.0f} rows/s "
                f"({before[0]:.2f} s) | Parquet+tail {args.calls / after[0]:>10,.0f} rows/s ({after[0]:.2f} s) "
                f"x{before[0] / after[0]:.1f}  [{same}]"
            )
        closed_rows = sum(1 for line in store.ledger.read() if line.end.segment < store.ledger.position.segment)
        for fmt in FORMATS:
            t0 = time.perf_counter()
            for _ in export_text(files, fmt, *window, None, None, None):
                pass
            seconds = time.perf_counter() - t0
            print(
                f"  of which the {closed_rows:,} rows of the compacted segments ({fmt}, DuckDB): "
                f"{closed_rows / seconds:,.0f} rows/s; the JSON tail holds {args.calls - closed_rows:,} rows"
            )
        day_start = datetime.fromtimestamp(now_ns / 1e9, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        day = int(day_start.timestamp()) * 10**9 - DAY_NS
        for label, history in (("JSON lines", plain), ("Parquet+tail", store.history)):
            seconds, size, _ = _export("csv", store, history, (day, day + DAY_NS), "tenant-07")
            print(f"one tenant, one day, CSV ({label}): {seconds * 1000:.0f} ms, {size:,} bytes")
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
