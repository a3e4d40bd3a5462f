"""``Usage.of_tokens`` gives what ``Usage(...)`` gives: the same object, or the same error."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costspan.pricing import MAX_COUNT, InvalidUsageError, Usage

_count = st.one_of(
    st.integers(min_value=0, max_value=5000),
    st.integers(min_value=-3, max_value=-1),
    st.sampled_from([MAX_COUNT, MAX_COUNT + 1]),
)


def _by_constructor(
    input_tokens: int, output_tokens: int, cache_read: int, cache_write: int, write_1h: int, reasoning: int
) -> Usage:
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=write_1h,
        reasoning_tokens=reasoning,
    )


def _outcome(build: Callable[..., Usage], counts: tuple[int, ...]) -> tuple[str, object]:
    try:
        usage = build(*counts)
    except ValueError as exc:
        return type(exc).__name__, str(exc)
    assert type(usage) is Usage
    return "ok", usage


@settings(max_examples=500, deadline=None)
@given(st.tuples(_count, _count, _count, _count, _count, _count))
def test_of_tokens_is_the_constructor(counts: tuple[int, int, int, int, int, int]) -> None:
    # dataclass equality compares every field: the six counts not passed keep their declared defaults
    assert _outcome(Usage.of_tokens, counts) == _outcome(_by_constructor, counts)


def test_a_count_of_another_type_is_refused_as_the_constructor_refuses_it() -> None:
    for bad in (True, 1.0, "1"):
        with pytest.raises(InvalidUsageError) as fast:
            Usage.of_tokens(bad, 0)  # type: ignore[arg-type]
        with pytest.raises(InvalidUsageError) as slow:
            Usage(input_tokens=bad)  # type: ignore[arg-type]
        assert str(fast.value) == str(slow.value)


def test_of_tokens_takes_keywords_and_gives_a_frozen_usage() -> None:
    usage = Usage.of_tokens(input_tokens=100, output_tokens=20, cache_read_tokens=30, reasoning_tokens=5)
    assert usage == Usage(input_tokens=100, output_tokens=20, cache_read_tokens=30, reasoning_tokens=5)
    assert (usage.requests, usage.uncached_input_tokens) == (1, 70)
    with pytest.raises(AttributeError):
        usage.input_tokens = 1  # type: ignore[misc]
