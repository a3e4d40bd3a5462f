"""Budget defaults from the environment, as the seed gateway read them, on pydantic-settings.

A limit (``GLOBAL_*_LIMIT``, ``TENANT_*_LIMIT``) that is not an amount stops start-up, as a bad
setting of `costspan serve` does: :class:`BudgetEnvError` names the variable and its value (a budget
the operator asked for is never silently missing). Any other bad value is logged and replaced by its
default: a bad switch keeps its default, and a bad spike setting keeps the rule's default while the
others still apply.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import Field, ValidationError, ValidationInfo, ValidatorFunctionWrapHandler, field_validator
from pydantic_core import PydanticUseDefault
from pydantic_settings import BaseSettings, SettingsConfigDict

from costspan.processor.budgets._alerts import SpikeDetector, WebhookNotifier
from costspan.processor.budgets._book import BudgetBook
from costspan.processor.budgets._model import EACH, Budget, Period, parse_budget

__all__ = ["BudgetEnv", "BudgetEnvError", "BudgetSettings", "apply_env", "budgets_from_env"]

logger = logging.getLogger(__name__)

#: variable → (budget id, scope, period). Unset or empty = no such budget. The settings field is the
#: variable's name in lower case.
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
#: settings field → the :class:`SpikeDetector` argument it sets
_SPIKE_OPTIONS = {"spike_factor": "factor", "spike_baseline_hours": "baseline_hours", "spike_min_usd": "min_spend_usd"}
_LIMIT_HINT = "expected an amount in USD, 0 or more, such as 1000 or 49.50"
_TRUE = frozenset(("1", "true", "yes", "on"))
_FALSE = frozenset(("0", "false", "no", "off"))


class BudgetEnvError(ValueError):
    """A budget variable that stops start-up; the message names the variable and its value."""


class BudgetSettings(BaseSettings):
    """The budget variables, by their exact (case-sensitive) names. Empty counts as unset; a value
    that does not validate is logged (naming the variable) and its default used."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", frozen=True)

    enabled: bool = Field(default=True, validation_alias="COST_TRACKING_ENABLED")
    webhook_url: str | None = Field(default=None, validation_alias="ALERT_WEBHOOK_URL")
    timezone: str = Field(default="UTC", validation_alias=TIMEZONE_VARIABLE)
    # the limits are read as text and checked by budgets(): a bad one stops start-up
    global_daily_limit: str | None = Field(default=None, validation_alias="GLOBAL_DAILY_LIMIT")
    global_monthly_limit: str | None = Field(default=None, validation_alias="GLOBAL_MONTHLY_LIMIT")
    tenant_daily_limit: str | None = Field(default=None, validation_alias="TENANT_DAILY_LIMIT")
    tenant_monthly_limit: str | None = Field(default=None, validation_alias="TENANT_MONTHLY_LIMIT")
    spike_detection: bool = Field(default=True, validation_alias=SPIKE_VARIABLES[0])
    spike_factor: Decimal | None = Field(default=None, validation_alias=SPIKE_VARIABLES[1])
    spike_baseline_hours: int | None = Field(default=None, validation_alias=SPIKE_VARIABLES[2])
    spike_min_usd: Decimal | None = Field(default=None, validation_alias=SPIKE_VARIABLES[3])

    @field_validator("spike_baseline_hours", mode="before")
    @classmethod
    def _whole_hours(cls, value: Any) -> Any:
        """A whole number as Python reads one (``int("5.0")`` fails): pydantic alone would take 5.0."""
        return int(value) if isinstance(value, str) else value

    @field_validator("enabled", "spike_detection", mode="before")
    @classmethod
    def _switch(cls, value: Any) -> Any:
        """The words the seed gateway took (any case), nothing else."""
        if isinstance(value, str):
            word = value.lower()
            if word in _TRUE or word in _FALSE:
                return word in _TRUE
            raise ValueError("expected true or false")
        return value

    @field_validator("spike_factor", "spike_baseline_hours", "spike_min_usd")
    @classmethod
    def _spike_rule_accepts(cls, value: Any, info: ValidationInfo) -> Any:
        """The rule's own checks, one value at a time (so one bad value does not drop the others)."""
        if value is not None and info.field_name is not None:
            SpikeDetector(**{_SPIKE_OPTIONS[info.field_name]: value})
        return value

    # defined last, so it wraps the validators above: their errors also fall back to the default
    @field_validator("*", mode="wrap")
    @classmethod
    def _default_when_unset_or_bad(cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            value = value.strip()
            if not value:
                raise PydanticUseDefault()
        try:
            return handler(value)
        except ValidationError as exc:
            field = cls.model_fields[info.field_name] if info.field_name is not None else None
            name = field.validation_alias if field is not None else info.field_name
            reason = "; ".join(e["msg"] for e in exc.errors())
            logger.warning("ignoring %s=%r: %s; using the default", name, value, reason)
            raise PydanticUseDefault() from None

    def budgets(self) -> tuple[Budget, ...]:
        """The hard USD budgets the limits describe (:class:`BudgetEnvError` for a limit that is not one)."""
        out: list[Budget] = []
        for name, (budget_id, scope, period) in LIMIT_VARIABLES.items():
            text: str | None = getattr(self, name.lower())  # the field is the variable's name in lower case
            if text is None:
                continue
            try:
                limit = Decimal(text)
            except InvalidOperation:
                raise BudgetEnvError(f"{name}={text!r} is not a limit: {_LIMIT_HINT}") from None
            if not limit.is_finite() or limit < 0:
                raise BudgetEnvError(f"{name}={text!r} is not a limit: {_LIMIT_HINT}")
            spec = {"id": budget_id, "name": name, "scope": scope, "period": period, "limit": limit}
            try:
                out.append(parse_budget({**spec, "timezone": self.timezone}))
            except ValueError as exc:
                raise BudgetEnvError(f"{name}={text!r} with {TIMEZONE_VARIABLE}={self.timezone!r}: {exc}") from None
        return tuple(out)

    def spike_detector(self) -> SpikeDetector | None:
        """The cost-spike rule the variables describe (None: switched off)."""
        if not self.spike_detection:
            return None
        given: dict[str, Any] = {
            option: value
            for option, value in (
                ("factor", self.spike_factor),
                ("baseline_hours", self.spike_baseline_hours),
                ("min_spend_usd", self.spike_min_usd),
            )
            if value is not None
        }
        return SpikeDetector(**given)


@dataclass(frozen=True, slots=True)
class BudgetEnv:
    enabled: bool  # COST_TRACKING_ENABLED (default true)
    webhook_url: str | None  # ALERT_WEBHOOK_URL
    budgets: tuple[Budget, ...]  # hard USD budgets; TENANT_* ones count each tenant separately
    spikes: SpikeDetector | None = None  # COSTSPAN_SPIKE_* (None: detection off)


def budgets_from_env(environ: Mapping[str, str] | None = None) -> BudgetEnv:
    """Read the budget variables from ``environ`` (default: the process environment). A bad limit
    raises :class:`BudgetEnvError`; any other bad value is logged and its default used."""
    settings = BudgetSettings() if environ is None else BudgetSettings.model_validate(dict(environ))
    return BudgetEnv(settings.enabled, settings.webhook_url, settings.budgets(), settings.spike_detector())


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
