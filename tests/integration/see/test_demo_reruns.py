"""``costspan demo`` run twice over one data dir: the second run says it adds to the first one's calls;
``--fresh`` starts over (and deletes only a costspan data dir); the progress line moves as calls end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from costspan.processor._demo.command import _prepare_data_dir

BIN = Path(sys.executable).parent
PROGRESS = re.compile(r"^  calls (\d+)/(\d+)  ok \d+", re.M)
TOTAL = re.compile(r"^total +(\d+) ", re.M)


def demo(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "costspan"), "demo", "--port", "0", "--exit-after-workload", *argv],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.slow
def test_a_second_run_adds_to_the_first_and_fresh_starts_over(tmp_path: Path) -> None:
    data = tmp_path / "demo-data"
    first = demo("--calls", "2", env={"COSTSPAN_DATA_DIR": str(data)})  # the data dir from the environment
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "previous run" not in first.stdout
    assert (data / "ledger").is_dir()
    # progress: a line as calls end, never a repeated one, never "0/..." (before the first call ends it
    # says the services are starting), ending at the total
    done = [(int(d), int(t)) for d, t in PROGRESS.findall(first.stdout)]
    assert done and all(d > 0 for d, _ in done), first.stdout
    assert [d for d, _ in done] == sorted({d for d, _ in done}), first.stdout
    assert done[-1] == (6, 6)
    assert "starting the demo services" in first.stdout
    first_total = TOTAL.search(first.stdout)
    assert first_total is not None and int(first_total.group(1)) == 6

    second = demo("--calls", "2", "--data-dir", str(data))
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"adding to the previous run's data in {data} (--fresh starts over)" in second.stdout
    second_total = TOTAL.search(second.stdout)
    assert second_total is not None and int(second_total.group(1)) == 12  # both runs' calls

    # --fresh deletes the earlier data (what the next run would otherwise add to)
    assert _prepare_data_dir(data, fresh=False) is True
    assert _prepare_data_dir(data, fresh=True) is False
    assert not data.exists()


def test_fresh_deletes_only_a_costspan_data_dir(tmp_path: Path) -> None:
    mine = tmp_path / "not-costspan"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    proc = demo("--fresh", "--data-dir", str(mine))
    assert proc.returncode == 2
    assert proc.stderr == (
        f"costspan demo: --fresh: {mine} is not a costspan data dir; delete it yourself or pick another --data-dir\n"
    )
    assert (mine / "thesis.tex").read_text() == "years of work"
    assert _prepare_data_dir(tmp_path / "missing", fresh=True) is False  # nothing to delete: fine
