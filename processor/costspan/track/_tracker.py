"""``track(...)``: attribute the LLM calls made inside a block or function, and read back what they cost.

Attribution travels the way the instrumentation already reads it: W3C baggage (``costspan.tenant.id``
…), so the calls are priced once, by the instrumentation and the processor, in-process or in a
``costspan serve`` the spans are exported to. The cost read back comes from the processor's own call
records: :class:`CallSpans` notes, when an LLM span starts inside a block, which blocks enclose it; the
store's commit listener hands each stored record to those blocks. On leaving a block the processor is
flushed (bounded wait) so its calls are in.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast

from opentelemetry import baggage, context
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from costspan.instrumentation import attributes as attr
from costspan.processor.store import CallRecord

__all__ = ["CallSpans", "TrackedCall", "Tracker", "track"]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

_TRACKERS_KEY = context.create_key("costspan-track-blocks")
_ARG_TO_KEY = {
    "tenant": attr.TENANT_ID,
    "user": attr.USER_ID,
    "workflow": attr.WORKFLOW_ID,
    "session": attr.SESSION_ID,
    "project": attr.PROJECT_ID,
}
#: the prefix of the extra attributes a block writes on its calls' spans
EXTRA_PREFIX = "costspan.attr."


@dataclass(frozen=True, slots=True)
class TrackedCall:
    """One LLM call made inside a block, as the processor recorded it."""

    span_id: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    #: USD; None when the call could not be priced (``cost_status == "unpriced"``)
    cost_usd: Decimal | None
    cost_status: str
    tokens_estimated: bool
    outcome: str
    session: str

    @classmethod
    def of(cls, record: CallRecord) -> TrackedCall:
        return cls(
            span_id=record.span_id,
            provider=record.provider,
            model=record.model,
            input_tokens=record.tokens.input,
            output_tokens=record.tokens.output,
            cost_usd=record.cost_total,
            cost_status=record.cost_status,
            tokens_estimated=record.tokens_estimated,
            outcome=record.outcome,
            session=record.session,
        )


class CallSpans(SpanProcessor):
    """Notes which blocks enclose each LLM span as it starts, writes their extra attributes on it, and
    gives each stored record to those blocks (:meth:`on_records`, a store commit listener). Bounded:
    at most ``max_pending`` spans await their record (the oldest are forgotten and counted)."""

    def __init__(self, *, max_pending: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, tuple[Tracker, ...]] = OrderedDict()
        self._max = max_pending
        self.dropped = 0
        self.errors = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            trackers = context.get_value(_TRACKERS_KEY, parent_context)
            if not trackers:
                return
            attributes = span.attributes or {}
            if attr.GEN_AI_PROVIDER_NAME not in attributes and attr.GEN_AI_SYSTEM not in attributes:
                return
            blocks = cast(tuple[Tracker, ...], trackers)
            for tracker in blocks:
                for key, value in tracker.attributes.items():
                    span.set_attribute(EXTRA_PREFIX + key, value)
            span_id = f"{span.context.span_id:016x}"
            with self._lock:
                self._pending[span_id] = blocks
                while len(self._pending) > self._max:
                    self._pending.popitem(last=False)
                    self.dropped += 1
        except Exception:
            self.errors += 1
            logger.debug("costspan track: could not note an LLM span", exc_info=True)

    def on_end(self, span: ReadableSpan) -> None:
        return None

    def on_records(self, records: list[CallRecord]) -> None:
        with self._lock:
            if not self._pending:
                return
            found = [(r, self._pending.pop(r.span_id, ())) for r in records]
        for record, blocks in found:
            if blocks:
                call = TrackedCall.of(record)
                for tracker in blocks:
                    tracker._add(call)

    def shutdown(self) -> None:
        with self._lock:
            self._pending.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class Tracker:
    """One entered block (or one call of a decorated function): its attribution and its calls.

    ``calls`` (the recorded LLM calls), ``cost_usd`` (sum of the priced ones; ``Decimal``),
    ``input_tokens``, ``output_tokens``, ``total_tokens``, ``unpriced`` (calls without a price).
    Read them after the block: a call counts once the processor stored it, which leaving the block
    waits for (up to ``flush_timeout`` seconds). Usable as ``with``/``async with`` and as a decorator.
    """

    def __init__(
        self,
        *,
        tenant: str | None = None,
        user: str | None = None,
        workflow: str | None = None,
        session: str | None = None,
        project: str | None = None,
        attributes: Mapping[str, str | int | float | bool] | None = None,
        flush_timeout: float = 5.0,
        on_exit: Callable[[Tracker], object] | None = None,
    ) -> None:
        values = {"tenant": tenant, "user": user, "workflow": workflow, "session": session, "project": project}
        for name, value in values.items():
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        extra = dict(attributes or {})
        for key, item in extra.items():
            if not isinstance(key, str) or not key or not isinstance(item, str | int | float | bool):
                raise ValueError(f"attributes must map names to str, int, float or bool, got {key!r}: {item!r}")
        if flush_timeout < 0:
            raise ValueError(f"flush_timeout must be ≥ 0, got {flush_timeout!r}")
        self.ids = {name: value for name, value in values.items() if value is not None}
        self.attributes = extra
        self.flush_timeout = flush_timeout
        self.on_exit = on_exit
        self.calls: list[TrackedCall] = []
        self._lock = threading.Lock()
        self._tokens: list[object] = []

    # --- what the calls cost ----------------------------------------------------------------------
    def _add(self, call: TrackedCall) -> None:
        with self._lock:
            self.calls.append(call)

    @property
    def cost_usd(self) -> Decimal:
        with self._lock:
            return sum((c.cost_usd for c in self.calls if c.cost_usd is not None), Decimal(0))

    @property
    def input_tokens(self) -> int:
        with self._lock:
            return sum(c.input_tokens for c in self.calls)

    @property
    def output_tokens(self) -> int:
        with self._lock:
            return sum(c.output_tokens for c in self.calls)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def unpriced(self) -> int:
        with self._lock:
            return sum(1 for c in self.calls if c.cost_usd is None)

    def __repr__(self) -> str:
        return f"Tracker({self.ids}, calls={len(self.calls)}, cost_usd={self.cost_usd})"

    # --- as a context manager -------------------------------------------------------------------------
    def __enter__(self) -> Tracker:
        ctx = context.get_current()
        for name, value in self.ids.items():
            ctx = baggage.set_baggage(_ARG_TO_KEY[name], value, context=ctx)
        outer = context.get_value(_TRACKERS_KEY, ctx) or ()
        ctx = context.set_value(_TRACKERS_KEY, (*cast(tuple[Tracker, ...], outer), self), ctx)
        self._tokens.append(context.attach(ctx))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._tokens:
            context.detach(cast(Any, self._tokens.pop()))
        self._finish()

    async def __aenter__(self) -> Tracker:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def _finish(self) -> None:
        from costspan.track._setup import current

        try:
            handle = current()
            if handle is not None:
                handle.force_flush(int(self.flush_timeout * 1000))
            if self.on_exit is not None:
                self.on_exit(self)
        except Exception:
            logger.exception("costspan track: finishing a block failed; carrying on")

    # --- as a decorator ---------------------------------------------------------------------------
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Track each call of ``fn`` (sync or async) in a fresh block with these settings; the last
        finished block is ``wrapper.last`` (use ``on_exit`` to see every one)."""
        settings = {
            **self.ids,
            "attributes": self.attributes,
            "flush_timeout": self.flush_timeout,
            "on_exit": self.on_exit,
        }

        def fresh() -> Tracker:
            return Tracker(**settings)  # type: ignore[arg-type]

        if inspect.iscoroutinefunction(fn):
            async_fn = cast(Callable[P, Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                block = fresh()
                try:
                    async with block:
                        return await async_fn(*args, **kwargs)
                finally:
                    async_wrapper.last = block  # type: ignore[attr-defined]

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            block = fresh()
            try:
                with block:
                    return fn(*args, **kwargs)
            finally:
                wrapper.last = block  # type: ignore[attr-defined]

        return wrapper


def track(
    *,
    tenant: str | None = None,
    user: str | None = None,
    workflow: str | None = None,
    session: str | None = None,
    project: str | None = None,
    attributes: Mapping[str, str | int | float | bool] | None = None,
    flush_timeout: float = 5.0,
    on_exit: Callable[[Tracker], object] | None = None,
) -> Tracker:
    """Attribute the LLM calls made inside to these ids and collect what they cost.

    ``with track(tenant="acme", session="s-1") as t: ...`` then ``t.cost_usd``, ``t.calls``;
    ``@track(workflow="summarize")`` on a sync or async function. Values left ``None`` keep what an
    outer block set; nested blocks each see their own calls and the outer one sees the inner's too.
    ``attributes`` are written on each call's span as ``costspan.attr.<name>`` (exported with it).
    Cost and tokens come from the in-process processor (:func:`costspan.track.init`); without it the
    attribution still travels (a remote ``costspan serve`` prices the calls) and ``calls`` stays empty.
    """
    return Tracker(
        tenant=tenant,
        user=user,
        workflow=workflow,
        session=session,
        project=project,
        attributes=attributes,
        flush_timeout=flush_timeout,
        on_exit=on_exit,
    )
