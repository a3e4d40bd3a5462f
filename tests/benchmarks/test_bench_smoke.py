"""The benchmarks still run (a few iterations; the figures come from `make bench`)."""

from __future__ import annotations

from tests.benchmarks import bench_pricing


def test_pricing_benchmark_runs_and_agrees_with_genai_prices() -> None:
    results = bench_pricing.run(batches=3, per_batch=20)
    assert [r.model for r in results] == [c[0] for c in bench_pricing.CALLS]
    assert all(r.costspan_ns > 0 and r.genai_prices_ns > 0 for r in results)
