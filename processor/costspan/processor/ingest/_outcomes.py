"""A call's one outcome (``ok | degraded | blocked | error``) from its span, whoever emitted it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from costspan.instrumentation import attributes as attr

__all__ = ["BLOCKED_REASON", "call_outcome", "said_outcome"]

#: The unpriced reason of a blocked call: nothing was sent, so there is nothing to price.
BLOCKED_REASON: Final = "blocked by a budget before it was sent"
_OUTCOMES: Final = frozenset(attr.OUTCOMES)


def said_outcome(attrs: Mapping[str, object], error_type: str) -> tuple[str, str]:
    """(the outcome the span tells, its error type as stored).

    The span's ``costspan.call.outcome`` if valid. A span without one (another instrumentation's, an
    older costspan's) tells a block by ``costspan.budget.action=blocked`` or an error type naming
    ``BudgetExceededError``; else it tells nothing (""). A block's error type is always
    ``costspan.BudgetExceeded``, whatever the emitter called it (the anthropic SDK: ``client_error``).
    """
    said = attrs.get(attr.CALL_OUTCOME)
    if not (type(said) is str and said in _OUTCOMES):
        blocked = attrs.get(attr.BUDGET_ACTION) == "blocked" or error_type.endswith("BudgetExceededError")
        said = attr.OUTCOME_BLOCKED if blocked else ""
    if said == attr.OUTCOME_BLOCKED:
        return said, attr.ERROR_TYPE_BUDGET_EXCEEDED
    if said == attr.OUTCOME_ERROR and not error_type:
        return said, "error"
    return said, error_type


def call_outcome(said: str, error_type: str, cost_status: str) -> str:
    """The stored outcome: a block stays blocked, any error is an error; a call that succeeded is
    degraded when the span says so or when the processor's own pricing is not ``priced``."""
    if said == attr.OUTCOME_BLOCKED:
        return said
    if error_type:
        return attr.OUTCOME_ERROR
    if said == attr.OUTCOME_DEGRADED or cost_status != attr.STATUS_PRICED:
        return attr.OUTCOME_DEGRADED
    return attr.OUTCOME_OK
