"""costspan.processor: the OTLP receiver, store, budgets, metrics, usage API and the ``costspan`` CLI.

In-process (the store inside the app, on its own ``TracerProvider``)::

    from costspan.processor import track_in_process

    costspan = track_in_process(data_dir="./costspan-data", budgets=[
        {"id": "acme-daily", "scope": {"tenant": "acme"}, "period": "day", "limit": "50"},
    ])
    ...                     # LLM calls are priced into costspan.store; over budget: BudgetExceededError
    costspan.shutdown()     # or use it as a context manager; also runs at exit

As a server: ``costspan serve``, or :func:`build_server_app` (receiver, budgets, usage API, dashboard)
and :func:`create_app` (the receiver alone) with :class:`Settings` and a :class:`Store`.

Sub-packages, each with its own ``__all__``: ``ingest`` (OTLP body → priced call records), ``store``
(ledger, dedupe, rollups, snapshots), ``budgets``, ``api`` (usage API, keys), ``serve`` (app factory,
settings, metrics, CLI). Names here load on first use: ``costspan price`` imports this package and
must not import FastAPI or the OpenTelemetry SDK.
"""

import typing

from costspan.processor._exports import lazy_exports as _lazy_exports

if typing.TYPE_CHECKING:
    from costspan.instrumentation import BudgetExceededError
    from costspan.processor._inprocess import InProcess, track_in_process
    from costspan.processor._span_processor import CostspanSpanProcessor
    from costspan.processor.api import KeyStore, UsageIndex, include_usage_api
    from costspan.processor.budgets import (
        Budget,
        BudgetBook,
        BudgetSpanProcessor,
        BudgetStatus,
        InvalidBudgetError,
        RemoteBudgetGuard,
        WebhookNotifier,
        budget_guard,
    )
    from costspan.processor.ingest import Normalizer
    from costspan.processor.serve import Settings, build_server_app, create_app, load_settings
    from costspan.processor.store import CallRecord, QueueFullError, Store, StoreConfig

__all__ = [
    "Budget",
    "BudgetBook",
    "BudgetExceededError",
    "BudgetSpanProcessor",
    "BudgetStatus",
    "CallRecord",
    "CostspanSpanProcessor",
    "InProcess",
    "InvalidBudgetError",
    "KeyStore",
    "Normalizer",
    "QueueFullError",
    "RemoteBudgetGuard",
    "Settings",
    "Store",
    "StoreConfig",
    "UsageIndex",
    "WebhookNotifier",
    "budget_guard",
    "build_server_app",
    "create_app",
    "include_usage_api",
    "load_settings",
    "track_in_process",
]

# name → the module that defines it (sub-packages re-export from their private modules)
_WHERE = {
    # in-process mode
    "InProcess": "costspan.processor._inprocess",
    "track_in_process": "costspan.processor._inprocess",
    "CostspanSpanProcessor": "costspan.processor._span_processor",
    # ingest and store
    "Normalizer": "costspan.processor.ingest",
    "CallRecord": "costspan.processor.store",
    "QueueFullError": "costspan.processor.store",
    "Store": "costspan.processor.store",
    "StoreConfig": "costspan.processor.store",
    # budgets (BudgetExceededError is what a blocked call raises, from the instrumentation slice)
    "Budget": "costspan.processor.budgets",
    "BudgetBook": "costspan.processor.budgets",
    "BudgetExceededError": "costspan.instrumentation",
    "BudgetSpanProcessor": "costspan.processor.budgets",
    "BudgetStatus": "costspan.processor.budgets",
    "InvalidBudgetError": "costspan.processor.budgets",
    "RemoteBudgetGuard": "costspan.processor.budgets",
    "WebhookNotifier": "costspan.processor.budgets",
    "budget_guard": "costspan.processor.budgets",
    # the server and the usage API
    "Settings": "costspan.processor.serve",
    "build_server_app": "costspan.processor.serve",
    "create_app": "costspan.processor.serve",
    "load_settings": "costspan.processor.serve",
    "KeyStore": "costspan.processor.api",
    "UsageIndex": "costspan.processor.api",
    "include_usage_api": "costspan.processor.api",
}


_load = _lazy_exports(__name__, _WHERE)


def __getattr__(name: str) -> typing.Any:
    return _load(name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
