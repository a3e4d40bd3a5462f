"""In-process mode in one call: :func:`track_in_process` wires the store, pricing and budgets into an app.

What it sets up on the app's ``TracerProvider`` (the global one by default):

- a :class:`~costspan.processor.store.Store` in ``data_dir`` (ledger, rollups, snapshots), started;
- :class:`~costspan.processor.CostspanSpanProcessor`, which prices every LLM span into that store;
- with ``budgets``: a :class:`~costspan.processor.budgets.BudgetBook` in ``data_dir/budgets`` holding
  exactly those budgets, its ``budget_guard`` as a pre-send hook (reserve before the call, or raise
  ``BudgetExceededError``) and a :class:`~costspan.processor.budgets.BudgetSpanProcessor` that settles
  each reservation from the call's priced span;
- :class:`~costspan.instrumentation.CostspanInstrumentor` on the same provider (when the app is already
  instrumented, only the guard is added to its hooks).

Configuration errors raise at set-up, with nothing left installed. After that nothing raises into the
app: the span processors never throw, and :meth:`InProcess.shutdown` logs what fails and carries on.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

from costspan.instrumentation import CostspanInstrumentor, PreSendHook
from costspan.pricing import Pricer, default_pricer
from costspan.processor._span_processor import CostspanSpanProcessor
from costspan.processor.budgets import (
    Budget,
    BudgetBook,
    BudgetSpanProcessor,
    BudgetSpec,
    CostEstimator,
    StoredSpend,
    budget_guard,
    parse_budget,
)
from costspan.processor.ingest._normalize import Normalizer
from costspan.processor.ingest._volume import MonthSpend
from costspan.processor.store._store import Store, StoreConfig

__all__ = ["InProcess", "track_in_process"]

logger = logging.getLogger(__name__)


class _Settler(BudgetSpanProcessor):
    """The budget span processor of one set-up: it ignores spans once that set-up is shut down."""

    def __init__(self, book: BudgetBook, *, service: str | None) -> None:
        super().__init__(book, service=service)
        self.closed = False

    def on_end(self, span: ReadableSpan) -> None:
        if not self.closed:
            super().on_end(span)


class InProcess:
    """What :func:`track_in_process` set up: ``.store``, ``.book`` (``None`` without budgets), ``.guard``.

    :meth:`shutdown` (also on leaving a ``with`` block, and at interpreter exit) removes the guard and
    the instrumentation this set-up added, waits until every record is durable, then closes the store
    and the book. It is safe to call twice and never raises. The span processors stay on the provider
    (the SDK cannot remove one) and ignore spans from then on.
    """

    __slots__ = (
        "_instrumented",
        "_instrumentor",
        "_lock",
        "_settler",
        "_shut",
        "book",
        "guard",
        "processor",
        "service",
        "store",
        "tracer_provider",
    )

    def __init__(
        self,
        tracer_provider: TracerProvider,
        store: Store,
        processor: CostspanSpanProcessor,
        book: BudgetBook | None,
        guard: PreSendHook | None,
        service: str | None,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.store = store
        self.processor = processor
        self.book = book
        #: the budget guard (a pre-send hook); with ``instrument=False``, give it to your own instrumentor
        self.guard = guard
        #: this app in budget scopes (the guard's and the settling's ``service``)
        self.service = service
        self._settler: _Settler | None = None
        self._instrumentor: CostspanInstrumentor | None = None
        self._instrumented = False  # whether this set-up called instrument() (else it only added the guard)
        self._lock = threading.Lock()
        self._shut = False

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until every LLM span ended so far is a durable record in the store."""
        return self.processor.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: int = 30000) -> None:
        """Stop guarding and recording, flush, close the store and the book. Safe twice; never raises."""
        with self._lock:
            if self._shut:
                return
            self._shut = True
        atexit.unregister(self.shutdown)
        _step("removing the instrumentation", self._uninstrument)
        _step("flushing the store", lambda: self.processor.force_flush(timeout_millis))
        _step("closing the store", self.processor.shutdown)
        if self._settler is not None:
            self._settler.closed = True
        if self.book is not None:
            _step("closing the budget book", self.book.close)

    def __enter__(self) -> InProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()

    def _instrument(self, options: Mapping[str, Any], pricer: Pricer) -> None:
        instrumentor = CostspanInstrumentor()  # one per process (BaseInstrumentor is a singleton)
        hooks = [self.guard] if self.guard is not None else []
        if instrumentor.is_instrumented_by_opentelemetry:
            logger.info("costspan instrumentation is already installed; adding the budget guard to its hooks")
            instrumentor.pre_send_hooks.extend(hooks)
        else:
            kwargs: dict[str, Any] = {"tracer_provider": self.tracer_provider, "pricer": pricer, **options}
            kwargs["pre_send_hooks"] = [*hooks, *kwargs.get("pre_send_hooks", ())]
            instrumentor.instrument(**kwargs)
            self._instrumented = instrumentor.is_instrumented_by_opentelemetry
            if not self._instrumented:
                logger.warning("costspan instrumentation was not installed (see the log above): no LLM call is guarded")
        self._instrumentor = instrumentor

    def _uninstrument(self) -> None:
        instrumentor, self._instrumentor = self._instrumentor, None
        if instrumentor is None:
            return
        if self._instrumented:
            instrumentor.uninstrument()
        elif self.guard is not None and self.guard in instrumentor.pre_send_hooks:
            instrumentor.pre_send_hooks.remove(self.guard)


