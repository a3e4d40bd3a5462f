"""SIGKILL the server while its child compacts a ledger segment to Parquet; restart; nothing lost, nothing twice."""

from __future__ import annotations

import csv
import io
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from costspan.processor.store._ledger import Ledger
from tests.integration.processor.test_processor_crash import _batch, _free_port, _key, _start


def _compaction_children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"costspan.processor.store._compact" in cmdline:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.slow
@pytest.mark.parametrize("also_kill_child", [False, True], ids=["child-runs-on", "child-killed-too"])
def test_sigkill_during_compaction_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, also_kill_child: bool
) -> None:
    monkeypatch.setenv("COSTSPAN_SEGMENT_BYTES", "32768")  # a segment closes every ~50 calls
    port = _free_port()
    server = _start(tmp_path, port)
    acked: list[int] = []
    stop = threading.Event()

    def client() -> None:
        next_id = 1
        with httpx.Client(timeout=5, headers={"Content-Type": "application/x-protobuf"}) as http:
            while not stop.is_set():
                try:
                    response = http.post(f"http://127.0.0.1:{port}/v1/traces", content=_batch(next_id, 50))
                except httpx.TransportError:
                    return  # the server died mid-request: this batch was never acknowledged
                if response.status_code == 200:
                    acked.extend(range(next_id, next_id + 50))
                next_id += 50

    sender = threading.Thread(target=client)
    sender.start()
    children: list[int] = []
    deadline = time.monotonic() + 30
    while not children and time.monotonic() < deadline:
        children = _compaction_children(server.pid)
    assert children, "no compaction child seen"
    server.send_signal(signal.SIGKILL)  # while the child compacts
    if also_kill_child:
        for child in children:
            os.kill(child, signal.SIGKILL)
    server.wait(10)
    stop.set()
    sender.join(10)
    assert len(acked) >= 50

    restarted = _start(tmp_path, port)
    try:
        deadline = time.monotonic() + 30
        segments = Ledger(tmp_path / "ledger", fsync="never").segments()
        history = tmp_path / "history"
        while time.monotonic() < deadline and len(list(history.glob("*.parquet"))) < len(segments) - 1:
            time.sleep(0.2)  # the restarted server compacts every closed segment
        assert len(list(history.glob("*.parquet"))) == len(segments) - 1 > 0
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        export = httpx.get(f"http://127.0.0.1:{port}/api/usage/export", params={"format": "csv"}, timeout=30)
        assert export.status_code == 200
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(30)
    for child in children:  # an orphaned child finished its segment (or was killed): none left behind
        deadline = time.monotonic() + 30
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert not list(history.glob("*.tmp"))

    keys = Counter(line.key for line in Ledger(tmp_path / "ledger", fsync="never").read())
    assert max(keys.values()) == 1
    assert [n for n in acked if _key(n) not in keys] == []
    requests = sum(
        float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith("costspan_requests_total{")
    )
    assert requests == len(keys)
    rows = list(csv.reader(io.StringIO(export.text)))[1:]
    ids = Counter(row[0] for row in rows)
    assert len(rows) == len(keys) and max(ids.values()) == 1  # every call once, from Parquet + the JSON tail
    assert set(ids) == set(keys)
