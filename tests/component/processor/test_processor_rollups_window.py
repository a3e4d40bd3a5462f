"""Per-minute rollups only for a recent window: older calls are summed in their hour and day only."""

from __future__ import annotations

import json
from decimal import Decimal

import orjson
import pytest

from costspan.processor.store._rollups import Rollups
from tests.support.records import call_record

NOW = 1_772_000_000 + 3 * 86400  # three days after the records' default start
START_S = 1_772_000_000


def _rollups(now: list[float]) -> Rollups:
    return Rollups(minute_detail_s=48 * 3600, clock=lambda: now[0])


def test_calls_older_than_the_window_get_no_minute_bucket_and_are_counted() -> None:
    now = [float(NOW)]
    rollups = _rollups(now)
    old = [call_record(i, start_ns=(START_S + 60 * i) * 10**9) for i in range(3)]
    recent = [call_record(10 + i, start_ns=(NOW - 600 + 60 * i) * 10**9) for i in range(2)]
    rollups.add_all(old + recent)
    assert sorted(rollups.buckets["minute"]) == [NOW - 600 - (NOW - 600) % 60 + 60 * i for i in range(2)]
    assert rollups.compacted == 3
    assert sum(a.requests for by in rollups.buckets["hour"].values() for a in by.values()) == 5
    assert sum(a.cost for by in rollups.buckets["day"].values() for a in by.values()) == Decimal("0.005")
    assert rollups.grand_total().requests == 5
    assert rollups.grand_total().parts().duration_counts is not None  # the totals keep the histograms


def test_minute_buckets_leaving_the_window_are_dropped_their_calls_stay_in_hours() -> None:
    now = [float(NOW)]
    rollups = _rollups(now)
    rollups.add_all([call_record(i, start_ns=(NOW - 120 + i) * 10**9) for i in range(4)])
    assert len(rollups.buckets["minute"]) >= 1 and rollups.compacted == 0
    now[0] += 49 * 3600
    rollups.add_all([call_record(99, start_ns=int(now[0] - 10) * 10**9)])
    assert all(start >= now[0] - 48 * 3600 for start in rollups.buckets["minute"])
    assert rollups.compacted >= 1
    assert sum(a.requests for by in rollups.buckets["hour"].values() for a in by.values()) == 5
    assert all(a.detail is None for by in rollups.buckets["hour"].values() for a in by.values())


def test_snapshot_round_trip_keeps_the_sums_and_the_window() -> None:
    now = [float(NOW)]
    rollups = _rollups(now)
    rollups.add_all([call_record(i, start_ns=(START_S + 3600 * i) * 10**9) for i in range(50)])
    rollups.add_all([call_record(100 + i, start_ns=(NOW - 60 * i) * 10**9) for i in range(5)])
    loaded = Rollups.from_json(rollups.to_json(), minute_detail_s=48 * 3600, clock=lambda: now[0])
    assert loaded.to_json() == rollups.to_json()
    dims = next(iter(loaded.totals))
    assert all(k is dims for by in loaded.buckets["day"].values() for k in by)  # interned


def test_a_window_shorter_than_a_minute_is_refused() -> None:
    with pytest.raises(ValueError, match="minute_detail_s"):
        Rollups(minute_detail_s=30)


def test_encode_is_to_json_and_reencodes_only_what_changed() -> None:
    now = [float(NOW)]
    rollups = _rollups(now)
    rollups.add_all([call_record(i, start_ns=(START_S + 3600 * i) * 10**9, user="u") for i in range(40)])
    assert orjson.loads(rollups.encode()) == rollups.to_json()
    cached = dict(rollups._encoded)
    rollups.add_all([call_record(500, start_ns=(NOW - 30) * 10**9, workflow="wf")])
    assert orjson.loads(rollups.encode()) == rollups.to_json()
    unchanged = [k for k in cached if k[0] == "hour" and k[1] < NOW - 86400]
    assert unchanged and all(rollups._encoded[k] is cached[k] for k in unchanged)
    now[0] += 49 * 3600
    rollups.compact(now[0])
    assert orjson.loads(rollups.encode()) == rollups.to_json()


def test_encode_takes_token_counts_beyond_64_bits() -> None:
    rollups = _rollups([float(NOW)])
    rollups.add_all([call_record(1, start_ns=(NOW - 30) * 10**9, tokens=(2**70, 1))])
    assert orjson.loads(rollups.encode().replace(str(2**70).encode(), b"0"))["records"] == 1
    assert json.loads(rollups.encode()) == rollups.to_json()


def test_calls_older_than_the_hour_window_are_summed_in_their_day_only() -> None:
    now = [float(NOW)]
    rollups = Rollups(minute_detail_s=3600, hour_detail_s=86400, clock=lambda: now[0])
    rollups.add_all([call_record(i, start_ns=(NOW - 2 * 86400 + 3600 * i + 60) * 10**9) for i in range(48)])
    assert all(start > NOW - 86400 - 3600 for start in rollups.buckets["hour"])  # the hour the window starts in
    assert sum(a.requests for by in rollups.buckets["day"].values() for a in by.values()) == 48
    assert sum(a.requests for by in rollups.buckets["hour"].values() for a in by.values()) == 24
    now[0] += 12 * 3600
    expected = sum(1 for start in rollups.buckets["hour"] if start < now[0] - 86400)
    expected += sum(1 for start in rollups.buckets["minute"] if start < now[0] - 3600)
    assert expected >= 12 and rollups.compact(now[0]) == expected
    assert all(start >= now[0] - 86400 for start in rollups.buckets["hour"])
