"""The edge's rules (store/_validate.py) case by case, and the usage index's per-tenant name bounds
across a snapshot."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from costspan.processor.api._index import UsageIndex
from costspan.processor.api._index_snapshot import IndexSnapshots
from costspan.processor.store import Position, TokenCounts
from costspan.processor.store._validate import (
    MAX_TOKENS,
    OVERFLOW,
    CardinalityLimits,
    InvalidValueError,
    check_id,
    check_tenant,
    screen,
)
from tests.support.records import call_record

NOW_NS = time.time_ns()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("acme", None),
        ("acme corp ü 東京", None),
        ("a\u00a0b", None),  # a no-break space is printable enough for an id
        ("a" * 256, None),
        ("a" * 257, "--tenant is longer than 256 characters"),
        ("a\r\nb", "--tenant holds a control character"),
        ("\x00all", "--tenant holds a control character"),
        ("a\x85b", "--tenant holds a control character"),
        ("a\u2028b", "--tenant holds a control character"),
        ("../b", "--tenant holds a path separator or is '.' or '..'"),
        ("a\\b", "--tenant holds a path separator or is '.' or '..'"),
        (".", "--tenant holds a path separator or is '.' or '..'"),
    ],
)
def test_tenant_rules(value: str, problem: str | None) -> None:
    if problem is None:
        assert check_tenant(value, "--tenant") == value
        return
    with pytest.raises(InvalidValueError, match=problem.replace(".", r"\.")) as caught:
        check_tenant(value, "--tenant")
    assert caught.value.reason == "invalid_tenant"


def test_other_ids_may_hold_a_slash_but_no_control_character() -> None:
    assert check_id("meta-llama/Llama-3-70b", "model") == "meta-llama/Llama-3-70b"
    with pytest.raises(InvalidValueError, match="user_id holds a control character"):
        check_id("bob\x1b[31m", "user_id")
    with pytest.raises(InvalidValueError, match="model is longer than 4 characters"):
        check_id("gpt-4o", "model", limit=4)


def _screened(**fields: Any) -> tuple[Any, str]:
    record, reason, _ = screen(call_record(1, **{"start_ns": NOW_NS, **fields}), NOW_NS, 16)
    return record, reason


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"tokens": (1, -1)}, "invalid_tokens"),
        ({"tokens": (MAX_TOKENS + 1, 0)}, "invalid_tokens"),
        ({"tokens": (1, 2, 3, 4, 5, -6)}, "invalid_tokens"),
        ({"tenant": "t" * 17}, "invalid_tenant"),
        ({"tenant": "a/b"}, "invalid_tenant"),
        ({"session": "s\n"}, "invalid_id"),
        ({"start_ns": 10**9}, "invalid_timestamp"),
        ({"start_ns": NOW_NS + 2 * 86400 * 10**9}, "invalid_timestamp"),
        ({"latency_ms": 8 * 86400 * 1000}, "invalid_latency"),
    ],
)
def test_screen_refuses(fields: dict[str, Any], reason: str) -> None:
    assert _screened(**fields) == (None, reason)


def test_screen_takes_the_largest_counts_and_cuts_long_values() -> None:
    record, reason = _screened(tokens=(MAX_TOKENS, MAX_TOKENS - 1, 7))
    assert (reason, record.tokens) == ("", TokenCounts(MAX_TOKENS, MAX_TOKENS - 1, 7))
    record, reason = _screened(model="m" * 40, user="u" * 17, error_type="e" * 30, tenant="t" * 16)
    assert reason == "value_truncated"
    assert (record.model, record.user, record.error_type, record.tenant) == ("m" * 16, "u" * 16, "e" * 16, "t" * 16)


def test_name_bounds_fold_new_names_and_survive_a_snapshot(tmp_path: Path) -> None:
    folded: list[tuple[str, int]] = []
    limits = CardinalityLimits(user=2, model=1)

    def count(reason: str, calls: int) -> None:
        folded.append((reason, calls))

    index = UsageIndex(cardinality=limits, count=count)
    index.add_many(
        call_record(i, start_ns=NOW_NS, user=f"u{i}", model=model)
        for i, model in enumerate(["gpt-4o", "gpt-4o", "o3", "gpt-4o"])
    )
    assert sorted(index.names("acme", "user")) == [OVERFLOW, "u0", "u1"]
    assert ("cardinality_model", 1) in folded
    assert sum(n for reason, n in folded if reason == "cardinality_user") == 2
    index.add_many([call_record(9, start_ns=NOW_NS, user="u9", tenant="globex")])  # bounds are per tenant
    assert list(index.names("globex", "user")) == ["u9"]

    snapshots = IndexSnapshots(tmp_path / "usage-index")
    index.position = Position(1, 10)
    assert snapshots.save(index) is not None
    loaded = UsageIndex(cardinality=limits, count=count)
    assert snapshots.load(loaded).position == Position(1, 10)
    loaded.add_many([call_record(20, start_ns=NOW_NS, user="u-new"), call_record(21, start_ns=NOW_NS, user="u1")])
    names = loaded.names("acme", "user")
    assert sorted(names) == [OVERFLOW, "u0", "u1"]  # the loaded names are known: u-new is still beyond
    assert names["u1"].between(0, NOW_NS).requests == 2