def _step(what: str, step: Callable[[], object]) -> None:
    try:
        step()
    except Exception:
        logger.exception("costspan in-process shutdown: %s failed; carrying on", what)


def _provider(tracer_provider: TracerProvider | None, service: str | None) -> tuple[TracerProvider, bool]:
    """The given provider, else the global one, else a new SDK provider (``True``: to be set as the global)."""
    chosen: object = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    if tracer_provider is None and isinstance(chosen, trace.ProxyTracerProvider):  # the app has none yet
        return TracerProvider(resource=Resource.create({SERVICE_NAME: service} if service else {})), True
    if not isinstance(chosen, TracerProvider):
        raise TypeError(f"in-process mode needs an OpenTelemetry SDK TracerProvider, got {type(chosen).__name__}")
    return chosen, False


def _service_of(provider: TracerProvider) -> str | None:
    name = provider.resource.attributes.get(SERVICE_NAME)
    return name if isinstance(name, str) and name and not name.startswith("unknown_service") else None


def _budgets(definitions: Iterable[Budget | BudgetSpec | Mapping[str, Any]]) -> list[Budget]:
    """Parsed and checked before anything is built (``InvalidBudgetError``, ``ValueError``)."""
    budgets: list[Budget] = []
    for definition in definitions:
        if not isinstance(definition, Budget):
            given = definition.id if isinstance(definition, BudgetSpec) else definition.get("id")
            if not given:  # a generated id would be a new budget at every start
                raise ValueError(
                    "every budget given to track_in_process needs an 'id' (they are applied at each start)"
                )
        budgets.append(definition if isinstance(definition, Budget) else parse_budget(definition))
    ids = [b.id for b in budgets]
    if len(set(ids)) != len(ids):
        raise ValueError(f"budget ids must be unique, got {sorted(ids)}")
    return budgets


def _open_book(
    directory: Path, budgets: list[Budget], pricer: Pricer, fsync: Literal["always", "never"], store: Store
) -> BudgetBook:
    """The journaled book in ``directory``, holding exactly ``budgets`` (counters of kept ones carry on;
    a new one starts from what ``store`` holds of its current period)."""
    book = BudgetBook(
        estimator=CostEstimator(pricer), data_dir=directory, fsync="interval" if fsync == "always" else "never"
    )
    book.spend_source = StoredSpend(store)
    try:
        wanted = {b.id for b in budgets}
        for old in book.budgets():
            if old.id not in wanted:
                book.delete_budget(old.id, actor="track_in_process")
        for budget in budgets:
            book.put_budget(budget, actor="track_in_process")
    except BaseException:
        book.close()
        raise
    return book


