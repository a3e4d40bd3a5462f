"""``make_usage`` gives what ``Usage(...)`` gives: the same object, or the same error."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costspan.pricing import MAX_COUNT, Usage
from costspan.processor.ingest import _usage_build as usage_build
from costspan.processor.ingest._usage_build import make_usage

_count = st.one_of(
    st.integers(min_value=0, max_value=5000),
    st.integers(min_value=-3, max_value=-1),
    st.sampled_from([MAX_COUNT, MAX_COUNT + 1]),
)


def _outcome(build: object, counts: tuple[int, ...]) -> tuple[str, object]:
    try:
        usage = build(*counts)  # type: ignore[operator]
    except ValueError as exc:
        return type(exc).__name__, str(exc)
    assert type(usage) is Usage
    return "ok", usage


@settings(max_examples=500, deadline=None)
@given(st.tuples(_count, _count, _count, _count, _count, _count))
def test_make_usage_is_the_constructor(counts: tuple[int, int, int, int, int, int]) -> None:
    assert usage_build.FAST  # Usage still has the shape the fast way is written for
    assert _outcome(make_usage, counts) == _outcome(usage_build._by_constructor, counts)


def test_a_count_of_another_type_is_refused_as_the_constructor_refuses_it() -> None:
    for bad in (True, 1.0, "1"):
        with pytest.raises(ValueError) as fast:
            make_usage(bad, 0, 0, 0, 0, 0)  # type: ignore[arg-type]
        with pytest.raises(ValueError) as slow:
            Usage(input_tokens=bad)  # type: ignore[arg-type]
        assert str(fast.value) == str(slow.value)


def test_another_shape_of_usage_falls_back_to_the_constructor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(usage_build, "_SHAPE", usage_build._SHAPE[:-1])
    assert usage_build._builder() is None
