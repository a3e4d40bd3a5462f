"""The built wheel installs cleanly with only ``[instrumentation]``: the app path works, the server says
which extra it needs.

Builds the wheel with ``pip wheel --no-deps`` and installs it into a fresh venv with the versions of
``requirements/dev.lock`` (pip's cache and the configured package indexes, nothing else).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

APP = textwrap.dedent(
    """
    from importlib.metadata import entry_points

    from costspan.instrumentation import CostspanInstrumentor

    names = [e.name for e in entry_points(group="opentelemetry_instrumentor")]
    print("entry point:", "costspan" in names, "instrumented:", CostspanInstrumentor().is_instrumented_by_opentelemetry)
    """
)


def _run(argv: list[str], cwd: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    # no PYTHONPATH: the venv must import the installed wheel, never this source tree
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith(("OTEL_", "COSTSPAN_"))}
    return subprocess.run(
        argv, cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.slow
def test_wheel_installs_with_only_the_instrumentation_extra(tmp_path: Path) -> None:
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(ROOT)], tmp_path
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("costspan-*-py3-none-any.whl")

    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    assert made.returncode == 0, made.stderr
    bin_dir = venv / "bin"
    installed = _run(
        [
            str(bin_dir / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "-c",
            str(ROOT / "requirements" / "dev.lock"),
            f"costspan[instrumentation] @ {wheel.as_uri()}",
        ],
        tmp_path,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    present = {
        line.split("==")[0].lower()
        for line in _run([str(bin_dir / "python"), "-m", "pip", "freeze"], tmp_path).stdout.split()
    }
    assert "opentelemetry-distro" in present and "costspan" in present
    assert not present & {"fastapi", "uvicorn", "pydantic-settings", "orjson", "prometheus-client"}

    # the app path: the package imports, and opentelemetry-instrument loads costspan by its entry point
    assert _run([str(bin_dir / "python"), "-c", "import costspan.instrumentation"], tmp_path).returncode == 0
    (tmp_path / "app.py").write_text(APP)
    app = _run(
        [str(bin_dir / "opentelemetry-instrument"), str(bin_dir / "python"), "app.py"],
        tmp_path,
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
    )
    assert (app.returncode, app.stdout) == (0, "entry point: True instrumented: True\n"), app.stderr[-3000:]

    # the CLI: what needs no server works; the server says which extra to install, in one line
    assert _run([str(bin_dir / "costspan"), "--version"], tmp_path).stdout.startswith("costspan ")
    priced = _run([str(bin_dir / "costspan"), "price", "--model", "gpt-4o", "--input-tokens", "1000"], tmp_path)
    assert priced.returncode == 0 and "total" in priced.stdout, priced.stderr
    for command in (["serve"], ["keys", "list"], ["demo"]):
        refused = _run([str(bin_dir / "costspan"), *command], tmp_path)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr, refused.stderr
        assert f"costspan {command[0]}: needs the processor extra" in refused.stderr
        assert refused.stderr.rstrip().endswith("pip install 'costspan[processor]'")
    assert not (tmp_path / "costspan-data").exists()
