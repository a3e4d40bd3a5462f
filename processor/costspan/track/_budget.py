"""The in-process budget with the MDMAI cost library's fields, and the hook that degrades a call.

A :class:`Budget` is a user's view: ``daily_limit``, ``monthly_limit``, ``yearly_limit``, ``per_request_limit`` (USD),
``enforcement_level`` (``soft`` alerts only, ``hard`` blocks, ``adaptive`` degrades then blocks),
``alert_thresholds`` as fractions, ``degradation_strategies``. It is carried out by the processor's
budget book (one book budget per limit: reserve before the call, settle from the priced span, alert at
the thresholds); :func:`degrading_hook` adds the four degradation strategies before the book's guard,
and ``per_session_limit`` (a session is not a dimension of the book): the session's stored spend, from
the session index, against the limit.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from costspan.instrumentation import BudgetExceededError, PreSendHook, RequestInfo, RequestRewrite
from costspan.instrumentation import attributes as attr
from costspan.processor.budgets import Budget as BookBudget
from costspan.processor.budgets import BudgetBook, InvalidBudgetError, Mode, Period, parse_budget

__all__ = ["Budget", "Degradation", "EnforcementLevel", "degrading_hook"]

logger = logging.getLogger(__name__)


class EnforcementLevel(StrEnum):
    """The seed's ``BudgetLevel``: what happens as a budget runs out."""

    SOFT = "soft"  # alert only
    HARD = "hard"  # block calls that do not fit
    ADAPTIVE = "adaptive"  # degrade calls (the strategies below) from ``degrade_at``, block at the limit


class Degradation(StrEnum):
    """The four degradation strategies, applied to the outgoing request body."""

    USE_SMALLER_MODEL = "use_smaller_model"  # the first of ``fallback_models`` that is not the call's
    REDUCE_MAX_TOKENS = "reduce_max_tokens"  # max_tokens → at most ``max_tokens_cap``
    DISABLE_TOOLS = "disable_tools"  # tools, tool_choice (and legacy functions) removed
    LOWER_TEMPERATURE = "lower_temperature"  # temperature → at most ``temperature_cap``


#: other spellings accepted for the strategies (seed examples and common names)
_ALIASES = {
    "cheaper_model": Degradation.USE_SMALLER_MODEL,
    "downgrade_model": Degradation.USE_SMALLER_MODEL,
    "fallback_model": Degradation.USE_SMALLER_MODEL,
    "smaller_model": Degradation.USE_SMALLER_MODEL,
    "max_tokens": Degradation.REDUCE_MAX_TOKENS,
    "reduce_tokens": Degradation.REDUCE_MAX_TOKENS,
    "no_tools": Degradation.DISABLE_TOOLS,
    "reduce_temperature": Degradation.LOWER_TEMPERATURE,
    "lower_temp": Degradation.LOWER_TEMPERATURE,
}


#: period → the field holding its limit
_LIMITS: dict[Period, str] = {
    Period.PER_REQUEST: "per_request_limit",
    Period.HOUR: "hourly_limit",
    Period.DAY: "daily_limit",
    Period.WEEK: "weekly_limit",
    Period.MONTH: "monthly_limit",
    Period.YEAR: "yearly_limit",
}


