"""The optional parts of :class:`~costspan.processor.store._sums.Sums`: :class:`Detail`.

The usage index keeps a sparse latency histogram in some of its sums; the rollups keep the cost
parts, estimated calls, cache-write and reasoning tokens and the GenAI semconv histograms that the
Prometheus metrics expose. Sums that keep neither have no detail at all (``None``).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from operator import attrgetter
from typing import Any, Final

__all__ = ["DURATION_BUCKETS", "N_DURATION", "N_TOKEN", "TOKEN_BUCKETS", "Detail", "parts_from_json"]

_ZERO: Final = Decimal(0)
#: GenAI semconv advice for gen_ai.client.operation.duration (seconds).
DURATION_BUCKETS: Final = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
#: GenAI semconv advice for gen_ai.client.token.usage.
TOKEN_BUCKETS: Final = tuple(4**i for i in range(14))
#: Buckets of the duration (and time to first chunk) and of the token histograms, +Inf included.
N_DURATION: Final = len(DURATION_BUCKETS) + 1
N_TOKEN: Final = len(TOKEN_BUCKETS) + 1


def _listed(counts: list[int] | None) -> list[int] | None:
    return None if counts is None else list(counts)


def _add_counts(into: list[int], other: list[int], sign: int) -> None:
    for i, count in enumerate(other):
        into[i] += sign * count


@dataclass(slots=True)
class Detail:
    """The optional parts of :class:`Sums`: ``latency`` (bucket -> calls, the usage index's) and the
    rollups' parts. ``duration_counts`` is ``None`` until the sums hold the rollups' parts (then the
    three histogram lists exist); ``ttfc_counts`` until a streamed call's first chunk is timed."""

    latency: dict[int, int] | None = None
    estimated: int = 0
    cost_input: Decimal = _ZERO
    cost_output: Decimal = _ZERO
    cost_cache_read: Decimal = _ZERO
    cost_cache_write: Decimal = _ZERO
    cost_other: Decimal = _ZERO
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    duration_sum: float = 0.0  # seconds
    duration_counts: list[int] | None = None
    input_token_counts: list[int] | None = None
    output_token_counts: list[int] | None = None
    #: Time to first chunk of streamed calls (seconds; the duration's bucket bounds, per semconv).
    ttfc_sum: float = 0.0
    ttfc_counts: list[int] | None = None

    def __reduce__(self) -> tuple[Any, ...]:  # compact pickles (batches travel from ingest workers)
        return (Detail, _values(self))

    def copy(self) -> Detail:
        latency = None if self.latency is None else dict(self.latency)
        if self.duration_counts is None and self.ttfc_counts is None:  # the usage index's: a histogram only
            return Detail(latency)
        values: list[Any] = [latency, *_values(self)[1:]]
        for i in _LISTS:
            values[i] = _listed(values[i])
        return Detail(*values)

    def merge_parts(self, o: Detail, sign: int = 1) -> None:
        """Add (``sign`` -1: subtract) ``o``'s rollup parts; the latency histogram is :meth:`Sums.merge`'s."""
        if o.duration_counts is None:
            return
        self.estimated += sign * o.estimated
        if sign > 0:
            self.cost_input += o.cost_input
            self.cost_output += o.cost_output
            self.cost_cache_read += o.cost_cache_read
            self.cost_cache_write += o.cost_cache_write
            self.cost_other += o.cost_other
        else:
            self.cost_input -= o.cost_input
            self.cost_output -= o.cost_output
            self.cost_cache_read -= o.cost_cache_read
            self.cost_cache_write -= o.cost_cache_write
            self.cost_other -= o.cost_other
        self.cache_write_tokens += sign * o.cache_write_tokens
        self.reasoning_tokens += sign * o.reasoning_tokens
        self.duration_sum += sign * o.duration_sum
        self.ttfc_sum += sign * o.ttfc_sum
        if self.duration_counts is None or self.input_token_counts is None or self.output_token_counts is None:
            self.duration_counts = [0] * N_DURATION
            self.input_token_counts = [0] * N_TOKEN
            self.output_token_counts = [0] * N_TOKEN
        _add_counts(self.duration_counts, o.duration_counts, sign)
        if o.input_token_counts is not None:
            _add_counts(self.input_token_counts, o.input_token_counts, sign)
        if o.output_token_counts is not None:
            _add_counts(self.output_token_counts, o.output_token_counts, sign)
        if o.ttfc_counts is not None:
            if self.ttfc_counts is None:
                self.ttfc_counts = [0] * N_DURATION
            _add_counts(self.ttfc_counts, o.ttfc_counts, sign)

    def parts_json(self) -> list[Any]:
        return [
            self.estimated,
            str(self.cost_input),
            str(self.cost_output),
            str(self.cost_cache_read),
            str(self.cost_cache_write),
            str(self.cost_other),
            self.cache_write_tokens,
            self.reasoning_tokens,
            self.duration_sum,
            self.duration_counts,
            self.input_token_counts,
            self.output_token_counts,
            self.ttfc_sum,
            self.ttfc_counts,
        ]


_values: Final = attrgetter(*Detail.__dataclass_fields__)
#: Where the histogram lists are in ``_values``.
_LISTS: Final = tuple(i for i, name in enumerate(Detail.__dataclass_fields__) if name.endswith("_counts"))


def parts_from_json(
    latency: dict[int, int] | None,
    estimated: Any,
    costs: list[Any],
    cache_write: Any,
    reasoning: Any,
    duration_sum: Any,
    histograms: list[Any],
    ttfc_sum: Any,
    ttfc_counts: Any,
) -> Detail:
    d, i, o = ([int(x) for x in h] for h in histograms)
    if len(d) != N_DURATION or len(i) != N_TOKEN or len(o) != N_TOKEN:
        raise ValueError("histogram entry has the wrong length")
    c = [Decimal(str(x)) for x in costs]
    return Detail(
        latency,
        int(estimated),
        c[0],
        c[1],
        c[2],
        c[3],
        c[4],
        int(cache_write),
        int(reasoning),
        float(duration_sum),
        d,
        i,
        o,
        float(ttfc_sum),
        None if ttfc_counts is None else [int(x) for x in ttfc_counts],
    )
