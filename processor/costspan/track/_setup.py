"""``init(...)``: in-process costspan in one line, once per process; ``session(id)``: a session's totals.

``init`` sets up, unless already done: the app's ``TracerProvider`` (a new global one when it has
none), the processor's store and span processor, the budget book with the given budgets, the
instrumentation with the budget guard (and the degradation step of adaptive budgets) as its pre-send
hook, and the span processor that hands records to :func:`~costspan.track.track` blocks. It never
raises into the app: a failure is logged and ``init`` returns ``None`` (the app runs untracked). The one
error that reaches the app, later, is ``BudgetExceededError`` from an LLM call a hard budget refuses.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from opentelemetry.sdk.trace import TracerProvider

from costspan.instrumentation import CostspanInstrumentor
from costspan.pricing import Pricer
from costspan.processor._inprocess import InProcess, track_in_process
from costspan.processor.budgets import Alert, BudgetSpec
from costspan.processor.budgets import Budget as BookBudget
from costspan.track._budget import Budget, degrading_hook
from costspan.track._sessions import SessionIndex, SessionTotals, scan
from costspan.track._tracker import CallSpans

__all__ = ["SessionTotals", "Tracking", "current", "init", "session", "shutdown"]

logger = logging.getLogger(__name__)


class Tracking:
    """What :func:`init` set up: ``.inprocess`` (store, book, processor), ``.budgets`` and ``.spans``."""

    __slots__ = ("_hook", "_instrumented", "budgets", "inprocess", "sessions", "spans")

    def __init__(self, inprocess: InProcess, budgets: tuple[Budget, ...], spans: CallSpans) -> None:
        self.inprocess = inprocess
        self.budgets = budgets
        self.spans = spans
        self.sessions = SessionIndex()
        self._hook: Any = None
        self._instrumented = False

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inprocess.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Remove the instrumentation (or this set-up's hook), flush and close. Safe twice; never raises."""
        instrumentor = CostspanInstrumentor()
        try:
            if self._instrumented and instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.uninstrument()
            elif self._hook is not None and self._hook in instrumentor.pre_send_hooks:
                instrumentor.pre_send_hooks.remove(self._hook)
        except Exception:
            logger.exception("costspan track: removing the instrumentation failed; carrying on")
        self._instrumented, self._hook = False, None
        self.spans.shutdown()
        self.inprocess.shutdown()


class _Holder:
    """The process's one set-up (the instrumentation is one per process too)."""

    lock = threading.Lock()
    tracking: Tracking | None = None


def current() -> Tracking | None:
    """The set-up :func:`init` made, if any (and not shut down)."""
    return _Holder.tracking


def init(
    *,
    service: str | None = None,
    data_dir: str | Path = "./costspan-data",
    budgets: Iterable[Budget | BookBudget | BudgetSpec | Mapping[str, Any]] = (),
    tracer_provider: TracerProvider | None = None,
    fsync: Literal["always", "never"] = "always",
    pricer: Pricer | None = None,
    default_tenant: str = "",
    instrument_options: Mapping[str, Any] | None = None,
    on_alert: Callable[[Alert], None] | None = None,
) -> Tracking | None:
    """Track this app's LLM calls in-process; idempotent (a second call returns the first set-up).

    ``budgets``: :class:`~costspan.track.Budget` (the MDMAI shape) and/or the processor's budget
    definitions (each with an ``id``). ``on_alert(alert)`` is called (on the thread that settles the
    call) once per budget, threshold and period as spend crosses an alert threshold; it must not block.
    The other arguments are :func:`costspan.processor.track_in_process`'s.
    Returns ``None`` (and logs why) when the set-up fails; never raises.
    """
    with _Holder.lock:
        if _Holder.tracking is not None:
            logger.debug("costspan track: already initialised; init() returns the existing set-up")
            return _Holder.tracking
        try:
            tracking = _build(
                service=service,
                data_dir=data_dir,
                budgets=list(budgets),
                tracer_provider=tracer_provider,
                fsync=fsync,
                pricer=pricer,
                default_tenant=default_tenant,
                instrument_options=instrument_options or {},
                on_alert=on_alert,
            )
        except Exception:
            logger.exception("costspan track: init failed; LLM calls are not tracked in-process")
            return None
        _Holder.tracking = tracking
        return tracking


