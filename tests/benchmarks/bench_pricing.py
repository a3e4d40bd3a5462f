"""Pricing one call: costspan's ``Pricer.price_call`` beside genai-prices' ``calc_price``, in one run.

Run: ``make bench`` (or ``.venv/bin/python -m tests.benchmarks.bench_pricing``). Prints the median time
per call after warm-up for each model and engine, the ratio, and whether costspan meets the 2 µs goal.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import genai_prices

from costspan.pricing import Usage, default_pricer

GOAL_NS = 2_000
CALLS = (
    # model, provider, input, cache read, output
    ("gpt-4o-2024-08-06", "openai", 1_800, 1_024, 350),
    ("claude-sonnet-4-5-20250929", "anthropic", 6_500, 5_000, 700),
    ("gemini-2.5-pro", "google", 250_000, 0, 2_000),
    ("deepseek-chat", "deepseek", 2_000, 500, 600),
)


@dataclass(frozen=True, slots=True)
class Result:
    model: str
    costspan_ns: float  # the call's time as a datetime, as genai-prices takes it
    costspan_epoch_ns: float  # the call's time as epoch seconds, as the processor passes it
    genai_prices_ns: float


def _median_ns(fn: Callable[[], object], batches: int, per_batch: int) -> float:
    for _ in range(per_batch * 5):  # warm-up: caches, branch predictors, allocator
        fn()
    samples = []
    for _ in range(batches):
        start = time.perf_counter_ns()
        for _ in range(per_batch):
            fn()
        samples.append((time.perf_counter_ns() - start) / per_batch)
    return statistics.median(samples)


def run(batches: int = 200, per_batch: int = 500) -> list[Result]:
    pricer = default_pricer()
    at = datetime(2025, 11, 3, 14, 0, tzinfo=UTC)
    epoch = at.timestamp()
    results = []
    for model, provider, inp, cached, out in CALLS:
        usage = Usage(input_tokens=inp, cache_read_tokens=cached, output_tokens=out)
        gp_usage = genai_prices.Usage(input_tokens=inp, cache_read_tokens=cached, output_tokens=out)
        ours = pricer.price_call(model, usage, provider=provider, at=at)
        theirs = genai_prices.calc_price(gp_usage, model, provider_id=provider, genai_request_timestamp=at)
        assert ours.total == theirs.total_price, (model, ours.total, theirs.total_price)

        def costspan_call(m: str = model, p: str = provider, u: Usage = usage) -> object:
            return pricer.price_call(m, u, provider=p, at=at)

        def costspan_epoch_call(m: str = model, p: str = provider, u: Usage = usage) -> object:
            return pricer.price_call(m, u, provider=p, at=epoch)

        def genai_call(m: str = model, p: str = provider, u: genai_prices.Usage = gp_usage) -> object:
            return genai_prices.calc_price(u, m, provider_id=p, genai_request_timestamp=at)

        results.append(
            Result(
                model,
                _median_ns(costspan_call, batches, per_batch),
                _median_ns(costspan_epoch_call, batches, per_batch),
                _median_ns(genai_call, max(batches // 10, 5), max(per_batch // 10, 20)),
            )
        )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--per-batch", type=int, default=500)
    args = parser.parse_args()
    results = run(args.batches, args.per_batch)
    print("median µs per call after warm-up (at= a datetime for both; costspan also with epoch seconds)")
    print(f"{'model':<30} {'costspan':>9} {'(epoch)':>9} {'genai-prices':>13} {'speed-up':>9}")
    for r in results:
        ratio = r.genai_prices_ns / r.costspan_ns
        print(
            f"{r.model:<30} {r.costspan_ns / 1000:>9.2f} {r.costspan_epoch_ns / 1000:>9.2f} "
            f"{r.genai_prices_ns / 1000:>13.2f} {ratio:>8.1f}x"
        )
    typical = statistics.median([r.costspan_ns for r in results] + [r.costspan_epoch_ns for r in results])
    worst = max(results, key=lambda r: max(r.costspan_ns, r.costspan_epoch_ns))
    verdict = "meets" if typical <= GOAL_NS else "MISSES"
    print(f"median over these calls: {typical / 1000:.2f} µs per call: {verdict} the {GOAL_NS / 1000:.0f} µs goal")
    slowest = max(worst.costspan_ns, worst.costspan_epoch_ns)
    print(f"slowest case: {worst.model} at {slowest / 1000:.2f} µs")
    return 0 if typical <= GOAL_NS else 1


if __name__ == "__main__":
    raise SystemExit(main())
