"""The usage API benchmark still runs end to end (tiny sizes; the figures come from running it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks import bench_api


def test_bench_api_runs_through_the_store_and_a_server_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench_api.run(calls=3000, tenants=3, days=3, requests=2, data_dir=tmp_path / "store", workers=1)
    out = capsys.readouterr().out
    assert "loaded 3,000 calls through the store's write path" in out
    # the load saves the usage index's snapshot: both starts load it and replay nothing
    assert "snapshot none loaded" not in out and "3000 ledger record(s) replayed" not in out
    assert out.count("0 ledger record(s) replayed") == 2 and "restart: server ready" in out
    assert "3000 record(s) in all" in out
    assert sum(line.startswith("/") for line in out.splitlines()) == len(bench_api.ROUTES)
    assert f"restart: {len(bench_api.ROUTES)}/{len(bench_api.ROUTES)} answers the same" in out
    assert "export csv [tenant]" in out and "export json [admin]" in out


def test_generated_workload_is_deterministic_and_unique() -> None:
    a = bench_api.generate_chunk(0, 500, tenants=4, days=3, now=1_800_000_000)
    b = bench_api.generate_chunk(0, 500, tenants=4, days=3, now=1_800_000_000)
    assert a == b and len({r.key for r in a}) == 500
    assert all(r.start_ns < 1_800_000_000 * 10**9 for r in a)
    assert {r.cost_status for r in a} == {"priced", "unpriced"}
    assert all(r.project.startswith("proj-") for r in a)
