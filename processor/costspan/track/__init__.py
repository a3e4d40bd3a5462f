"""costspan.track: the Python API of a cost library — count tokens, track calls, budget them in-process.

::

    import costspan.track as cost

    cost.init(service="chat", budgets=[
        cost.Budget(name="prod", tenant_id="acme", daily_limit=50, per_request_limit="0.50",
                    enforcement_level="adaptive", alert_thresholds=(0.5, 0.8),
                    degradation_strategies=["use_smaller_model", "reduce_max_tokens",
                                            "disable_tools", "lower_temperature"],
                    fallback_models=["gpt-4o-mini"]),
    ])
    cost.count_tokens("gpt-4o", messages).total
    with cost.track(tenant="acme", user="u-1", session="s-9") as t:
        client.chat.completions.create(...)         # priced by the instrumentation + processor
    t.cost_usd, t.calls
    cost.session("s-9").cost_usd

Calls are priced once, by the instrumentation and the in-process processor; this package only sets
them up, attributes them and reads their records back. See docs/python-api.md.
"""

from costspan.instrumentation import BudgetExceededError
from costspan.track._budget import Budget, Degradation, EnforcementLevel
from costspan.track._count import TokenCount, count_tokens
from costspan.track._setup import SessionTotals, Tracking, current, init, session, shutdown
from costspan.track._tracker import TrackedCall, Tracker, track

__all__ = [
    "Budget",
    "BudgetExceededError",
    "Degradation",
    "EnforcementLevel",
    "SessionTotals",
    "TokenCount",
    "TrackedCall",
    "Tracker",
    "Tracking",
    "count_tokens",
    "current",
    "init",
    "session",
    "shutdown",
    "track",
]
