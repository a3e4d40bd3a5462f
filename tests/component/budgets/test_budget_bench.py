"""The budget benchmark still runs (a few iterations; the figures come from running the script)."""

from __future__ import annotations

from tests.benchmarks import bench_budgets


def test_budget_benchmark_runs() -> None:
    figures = bench_budgets.run(n_local=300, n_remote=30)
    assert [f.goal_ns for f in figures][:1] == [bench_budgets.IN_PROCESS_GOAL_NS]
    assert all(f.median_ns > 0 and f.p99_ns >= f.median_ns for f in figures)