def track_in_process(
    tracer_provider: TracerProvider | None = None,
    *,
    data_dir: str | Path = "./costspan-data",
    budgets: Iterable[Budget | BudgetSpec | Mapping[str, Any]] = (),
    service: str | None = None,
    fsync: Literal["always", "never"] = "always",
    pricer: Pricer | None = None,
    default_tenant: str = "",
    instrument: bool = True,
    instrument_options: Mapping[str, Any] | None = None,
) -> InProcess:
    """Price, attribute, store and budget this app's LLM calls inside the app; returns the handle.

    ``tracer_provider``: the app's SDK provider; ``None`` uses the global one, and sets a new one
    (with ``service`` as its ``service.name``) when the app has none yet. ``data_dir`` holds the ledger,
    rollups and, with budgets, ``budgets/`` (journal, snapshot, audit). ``budgets``: budget definitions
    (``Budget``, ``BudgetSpec`` or their JSON mapping, each with an ``id``); the book then holds exactly
    these (a budget kept across restarts keeps its spend; one left out is deleted). ``service`` names
    this app in budget scopes (default: the provider's ``service.name``). ``fsync``: ``always`` makes
    each record durable before it counts as flushed (off the app's threads; budget events are fsynced
    at most every second), ``never`` leaves it to the OS. ``pricer`` defaults to the packaged catalog.
    ``instrument=False`` leaves instrumenting to the app (pass ``handle.guard`` to its
    ``pre_send_hooks``); ``instrument_options`` are passed to ``CostspanInstrumentor().instrument()``
    (e.g. ``meter_provider``, ``base_urls``).

    Raises ``ValueError`` / ``InvalidBudgetError`` / ``TypeError`` / ``OSError`` for a bad set-up,
    leaving nothing active: no global provider set, no instrumentation, the store closed (span
    processors already added to the app's provider are shut down and do nothing).
    """
    if fsync not in ("always", "never"):
        raise ValueError(f"fsync must be 'always' or 'never', got {fsync!r}")
    parsed = _budgets(budgets)
    provider, new_global = _provider(tracer_provider, service)
    service = service or _service_of(provider)
    pricer = pricer if pricer is not None else default_pricer()
    directory = Path(data_dir)
    # no compaction child inside the host app (its sys.executable may not be a Python interpreter);
    # `costspan serve` on the same data dir compacts the history
    store = Store(StoreConfig(data_dir=directory, fsync=fsync, history=False))
    store.start()
    book: BudgetBook | None = None
    try:
        if parsed:
            book = _open_book(directory / "budgets", parsed, pricer, fsync, store)
    except BaseException:
        store.close()
        raise
    normalizer = Normalizer(
        pricer,
        default_tenant=default_tenant,
        default_service=service or "unknown",
        volume=MonthSpend(store, pricer),  # volume tiers: a tenant's month to date, from the store's rollups
    )
    processor = CostspanSpanProcessor(store, normalizer, owns_store=True)
    guard = budget_guard(book, service=service) if book is not None else None
    handle = InProcess(provider, store, processor, book, guard, service)
    provider.add_span_processor(processor)
    if book is not None:
        handle._settler = _Settler(book, service=service)
        provider.add_span_processor(handle._settler)
    if instrument:
        try:
            handle._instrument(instrument_options or {}, pricer)
        except BaseException:
            handle.shutdown()
            raise
    if new_global:  # only once everything else is in place: a global provider cannot be taken back
        trace.set_tracer_provider(provider)
    atexit.register(handle.shutdown)
    logger.info(
        "costspan in-process: records in %s, %d budget(s), service %s", directory, len(parsed), service or "unset"
    )
    return handle
