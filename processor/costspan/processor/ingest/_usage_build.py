"""``Usage`` for one span's six token counts, built for a fraction of what its constructor costs.

``Usage`` is a frozen, slotted dataclass: its generated ``__init__`` sets each of its twelve fields
with ``object.__setattr__`` before ``__post_init__`` checks them, and that ``__init__`` was about a
sixth of an ingest worker's CPU per span (more than pricing the call). :func:`make_usage` sets the
same slots through their own descriptors, then runs ``Usage.__post_init__`` — Usage's own checks,
so the same object and the same errors as ``Usage(...)``. It does so only while ``Usage`` has the
shape this relies on (checked once, at import); otherwise it simply calls the constructor.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from types import MemberDescriptorType
from typing import Final

from costspan.pricing import Usage

__all__ = ["FAST", "make_usage"]

#: The fields, in order, with their defaults: the shape :func:`make_usage` is written for.
_SHAPE: Final = (
    ("input_tokens", 0),
    ("output_tokens", 0),
    ("cache_read_tokens", 0),
    ("cache_write_tokens", 0),
    ("cache_write_1h_tokens", 0),
    ("reasoning_tokens", 0),
    ("input_audio_tokens", 0),
    ("output_audio_tokens", 0),
    ("input_image_tokens", 0),
    ("images", 0),
    ("requests", 1),
    ("web_searches", 0),
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


def _builder() -> Callable[[int, int, int, int, int, int], Usage] | None:
    init = Usage.__dict__.get("__init__")
    post_init = Usage.__dict__.get("__post_init__")
    slots = [Usage.__dict__.get(name) for name, _ in _SHAPE]
    if (
        not dataclasses.is_dataclass(Usage)
        or tuple((f.name, f.default) for f in dataclasses.fields(Usage)) != _SHAPE
        or getattr(getattr(init, "__code__", None), "co_filename", None) != "<string>"  # generated, not written
        or not callable(post_init)
        or not all(type(slot) is MemberDescriptorType for slot in slots)
    ):
        return None
    s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11 = (slot.__set__ for slot in slots)  # type: ignore[union-attr]
    new = object.__new__

    def build(
        input_tokens: int, output_tokens: int, cache_read: int, cache_write: int, write_1h: int, reasoning: int
    ) -> Usage:
        usage = new(Usage)
        s0(usage, input_tokens)
        s1(usage, output_tokens)
        s2(usage, cache_read)
        s3(usage, cache_write)
        s4(usage, write_1h)
        s5(usage, reasoning)
        s6(usage, 0)
        s7(usage, 0)
        s8(usage, 0)
        s9(usage, 0)
        s10(usage, 1)
        s11(usage, 0)
        post_init(usage)
        return usage

    return build


_built = _builder()
#: Whether :func:`make_usage` takes the fast way (``False``: ``Usage`` changed shape; it calls the constructor).
FAST: Final = _built is not None
#: ``Usage(input_tokens=..., output_tokens=..., cache_read_tokens=..., cache_write_tokens=...,
#: cache_write_1h_tokens=..., reasoning_tokens=...)``; raises what that raises.
make_usage: Final[Callable[[int, int, int, int, int, int], Usage]] = _built or _by_constructor