def _money(name: str, value: object) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidBudgetError(f"{name} must be a USD amount, got {value!r}")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise InvalidBudgetError(f"{name} must be a USD amount, got {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise InvalidBudgetError(f"{name} must be a finite amount ≥ 0, got {value!r}")
    return amount


def _strategy(value: object) -> Degradation:
    text = str(getattr(value, "value", value)).strip().lower()
    try:
        return Degradation(text)
    except ValueError:
        if text in _ALIASES:
            return _ALIASES[text]
        known = ", ".join(d.value for d in Degradation)
        raise InvalidBudgetError(f"unknown degradation strategy {value!r}; known: {known}") from None


@dataclass(frozen=True, slots=True)
class Budget:
    """An in-process budget in the MDMAI shape. Validated at construction (``InvalidBudgetError``).

    ``tenant_id`` / ``user_id`` scope it (``None``: every call). Limits are USD (``Decimal``, ``float``,
    ``int`` or a string); at least one is required; each becomes one budget of the book, with the id
    ``<budget_id>.<period>`` (``per_request``, ``hour``, ``day``, ``week``, ``month``, ``year``).
    ``alert_thresholds`` are fractions of each limit (0.5 = 50 %). ``degrade_at`` is the fraction of a
    period limit (spent plus reserved) from which an ``adaptive`` budget degrades calls.
    """

    name: str = "default"
    daily_limit: Decimal | float | int | str | None = None
    monthly_limit: Decimal | float | int | str | None = None
    per_request_limit: Decimal | float | int | str | None = None
    hourly_limit: Decimal | float | int | str | None = None
    weekly_limit: Decimal | float | int | str | None = None
    yearly_limit: Decimal | float | int | str | None = None
    #: USD over all the calls of one session (``track(session=...)``); enforced here, not by the book
    per_session_limit: Decimal | float | int | str | None = None
    enforcement_level: EnforcementLevel | str = EnforcementLevel.SOFT
    alert_thresholds: Sequence[float] = (0.5, 0.75, 0.9, 0.95)
    degradation_strategies: Sequence[Degradation | str] = ()
    fallback_models: Sequence[str] = ()
    max_tokens_cap: int = 256
    temperature_cap: float = 0.2
    degrade_at: float = 0.8
    tenant_id: str | None = None
    user_id: str | None = None
    budget_id: str = ""
    #: timezone of the day and month periods
    timezone: str = "UTC"
    #: the seed's switch: a disabled budget is validated, then left out by ``init`` (nothing enforced)
    enabled: bool = True
    #: the limits' currency: USD only (a budget in another currency is refused, not converted)
    currency: str = "USD"
    _ids: dict[Period, str] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        put = object.__setattr__
        if not isinstance(self.name, str) or not self.name.strip():
            raise InvalidBudgetError("name must be a non-empty string")
        for limit in (*_LIMITS.values(), "per_session_limit"):
            put(self, limit, _money(limit, getattr(self, limit)))
        if self.per_session_limit is None and all(getattr(self, limit) is None for limit in _LIMITS.values()):
            raise InvalidBudgetError(
                "a budget needs one of daily_limit, monthly_limit, yearly_limit, per_request_limit,"
                " per_session_limit, hourly_limit, weekly_limit"
            )
        try:
            put(
                self,
                "enforcement_level",
                EnforcementLevel(str(getattr(self.enforcement_level, "value", self.enforcement_level)).lower()),
            )
        except ValueError:
            raise InvalidBudgetError(
                f"enforcement_level must be soft, hard or adaptive, got {self.enforcement_level!r}"
            ) from None
        thresholds = tuple(self.alert_thresholds)
        for t in thresholds:
            if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t <= 10:
                raise InvalidBudgetError(f"alert_thresholds are fractions of the limit (0.5 = 50 %), got {t!r}")
        put(self, "alert_thresholds", tuple(sorted(set(thresholds))))
        put(self, "degradation_strategies", tuple(dict.fromkeys(_strategy(s) for s in self.degradation_strategies)))
        put(self, "fallback_models", tuple(self.fallback_models))
        if Degradation.USE_SMALLER_MODEL in self.degradation_strategies and not self.fallback_models:
            raise InvalidBudgetError("the use_smaller_model strategy needs fallback_models (cheapest last)")
        if isinstance(self.max_tokens_cap, bool) or not isinstance(self.max_tokens_cap, int) or self.max_tokens_cap < 1:
            raise InvalidBudgetError(f"max_tokens_cap must be a positive int, got {self.max_tokens_cap!r}")
        if (
            isinstance(self.temperature_cap, bool)
            or not isinstance(self.temperature_cap, int | float)
            or self.temperature_cap < 0
        ):
            raise InvalidBudgetError(f"temperature_cap must be ≥ 0, got {self.temperature_cap!r}")
        if (
            isinstance(self.degrade_at, bool)
            or not isinstance(self.degrade_at, int | float)
            or not 0 <= self.degrade_at <= 1
        ):
            raise InvalidBudgetError(f"degrade_at must be a fraction between 0 and 1, got {self.degrade_at!r}")
        if not isinstance(self.enabled, bool):
            raise InvalidBudgetError(f"enabled must be true or false, got {self.enabled!r}")
        if not isinstance(self.currency, str) or self.currency.strip().upper() != "USD":
            raise InvalidBudgetError(f"currency: budget limits are in USD, got {self.currency!r}")
        put(self, "currency", "USD")
        for key in ("tenant_id", "user_id"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise InvalidBudgetError(f"{key} must be a non-empty string or None")
        base = self.budget_id or re.sub(r"[^A-Za-z0-9._:-]+", "-", self.name.strip()).strip("-.:_") or "budget"
        put(self, "budget_id", base[:100])
        ids = {period: f"{self.budget_id}.{period.value}" for period in _LIMITS}
        put(self, "_ids", ids)
        self.book_budgets()  # the book's own checks (e.g. the timezone) fail here, at construction

    @property
    def scope(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.tenant_id:
            out["tenant"] = self.tenant_id
        if self.user_id:
            out["user"] = self.user_id
        return out

    def book_budgets(self) -> list[BookBudget]:
        """The processor's budgets that carry this one out: one per limit."""
        level = self.enforcement_level
        mode = Mode.SOFT if level is EnforcementLevel.SOFT else Mode.HARD
        fallbacks = list(self.fallback_models) if Degradation.USE_SMALLER_MODEL in self.degradation_strategies else []
        if level is EnforcementLevel.ADAPTIVE and fallbacks:
            mode = Mode.ADAPTIVE  # out of room: the book tries the fallbacks (and the cap) before blocking
        cap = self.max_tokens_cap if Degradation.REDUCE_MAX_TOKENS in self.degradation_strategies else None
        thresholds = sorted({max(1, min(1000, round(t * 100))) for t in self.alert_thresholds}) or [100]
        out: list[BookBudget] = []
        for period, name in _LIMITS.items():
            limit = getattr(self, name)
            if limit is None:
                continue
            spec: dict[str, Any] = {
                "id": self._ids[period],
                "name": self.name,
                "scope": self.scope,
                "period": period.value,
                "limit": str(limit),
                "mode": mode.value,
                "thresholds": thresholds,
                "timezone": self.timezone,
            }
            if mode is Mode.ADAPTIVE:
                spec["fallback_models"] = fallbacks
                spec["max_tokens_cap"] = cap
            out.append(parse_budget(spec))
        return out

    def applies_to(self, attribution: Mapping[str, str]) -> bool:
        if self.tenant_id and attribution.get(attr.TENANT_ID) != self.tenant_id:
            return False
        return not (self.user_id and attribution.get(attr.USER_ID) != self.user_id)

    def utilization(self, book: BudgetBook) -> Decimal:
        """The highest (spent + reserved) / limit of its period budgets (not per request), now."""
        worst = Decimal(0)
        for period in (Period.HOUR, Period.DAY, Period.WEEK, Period.MONTH, Period.YEAR):
            if getattr(self, _LIMITS[period]) is None:
                continue
            for row in book.status(self._ids[period]):
                limit = row.budget.limit
                used = row.spent + row.reserved
                if limit > 0:
                    worst = max(worst, used / limit)
                elif used > 0:
                    worst = max(worst, Decimal(1))
        return worst

    @property
    def session_budget_id(self) -> str:
        return f"{self.budget_id}.session"

    def session_block(self, session_id: str, spent: Decimal) -> BudgetExceededError | None:
        """The refusal of a call in ``session_id`` once the session's stored spend has reached
        ``per_session_limit`` (hard and adaptive budgets; a soft one never refuses)."""
        limit = self.per_session_limit
        if not isinstance(limit, Decimal) or self.enforcement_level is EnforcementLevel.SOFT or spent < limit:
            return None
        scope = {**self.scope, "session": session_id}
        return BudgetExceededError(
            f"budget {self.session_budget_id!r} (session={session_id}, {self.enforcement_level}) is exhausted:"
            f" limit {limit} USD, spent {spent} USD in this session",
            budget_id=self.session_budget_id,
            scope=scope,
            limit_usd=limit,
            spent_usd=spent,
            reason="exhausted",
            advice=("start a new session", f"raise per_session_limit of budget {self.budget_id!r}"),
        )

    def degrade(self, info: RequestInfo) -> RequestRewrite | None:
        """The rewrite this budget's strategies make of ``info`` (None when there is nothing to change)."""
        strategies = self.degradation_strategies
        model = max_tokens = temperature = None
        disable_tools = False
        if Degradation.USE_SMALLER_MODEL in strategies:
            model = next((m for m in self.fallback_models if m != info.model), None)
        if Degradation.REDUCE_MAX_TOKENS in strategies and (
            info.max_tokens is None or info.max_tokens > self.max_tokens_cap
        ):
            max_tokens = self.max_tokens_cap
        if Degradation.DISABLE_TOOLS in strategies and info.tools:
            disable_tools = True
        if Degradation.LOWER_TEMPERATURE in strategies and (
            info.temperature is None or info.temperature > self.temperature_cap
        ):
            temperature = float(self.temperature_cap)
        rewrite = RequestRewrite(
            model=model,
            max_tokens=max_tokens,
            disable_tools=disable_tools,
            temperature=temperature,
            reason=f"budget {self.budget_id}: degraded",
        )
        return rewrite if rewrite.changes else None


#: A session's stored spend (USD) in a budget's tenant (``None``: every tenant): the session index.
SessionSpend = Callable[[str, str | None], Decimal]


def degrading_hook(
    budgets: Iterable[Budget],
    book: BudgetBook | None,
    guard: PreSendHook | None,
    session_spend: SessionSpend | None = None,
) -> PreSendHook:
    """A pre-send hook: a call in a session whose budget's ``per_session_limit`` is spent is refused
    (hard and adaptive); adaptive budgets past ``degrade_at`` (of a period limit or of the session's
    limit) rewrite the request; then ``guard`` (the book's) reserves for the rewritten call or blocks
    it. Errors in these steps are logged and the call goes on to the guard unchanged; a
    ``BudgetExceededError`` reaches the caller."""
    budgets = list(budgets)
    adaptive = [b for b in budgets if b.enforcement_level is EnforcementLevel.ADAPTIVE and b.degradation_strategies]
    per_session = [b for b in budgets if b.per_session_limit is not None] if session_spend is not None else []
    warned: list[bool] = [False]

    def session_use(budget: Budget, info: RequestInfo) -> Decimal:
        session = info.attribution.get(attr.SESSION_ID)
        limit = budget.per_session_limit
        if session_spend is None or not session or not isinstance(limit, Decimal):
            return Decimal(0)
        spent = session_spend(session, budget.tenant_id)
        refusal = budget.session_block(session, spent)
        if refusal is not None:
            raise refusal
        return spent / limit if limit > 0 else Decimal(1 if spent > 0 else 0)

    def hook(info: RequestInfo) -> RequestRewrite | None:
        rewrite: RequestRewrite | None = None
        try:
            session_used: dict[str, Decimal] = {}
            for budget in per_session:
                if budget.applies_to(info.attribution):
                    session_used[budget.budget_id] = session_use(budget, info)
            for budget in adaptive:
                if not budget.applies_to(info.attribution):
                    continue
                period_used = budget.utilization(book) if book is not None else Decimal(0)
                used = max(period_used, session_used.get(budget.budget_id, Decimal(0)))
                if used >= Decimal(str(budget.degrade_at)):
                    found = budget.degrade(info)
                    if found is not None:
                        rewrite = found if rewrite is None else rewrite.merged(found)
            if rewrite is not None:
                info = dataclasses.replace(
                    info,
                    model=rewrite.model if rewrite.model is not None else info.model,
                    max_tokens=rewrite.max_tokens if rewrite.max_tokens is not None else info.max_tokens,
                    temperature=rewrite.temperature if rewrite.temperature is not None else info.temperature,
                    tools=0 if rewrite.disable_tools else info.tools,
                )
        except BudgetExceededError:
            raise
        except Exception:
            if not warned[0]:
                warned[0] = True
                logger.exception("costspan budget degradation failed; the call goes on unchanged")
            rewrite = None
        checked = guard(info) if guard is not None else None
        if rewrite is None:
            return checked
        return rewrite if checked is None else rewrite.merged(checked)

    return hook