def shutdown() -> None:
    """Undo :func:`init` (flush, close, uninstrument); a later ``init`` starts afresh. Never raises."""
    with _Holder.lock:
        tracking, _Holder.tracking = _Holder.tracking, None
    if tracking is not None:
        tracking.shutdown()


def _build(
    *,
    service: str | None,
    data_dir: str | Path,
    budgets: list[Budget | BookBudget | BudgetSpec | Mapping[str, Any]],
    tracer_provider: TracerProvider | None,
    fsync: Literal["always", "never"],
    pricer: Pricer | None,
    default_tenant: str,
    instrument_options: Mapping[str, Any],
    on_alert: Callable[[Alert], None] | None,
) -> Tracking:
    ours = tuple(b for b in budgets if isinstance(b, Budget) and b.enabled)
    book_budgets: list[BookBudget | BudgetSpec | Mapping[str, Any]] = [b for b in budgets if not isinstance(b, Budget)]
    for budget in ours:
        book_budgets.extend(budget.book_budgets())
    inprocess = track_in_process(
        tracer_provider,
        data_dir=data_dir,
        budgets=book_budgets,
        service=service,
        fsync=fsync,
        pricer=pricer,
        default_tenant=default_tenant,
        instrument=False,
    )
    spans = CallSpans()
    tracking = Tracking(inprocess, ours, spans)
    try:
        inprocess.tracer_provider.add_span_processor(spans)
        inprocess.store.add_commit_listener(spans.on_records)
        tracking.sessions.attach(inprocess.store)
        if on_alert is not None and inprocess.book is not None:
            inprocess.book.alert_sinks.append(on_alert)
        hook = inprocess.guard
        per_session = any(b.per_session_limit is not None for b in ours)
        if per_session or (inprocess.book is not None and any(b.degradation_strategies for b in ours)):
            spend = _session_spend(tracking) if per_session else None
            hook = degrading_hook(ours, inprocess.book, inprocess.guard, spend)
        instrumentor = CostspanInstrumentor()
        if instrumentor.is_instrumented_by_opentelemetry:
            logger.info("costspan instrumentation is already installed; adding the budget hook to it")
            if hook is not None:
                instrumentor.pre_send_hooks.append(hook)
                tracking._hook = hook
        else:
            kwargs: dict[str, Any] = {"tracer_provider": inprocess.tracer_provider, **instrument_options}
            if pricer is not None:
                kwargs.setdefault("pricer", pricer)
            kwargs["pre_send_hooks"] = [*([hook] if hook is not None else []), *kwargs.get("pre_send_hooks", ())]
            instrumentor.instrument(**kwargs)
            tracking._instrumented = instrumentor.is_instrumented_by_opentelemetry
    except BaseException:
        tracking.shutdown()
        raise
    return tracking


def _session_spend(tracking: Tracking) -> Callable[[str, str | None], Decimal]:
    """A session's stored spend in USD, from ``tracking``'s session index (the ledger for a dropped one)."""

    def spend(session_id: str, tenant: str | None) -> Decimal:
        found = tracking.sessions.lookup(session_id, tenant)
        if found is None:
            found = scan(tracking.inprocess.store.read_records(), session_id, tenant)
        return found.cost_usd

    return spend


def session(session_id: str, *, tenant: str | None = None) -> SessionTotals:
    """The totals of ``session_id`` (of one ``tenant``, if given) over every stored call.

    Answered from the session index (kept as calls are stored; history survives restarts, as the index
    reads the ledger once at :func:`init`); ``RuntimeError`` before
    :func:`init`, ``ValueError`` for an empty id. An unknown session has zero calls.
    """
    if not isinstance(session_id, str) or not session_id:
        raise ValueError(f"session_id must be a non-empty string, got {session_id!r}")
    tracking = current()
    if tracking is None:
        raise RuntimeError("costspan.track.session() needs costspan.track.init() first")
    tracking.force_flush(5000)
    found = tracking.sessions.lookup(session_id, tenant)
    if found is None:  # a session the index dropped (past max_sessions): read the ledger for it
        found = scan(tracking.inprocess.store.read_records(), session_id, tenant)
    return found
