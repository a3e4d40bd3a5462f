"""Budget defaults from the environment, as the seed gateway read them."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from costspan.processor.budgets._alerts import SpikeDetector, WebhookNotifier
from costspan.processor.budgets._book import BudgetBook
from costspan.processor.budgets._model import EACH, Budget, Period, parse_budget

__all__ = ["BudgetEnv", "apply_env", "budgets_from_env"]

logger = logging.getLogger(__name__)

#: variable → (budget id, scope, period). Unset or empty = no such budget.
LIMIT_VARIABLES: dict[str, tuple[str, dict[str, str], Period]] = {
    "GLOBAL_DAILY_LIMIT": ("env-global-daily", {}, Period.DAY),
    "GLOBAL_MONTHLY_LIMIT": ("env-global-monthly", {}, Period.MONTH),
    "TENANT_DAILY_LIMIT": ("env-tenant-daily", {"tenant": EACH}, Period.DAY),
    "TENANT_MONTHLY_LIMIT": ("env-tenant-monthly", {"tenant": EACH}, Period.MONTH),
}
TIMEZONE_VARIABLE = "COSTSPAN_BUDGET_TIMEZONE"
#: Cost-spike detection (on by default): the switch, and the rule's settings (see docs/budgets.md).
SPIKE_VARIABLES = (
    "COSTSPAN_SPIKE_DETECTION",
    "COSTSPAN_SPIKE_FACTOR",
    "COSTSPAN_SPIKE_BASELINE_HOURS",
    "COSTSPAN_SPIKE_MIN_USD",
)


@dataclass(frozen=True, slots=True)
class BudgetEnv:
    enabled: bool  # COST_TRACKING_ENABLED (default true)
    webhook_url: str | None  # ALERT_WEBHOOK_URL
    budgets: tuple[Budget, ...]  # hard USD budgets; TENANT_* ones count each tenant separately
    spikes: SpikeDetector | None = None  # COSTSPAN_SPIKE_* (None: detection off)


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    logger.warning("ignoring %s=%r (expected true or false); using %s", name, raw, default)
    return default


def budgets_from_env(environ: Mapping[str, str] | None = None) -> BudgetEnv:
    """Read the budget variables; a bad value is logged and skipped (the budget is not created)."""
    env = os.environ if environ is None else environ
    timezone = env.get(TIMEZONE_VARIABLE, "").strip() or "UTC"
    budgets: list[Budget] = []
    for name, (budget_id, scope, period) in LIMIT_VARIABLES.items():
        raw = env.get(name, "").strip()
        if not raw:
            continue
        try:
            limit = Decimal(raw)
            budgets.append(
                parse_budget(
                    {
                        "id": budget_id,
                        "name": name,
                        "scope": scope,
                        "period": period,
                        "limit": limit,
                        "timezone": timezone,
                    }
                )
            )
        except (InvalidOperation, ValueError) as exc:
            logger.warning("ignoring %s=%r: %s", name, raw, exc)
    url = env.get("ALERT_WEBHOOK_URL", "").strip() or None
    return BudgetEnv(_flag(env, "COST_TRACKING_ENABLED", True), url, tuple(budgets), _spikes_from_env(env))


def _spikes_from_env(env: Mapping[str, str]) -> SpikeDetector | None:
    """The cost-spike detector the variables describe; a bad value is logged and the default kept."""
    switch, factor_var, hours_var, spend_var = SPIKE_VARIABLES
    if not _flag(env, switch, True):
        return None
    options: dict[str, Any] = {}
    for name, key, kind in (
        (factor_var, "factor", Decimal),
        (hours_var, "baseline_hours", int),
        (spend_var, "min_spend_usd", Decimal),
    ):
        raw = env.get(name, "").strip()
        if not raw:
            continue
        try:
            value: Any = kind(raw)
            alone: dict[str, Any] = {key: value}
            SpikeDetector(**alone)  # validated alone, so one bad value does not drop the others
        except (InvalidOperation, ValueError) as exc:
            logger.warning("ignoring %s=%r: %s", name, raw, exc)
            continue
        options[key] = value
    return SpikeDetector(**options)


def apply_env(book: BudgetBook, env: BudgetEnv, **webhook_options: Any) -> WebhookNotifier | None:
    """Install the environment's budgets (audited as actor ``env``), its on/off switch and webhook.

    Returns the started :class:`WebhookNotifier` (the caller shuts it down), or None without a URL.
    """
    book.enabled = env.enabled
    if book.spike_detector is None:
        book.spike_detector = env.spikes
    for budget in env.budgets:
        book.put_budget(budget, actor="env")
    if env.webhook_url is None:
        return None
    notifier = WebhookNotifier(env.webhook_url, **webhook_options)
    book.alert_sinks.append(notifier)
    return notifier
