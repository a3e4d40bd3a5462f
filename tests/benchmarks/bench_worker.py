"""Ingest worker CPU per span, in one process: what an ingest worker of `costspan serve` does with a body.

    .venv/bin/python -m tests.benchmarks.bench_worker [--batch 512] [--bodies 20] [--repeats 7]
        [--unique-values] [--profile]

Builds the 512-span protobuf batch of :mod:`tests.benchmarks.bench_ingest` (``template()``) with
unique ids per body, then times ``process_body(..., keep_records=False)`` plus pickling the result
the way a process pool sends it back. Reports microseconds per span, the median of ``--repeats``
runs over ``--bodies`` bodies (single process, so it is steadier than the server benchmark on a
shared machine), and the best run. ``--unique-values`` also gives every span of every body its own
input token count and response id, and output and cache-read counts that vary (the template repeats
them from one body to the next, which flatters any cache of decoded values). ``--profile`` prints
the top of a cProfile of one run instead.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from multiprocessing.reduction import ForkingPickler
from typing import Final

from costspan.pricing import default_pricer
from costspan.processor.ingest._normalize import Normalizer
from costspan.processor.ingest._otlp import PROTOBUF
from costspan.processor.ingest._worker import process_body
from tests.benchmarks.bench_ingest import template

LIMIT = 64 * 1024 * 1024


_VARIED: Final = {
    "gen_ai.usage.input_tokens": lambda n: 1000 + n % 100_003,
    "gen_ai.usage.output_tokens": lambda n: 50 + n % 997,
    "gen_ai.usage.cache_read.input_tokens": lambda n: n % 1009,
}


def bodies(batch: int, count: int, *, unique_values: bool = False) -> list[bytes]:
    """``count`` serialized requests of ``batch`` spans, every span with its own trace and span id."""
    request = template(batch)
    spans = request.resource_spans[0].scope_spans[0].spans
    out = []
    next_id = 1
    for _ in range(count):
        for span in spans:
            raw = next_id.to_bytes(8, "big")
            span.trace_id = raw * 2
            span.span_id = raw
            if unique_values:
                for kv in span.attributes:
                    if kv.key in _VARIED:
                        kv.value.int_value = _VARIED[kv.key](next_id)
                    elif kv.key == "gen_ai.response.id":
                        kv.value.string_value = f"chatcmpl-{next_id:012d}"
            next_id += 1
        out.append(request.SerializeToString())
    return out


def run_once(normalizer: Normalizer, payloads: list[bytes]) -> int:
    """Process and pickle every payload; returns the number of records stored."""
    stored = 0
    for body in payloads:
        result = process_body(normalizer, body, PROTOBUF, "", LIMIT, keep_records=False)
        if result.status != 200 or result.batch is None:
            raise SystemExit(f"body refused: {result.status} {result.message}")
        ForkingPickler.dumps(result)
        stored += len(result.batch)
    return stored


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--bodies", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--unique-values", action="store_true", help="token counts and response ids never repeat")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one run instead")
    args = parser.parse_args(argv)

    normalizer = Normalizer(default_pricer())
    payloads = bodies(args.batch, args.bodies, unique_values=args.unique_values)
    spans = args.batch * args.bodies
    if run_once(normalizer, payloads[:2]) != 2 * args.batch:  # warm-up: pricing caches, imports
        raise SystemExit("not every span was stored")
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(run_once, normalizer, payloads)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return 0
    per_span = []
    for _ in range(args.repeats):
        started = time.process_time()
        run_once(normalizer, payloads)
        per_span.append((time.process_time() - started) / spans * 1e6)
    print(
        f"ingest worker: {statistics.median(per_span):.2f} us/span median, {min(per_span):.2f} best "
        f"({args.repeats} runs of {args.bodies} bodies x {args.batch} spans, process_body + pickle"
        f"{', unique values' if args.unique_values else ''})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
