"""The usage API benchmark still runs end to end (tiny sizes; the figures come from running it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks import bench_api


def test_bench_api_runs_through_the_store_and_the_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench_api.run(calls=3000, tenants=3, days=3, requests=2, data_dir=tmp_path / "store")
    out = capsys.readouterr().out
    assert "loaded 3,000 calls" in out and "index replayed 3,000 records" in out
    assert sum(line.startswith("/") for line in out.splitlines()) == len(bench_api.ROUTES)
    assert "export csv [tenant]: 1,000 rows" in out  # every call of tenant-001 (one in three)
    assert "export json [admin]: 999 rows" in out  # yesterday's calls: (i // 3) % 3 == 1 for 333 values of i // 3


def test_bench_api_index_only_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench_api.run_index_only(calls=2000, tenants=2, days=3, requests=2, data_dir=tmp_path / "index")
    assert "worst p99" in capsys.readouterr().out
