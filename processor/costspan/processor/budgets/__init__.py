"""costspan budgets: reserve before an LLM call, settle after it, alert at thresholds, degrade or block.

In-process::

    book = BudgetBook(data_dir="/var/lib/costspan/budgets")
    book.put_budget({"id": "acme-daily", "scope": {"tenant": "acme"}, "period": "day", "limit": "50"})
    CostspanInstrumentor().instrument(tracer_provider=tp, pre_send_hooks=[budget_guard(book, service="api")])
    tp.add_span_processor(BudgetSpanProcessor(book, service="api"))

Server side: ``app.include_router(budget_router(book))``, and ``app.add_middleware(BudgetCheckEndpoint,
book=book)`` to answer the check before FastAPI routes it; remote apps use :class:`RemoteBudgetGuard`.
"""

import typing as _typing

from costspan.processor._exports import lazy_exports as _lazy_exports
from costspan.processor.budgets._alerts import Alert, Delivery, SpikeDetector, WebhookNotifier
from costspan.processor.budgets._book import BudgetBook
from costspan.processor.budgets._env import BudgetEnv, BudgetEnvError, apply_env, budgets_from_env
from costspan.processor.budgets._estimate import CostEstimator, Estimate
from costspan.processor.budgets._guard import (
    BudgetSpanProcessor,
    budget_exceeded_error,
    budget_guard,
    call_from_attributes,
    call_from_request,
)
from costspan.processor.budgets._journal import FsyncPolicy
from costspan.processor.budgets._model import (
    DEFAULT_THRESHOLDS,
    EACH,
    SCOPE_DIMENSIONS,
    Block,
    Budget,
    BudgetSpec,
    Call,
    Decision,
    InvalidBudgetError,
    Mode,
    Period,
    Unit,
    parse_budget,
)
from costspan.processor.budgets._periods import window
from costspan.processor.budgets._remote import RemoteBudgetGuard
from costspan.processor.budgets._seed import SpendSource, StoredSpend
from costspan.processor.budgets._status import BudgetStatus
from costspan.processor.budgets._stored_calls import settle_committed, settle_records

if _typing.TYPE_CHECKING:
    from costspan.processor.budgets._api import BudgetAccess, budget_router
    from costspan.processor.budgets._endpoint import BudgetCheckEndpoint
    from costspan.processor.budgets._metrics import BudgetCollector

__all__ = [
    "DEFAULT_THRESHOLDS",
    "EACH",
    "SCOPE_DIMENSIONS",
    "Alert",
    "Block",
    "Budget",
    "BudgetAccess",
    "BudgetBook",
    "BudgetCheckEndpoint",
    "BudgetCollector",
    "BudgetEnv",
    "BudgetEnvError",
    "BudgetSpanProcessor",
    "BudgetSpec",
    "BudgetStatus",
    "Call",
    "CostEstimator",
    "Decision",
    "Delivery",
    "Estimate",
    "FsyncPolicy",
    "InvalidBudgetError",
    "Mode",
    "Period",
    "RemoteBudgetGuard",
    "SpendSource",
    "SpikeDetector",
    "StoredSpend",
    "Unit",
    "WebhookNotifier",
    "apply_env",
    "budget_exceeded_error",
    "budget_guard",
    "budget_router",
    "budgets_from_env",
    "call_from_attributes",
    "call_from_request",
    "parse_budget",
    "settle_committed",
    "settle_records",
    "window",
]

# the server-side pieces load on first use: in-process budgets need neither FastAPI nor prometheus_client
_load = _lazy_exports(
    __name__,
    {
        "BudgetAccess": "costspan.processor.budgets._api",
        "budget_router": "costspan.processor.budgets._api",
        "BudgetCheckEndpoint": "costspan.processor.budgets._endpoint",
        "BudgetCollector": "costspan.processor.budgets._metrics",
    },
)


def __getattr__(name: str) -> _typing.Any:
    return _load(name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
