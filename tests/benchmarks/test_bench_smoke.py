"""The benchmarks still run (a few iterations; the figures come from `make bench`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks import bench_check_under_ingest, bench_export, bench_pricing, bench_realistic


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


@pytest.mark.slow
def test_realistic_benchmark_runs(tmp_path: Path) -> None:
    summary = bench_realistic.run(3000, tmp_path, requests=3, export_requests=1, live_rate=600)
    assert summary["calls"] == 3000 and len(summary["rss_mib"]) == 10
    assert summary["calls_stored"] >= 3000 and summary["export_complete"]
    assert summary["restart_same_usage"] and summary["restart_s"] > 0
    assert 0 < summary["rss_base_mib"] <= summary["rss_peak_mib"]
    routes = summary["routes"]
    for path in ("/v1/usage", "/api/usage/metrics/realtime", "/api/usage/metrics/aggregates", "/api/usage/export"):
        assert any(label.startswith(path) for label in routes), path
    assert all(0 < r["quiet"][0] <= r["quiet"][1] and 0 < r["busy"][0] <= r["busy"][1] for r in routes.values())


@pytest.mark.slow
def test_export_benchmark_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_export.main(["--calls", "12000", "--segment-mib", "1", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "compacted 1 closed segment(s)" in out and "[same bytes]" in out
