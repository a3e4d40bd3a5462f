"""Crash and replay: counters, reservations and fired thresholds come back exactly after ``kill -9``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from costspan.pricing import Pricer
from costspan.processor.budgets import BudgetBook, Call, CostEstimator
from tests.component.budgets.conftest import FakeClock

ROOT = Path(__file__).resolve().parents[3]
NOW = 1_773_144_000.0  # 2026-03-10T12:00:00Z

CHILD = """
import json, os, random, signal, sys
from decimal import Decimal
from costspan.processor.budgets import BudgetBook, Call

t = [float(sys.argv[2])]
book = BudgetBook(clock=lambda: t[0], data_dir=sys.argv[1], fsync="never", snapshot_every=int(sys.argv[3]))
book.put_budget({"id": "g", "period": "day", "limit": "5"}, actor="ops")
book.put_budget({"id": "t", "scope": {"tenant": "*"}, "period": "month", "limit": "0.3", "thresholds": [10, 50]})
book.put_budget({"id": "r", "scope": {"tenant": "acme"}, "period": "hour", "limit": "40", "unit": "requests"})
rng = random.Random(7)
held = []
for i in range(400):
    tenant = rng.choice(["acme", "globex", "initech"])
    call = Call(tenant=tenant, provider="openai", model=rng.choice(["gpt-4o", "gpt-4o-mini"]),
                input_tokens=rng.randrange(0, 3000), max_tokens=rng.randrange(1, 2000))
    op = rng.random()
    if op < 0.5:
        d = book.check(call)
        if d.reservation_id:
            held.append(d.reservation_id)
    elif op < 0.75 and held:
        cost = Decimal(rng.randrange(0, 10**6)) / 10**8
        book.settle(held.pop(rng.randrange(len(held))), cost, rng.randrange(0, 5000))
    elif op < 0.8 and held:
        book.release(held.pop(0))
    else:
        book.record(call, Decimal(rng.randrange(0, 10**6)) / 10**8, 100)
    t[0] += rng.choice([1, 30, 600])
state = {"status": [s.to_json() for s in book.status()], "open": book.open_reservations(), "t": t[0],
         "alerts": len(book.alerts)}
print(json.dumps(state), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("snapshot_every", [10_000, 37])  # journal only; snapshots + journal tail
def test_state_after_kill_9_is_exact(tmp_path: Path, pricer: Pricer, snapshot_every: int) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("pricing", "instrumentation", "processor")),
    }
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), str(NOW), str(snapshot_every)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    before: dict[str, Any] = json.loads(proc.stdout)
    assert before["alerts"] > 0 and before["open"] > 0
    clock = FakeClock(before["t"])
    book = BudgetBook(clock=clock, estimator=CostEstimator(pricer, clock=clock), data_dir=tmp_path, fsync="never")
    assert [s.to_json() for s in book.status()] == before["status"]
    assert book.open_reservations() == before["open"]
    if snapshot_every < 10_000:
        assert (tmp_path / "budgets.snapshot.json").exists()
    # and the recovered book keeps working and recovers again after a clean close
    book.record(Call(tenant="acme"), Decimal("0.01"))
    after = [s.to_json() for s in book.status()]
    book.close()
    book.close()
    again = BudgetBook(clock=clock, estimator=CostEstimator(pricer, clock=clock), data_dir=tmp_path)
    assert [s.to_json() for s in again.status()] == after
    assert (tmp_path / "budgets.journal.jsonl").stat().st_size == 0  # the close snapshot holds it all
    assert [e["actor"] for e in again.audit_log()] == ["ops", "system", "system"]


def test_a_torn_last_line_is_dropped(tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    book = BudgetBook(clock=clock, data_dir=tmp_path, fsync="always")
    book.put_budget({"id": "g", "period": "day", "limit": "5"})
    book.record(Call(), Decimal("1.25"))
    journal = tmp_path / "budgets.journal.jsonl"
    with journal.open("ab") as fh:
        fh.write(b'[99,"c",[["g","1')  # the write the crash interrupted
    again = BudgetBook(clock=clock, data_dir=tmp_path)
    (row,) = again.status("g")
    assert row.spent == Decimal("1.25")
    assert "torn last line" in caplog.text
    assert journal.read_bytes().endswith(b"\n")


def test_a_corrupt_journal_fails_loudly(tmp_path: Path, clock: FakeClock) -> None:
    book = BudgetBook(clock=clock, data_dir=tmp_path)
    book.put_budget({"id": "g", "period": "day", "limit": "5"})
    book.record(Call(), Decimal("1.25"))
    journal = tmp_path / "budgets.journal.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(lines[0] + b"garbage\n" + b"".join(lines[1:]))
    with pytest.raises(ValueError, match="is corrupt at byte"):
        BudgetBook(clock=clock, data_dir=tmp_path)


def test_a_reservation_the_journal_could_not_write_holds_nothing(
    tmp_path: Path, pricer: Pricer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from costspan.processor.budgets._journal import Journal

    clock = FakeClock(NOW)
    book = BudgetBook(clock=clock, estimator=CostEstimator(pricer, clock=clock), data_dir=tmp_path, fsync="never")
    book.put_budget({"id": "g", "period": "day", "limit": "1"})
    call = Call(tenant="acme", provider="openai", model="gpt-4o", input_tokens=1000, max_tokens=1000)
    assert book.check(call).allowed
    (before,) = book.status("g")
    append = Journal.append

    def disk_full(self: Journal, seq: int, event: list[Any]) -> None:
        if event[0] == "r":
            raise OSError(28, "No space left on device")
        append(self, seq, event)

    monkeypatch.setattr(Journal, "append", disk_full)
    with pytest.raises(OSError, match="No space left"):
        book.check(call)
    monkeypatch.undo()
    assert book.open_reservations() == 1
    assert book.status("g")[0].reserved == before.reserved
    assert book.check(call).allowed  # the book carries on
    book.close()
    restarted = BudgetBook(clock=clock, data_dir=tmp_path)
    assert restarted.open_reservations() == 2
    assert restarted.status("g")[0].reserved == 2 * before.reserved
    restarted.close()


def test_bad_fsync_policy_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fsync must be"):
        BudgetBook(data_dir=tmp_path, fsync="sometimes")  # type: ignore[arg-type]


def test_the_hand_written_reserve_and_settle_lines_are_the_json_lines(tmp_path: Path) -> None:
    from costspan.processor.budgets._journal import Journal
    from costspan.processor.budgets._state import encode_event

    event: list[Any] = [
        "r",
        "abc-1",
        1773144000.123456,
        1773144300.5,
        ("acmé", None, 'w"x', None, None, "openai", "gpt-4o"),
        [("g", Decimal("0.0125000")), ("t|acmé", Decimal(2000))],
    ]
    settle: list[Any] = ["s", "abc-1", [("g", Decimal("0.004")), ("t|acmé", Decimal(1200))]]
    journal = Journal(tmp_path, fsync="never")
    journal.append(7, event)
    journal.append(8, settle)
    journal.close()
    lines = (tmp_path / "budgets.journal.jsonl").read_text(encoding="utf-8").splitlines()
    assert lines == [json.dumps([n, *encode_event(e)], separators=(",", ":")) for n, e in ((7, event), (8, settle))]
