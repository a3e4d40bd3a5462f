"""What a call used, in the GenAI semantic conventions' inclusive meaning."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Final

from costspan.pricing._errors import InvalidUsageError

__all__ = ["MAX_COUNT", "Usage"]

#: Larger counts than this in one call are taken to be a bug upstream, not a real call.
MAX_COUNT = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Usage:
    """Token and unit counts of one call.

    ``input_tokens`` INCLUDES ``cache_read_tokens`` and ``cache_write_tokens`` (semconv meaning);
    ``cache_write_tokens`` is every cache write, and ``cache_write_1h_tokens`` the part of it written
    with a one-hour lifetime. ``output_tokens`` INCLUDES ``reasoning_tokens``. Audio and image token
    counts are parts of the input or output counts they belong to.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0
    input_image_tokens: int = 0
    images: int = 0
    requests: int = 1
    web_searches: int = 0

    def __post_init__(self) -> None:
        # Built for every priced call: one pass over the values in the common case, the named
        # checks only when something is off (``fields()`` alone would cost several microseconds).
        values = (
            self.input_tokens,
            self.output_tokens,
            self.cache_read_tokens,
            self.cache_write_tokens,
            self.cache_write_1h_tokens,
            self.reasoning_tokens,
            self.input_audio_tokens,
            self.output_audio_tokens,
            self.input_image_tokens,
            self.images,
            self.requests,
            self.web_searches,
        )
        for value in values:
            if type(value) is not int or not 0 <= value <= MAX_COUNT:
                self._check_counts()
                break
        if (
            self.cache_read_tokens + self.cache_write_tokens > self.input_tokens
            or self.cache_write_1h_tokens > self.cache_write_tokens
            or self.reasoning_tokens > self.output_tokens
            or self.input_audio_tokens + self.input_image_tokens > self.input_tokens
            or self.output_audio_tokens > self.output_tokens
        ):
            self._check_sums()

    def _check_counts(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if type(value) is not int:
                raise InvalidUsageError(f"{f.name} must be a whole number, got {value!r}")
            if value < 0:
                raise InvalidUsageError(f"{f.name} must not be negative, got {value}")
            if value > MAX_COUNT:
                raise InvalidUsageError(f"{f.name}={value} is beyond {MAX_COUNT:,} for one call")

    def _check_sums(self) -> None:
        if self.cache_read_tokens + self.cache_write_tokens > self.input_tokens:
            raise InvalidUsageError(
                "cache_read_tokens + cache_write_tokens "
                f"({self.cache_read_tokens} + {self.cache_write_tokens}) exceed input_tokens "
                f"({self.input_tokens}); input_tokens must include cached tokens"
            )
        if self.cache_write_1h_tokens > self.cache_write_tokens:
            raise InvalidUsageError(
                f"cache_write_1h_tokens ({self.cache_write_1h_tokens}) exceed cache_write_tokens "
                f"({self.cache_write_tokens}), which counts every cache write"
            )
        if self.reasoning_tokens > self.output_tokens:
            raise InvalidUsageError(
                f"reasoning_tokens ({self.reasoning_tokens}) exceed output_tokens ({self.output_tokens}); "
                "output_tokens must include reasoning"
            )
        if self.input_audio_tokens + self.input_image_tokens > self.input_tokens:
            raise InvalidUsageError("input audio and image tokens exceed input_tokens, which include them")
        if self.output_audio_tokens > self.output_tokens:
            raise InvalidUsageError("output_audio_tokens exceed output_tokens, which include them")

    @classmethod
    def of_tokens(
        cls,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        cache_write_1h_tokens: int = 0,
        reasoning_tokens: int = 0,
    ) -> Usage:
        """``Usage(input_tokens=..., ..., reasoning_tokens=...)``, the other counts at their defaults, built fast.

        The same object, and the same checks and errors, as the constructor: for the hot path that builds one
        ``Usage`` per span (the generated ``__init__`` of a frozen dataclass sets each field through
        ``object.__setattr__``, which made it cost more than pricing the call). Each slot is set through its own
        descriptor, then :meth:`__post_init__` checks the whole.
        """
        usage = _new(cls)
        _set_input_tokens(usage, input_tokens)
        _set_output_tokens(usage, output_tokens)
        _set_cache_read_tokens(usage, cache_read_tokens)
        _set_cache_write_tokens(usage, cache_write_tokens)
        _set_cache_write_1h_tokens(usage, cache_write_1h_tokens)
        _set_reasoning_tokens(usage, reasoning_tokens)
        _set_input_audio_tokens(usage, 0)
        _set_output_audio_tokens(usage, 0)
        _set_input_image_tokens(usage, 0)
        _set_images(usage, 0)
        _set_requests(usage, 1)
        _set_web_searches(usage, 0)
        usage.__post_init__()
        return usage

    @property
    def uncached_input_tokens(self) -> int:
        return self.input_tokens - self.cache_read_tokens - self.cache_write_tokens

    @classmethod
    def from_provider_exclusive(
        cls,
        *,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        cache_write_1h_tokens: int = 0,
        reasoning_tokens: int = 0,
    ) -> Usage:
        """Build from counts where input EXCLUDES cache tokens (Anthropic's API spelling)."""
        return cls(
            input_tokens=input_tokens + cache_read_tokens + cache_write_tokens,
            output_tokens=output_tokens,
            cache_read_tokens=cache_read_tokens,
            cache_write_tokens=cache_write_tokens,
            cache_write_1h_tokens=cache_write_1h_tokens,
            reasoning_tokens=reasoning_tokens,
        )


def _setter(name: str) -> Callable[[Usage, int], None]:
    """The ``__set__`` of ``Usage``'s slot ``name``: what a frozen instance's field is written through."""
    return Usage.__dict__[name].__set__  # type: ignore[no-any-return]


# Used by Usage.of_tokens, which sets every field (a test pins it to the constructor, defaults included).
_new: Final = object.__new__
_set_input_tokens: Final = _setter("input_tokens")
_set_output_tokens: Final = _setter("output_tokens")
_set_cache_read_tokens: Final = _setter("cache_read_tokens")
_set_cache_write_tokens: Final = _setter("cache_write_tokens")
_set_cache_write_1h_tokens: Final = _setter("cache_write_1h_tokens")
_set_reasoning_tokens: Final = _setter("reasoning_tokens")
_set_input_audio_tokens: Final = _setter("input_audio_tokens")
_set_output_audio_tokens: Final = _setter("output_audio_tokens")
_set_input_image_tokens: Final = _setter("input_image_tokens")
_set_images: Final = _setter("images")
_set_requests: Final = _setter("requests")
_set_web_searches: Final = _setter("web_searches")
