"""The benchmarks still run (a few iterations; the figures come from `make bench`)."""

from __future__ import annotations

import pytest

from tests.benchmarks import bench_check_under_ingest, bench_pricing


def test_pricing_benchmark_runs_and_agrees_with_genai_prices() -> None:
    results = bench_pricing.run(batches=3, per_batch=20)
    assert [r.model for r in results] == [c[0] for c in bench_pricing.CALLS]
    assert all(r.costspan_ns > 0 and r.genai_prices_ns > 0 for r in results)


@pytest.mark.slow
def test_check_under_ingest_benchmark_runs() -> None:
    result = bench_check_under_ingest.run(seconds=1.0, body_mb=0.5)
    assert result.idle.checks > 0 and result.under_ingest.checks > 0
    assert 0 < result.under_ingest.p50_ms <= result.under_ingest.p99_ms <= result.under_ingest.max_ms
    assert result.exports > 0 and result.body_bytes > 400_000
