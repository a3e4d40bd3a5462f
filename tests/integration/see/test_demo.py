"""`costspan demo` end to end, non-interactively: server, fake provider, SDK workload, budgets, table."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_demo_runs_the_workload_and_prints_the_table(tmp_path: Path) -> None:
    data = tmp_path / "demo-data"
    proc = subprocess.run(
        [
            str(BIN / "costspan"),
            "demo",
            "--data-dir",
            str(data),
            "--port",
            "0",
            "--calls",
            "6",
            "--exit-after-workload",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    final = re.findall(r"calls (\d+)/(\d+)  ok (\d+)  degraded (\d+)  blocked (\d+)  errors (\d+)", out)[-1]
    done, total, ok, degraded, blocked, errors = map(int, final)
    assert done == total == 18 and errors == 0
    assert blocked > 0, out  # initech's hard budget stops calls before they are sent
    assert degraded > 0, out  # globex's adaptive budget moves calls to gpt-4o-mini
    assert ok + degraded + blocked == 18
    table = out.split("tenant ", 1)[1]
    for tenant in ("acme", "globex", "initech"):
        assert re.search(rf"^{tenant} +\S+/\S+ +\d+ ", table, re.M), table
    assert "openai/gpt-4o-mini" in table  # the degraded calls, priced at the fallback model
    total_line = re.search(r"^total +(\d+) +(\d+) +(\d+) +(\d+) +(\d+) +[0-9,]+ +([0-9.]+)$", table, re.M)
    # every call is on record with its outcome, the blocked ones too (at no cost); the server also counts
    # as degraded a call whose max_tokens the adaptive budget capped (the app only sees a model swap)
    assert total_line is not None, table
    calls, stored_ok, stored_degraded, stored_blocked, stored_errors = (int(total_line.group(i)) for i in range(1, 6))
    assert (calls, stored_blocked, stored_errors) == (ok + degraded + blocked, blocked, 0)
    assert stored_ok + stored_degraded == ok + degraded and stored_degraded >= degraded
    assert re.search(r"Dashboard: http://127\.0\.0\.1:\d+/dashboard#key=csk_", out)
    # everything it wrote stays under the one data dir
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo-data"]
    assert (data / "ledger").is_dir() and (data / "budgets").is_dir()


def test_demo_refuses_a_taken_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run(
            [str(BIN / "costspan"), "demo", "--data-dir", str(tmp_path / "d"), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert proc.returncode == 1
    assert "try --port 0" in proc.stderr


@pytest.mark.slow
def test_demo_serves_until_interrupted_then_stops_cleanly(tmp_path: Path) -> None:
    import signal
    import time

    proc = subprocess.Popen(
        [str(BIN / "costspan"), "demo", "--data-dir", str(tmp_path / "d"), "--port", "0", "--calls", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 300
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "Serving until Ctrl-C" in line or not line:
            break
    assert "Serving until Ctrl-C" in lines[-1], "".join(lines)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert "stopping" in out
