"""What a budget is: frozen values inside, a pydantic schema at the edge that explains bad input."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "DEFAULT_THRESHOLDS",
    "EACH",
    "EMAIL_PATTERN",
    "SCOPE_DIMENSIONS",
    "Block",
    "Budget",
    "BudgetSpec",
    "Call",
    "Decision",
    "EstimateBasis",
    "InvalidBudgetError",
    "Mode",
    "Period",
    "Unit",
    "money",
    "parse_budget",
]

#: The dimensions a budget can be scoped by, in a fixed order (also the order of :class:`Call` fields).
SCOPE_DIMENSIONS: tuple[str, ...] = ("tenant", "service", "workflow", "user", "project", "provider", "model")
#: A scope value meaning "each distinct value gets its own counter" (e.g. ``{"tenant": "*"}``).
EACH = "*"
DEFAULT_THRESHOLDS: tuple[int, ...] = (50, 75, 90, 100)
#: An e-mail address a budget's alerts go to: one ``@``, a dotted domain, no spaces, quotes, commas or
#: angle brackets (nothing that could break out of a ``To:`` header).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
EMAIL_PATTERN = rf"^[^@\s<>,;\"']{{1,64}}@{_LABEL}(?:\.{_LABEL})+$"
#: At most this many e-mail addresses per budget.
MAX_ALERT_EMAILS = 20


def money(value: Decimal) -> str:
    """A Decimal as plain digits without exponent or trailing zeros: ``0E-7`` → ``0``, ``0.0125000`` → ``0.0125``."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


class InvalidBudgetError(ValueError):
    """A budget definition that cannot be used; the message says which field and why."""


class Period(StrEnum):
    PER_REQUEST = "per_request"
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"
    TOTAL = "total"


class Unit(StrEnum):
    USD = "usd"
    TOKENS = "tokens"
    REQUESTS = "requests"


class Mode(StrEnum):
    HARD = "hard"  # block
    SOFT = "soft"  # alert only
    ADAPTIVE = "adaptive"  # fallback model, capped max_tokens, then block


@dataclass(frozen=True, slots=True)
class Budget:
    id: str
    period: Period
    limit: Decimal
    scope: tuple[tuple[str, str], ...] = ()  # sorted (dimension, value); empty = global
    unit: Unit = Unit.USD
    mode: Mode = Mode.HARD
    fallback_models: tuple[str, ...] = ()
    max_tokens_cap: int | None = None
    thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS
    timezone: str = "UTC"
    name: str = ""
    #: who gets an e-mail when a threshold is crossed (needs the server's SMTP settings)
    alert_emails: tuple[str, ...] = ()

    @property
    def scope_dict(self) -> dict[str, str]:
        return dict(self.scope)

    @property
    def each_dimensions(self) -> tuple[str, ...]:
        return tuple(dim for dim, value in self.scope if value == EACH)

    def to_json(self) -> dict[str, Any]:
        out = self._fields_json()
        if self.alert_emails:  # only when set: budgets without it read (and are stored) as before
            out["alert_emails"] = list(self.alert_emails)
        return out

    def _fields_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "scope": self.scope_dict,
            "period": self.period.value,
            "limit": str(self.limit),
            "unit": self.unit.value,
            "mode": self.mode.value,
            "fallback_models": list(self.fallback_models),
            "max_tokens_cap": self.max_tokens_cap,
            "thresholds": list(self.thresholds),
            "timezone": self.timezone,
        }


class BudgetSpec(BaseModel):
    """A budget as it arrives over the API, from a file or from the environment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
    name: str = Field(default="", max_length=200)
    scope: dict[Literal["tenant", "service", "workflow", "user", "project", "provider", "model"], str] = Field(
        default_factory=dict
    )
    period: Period
    limit: Decimal = Field(ge=0, allow_inf_nan=False)
    unit: Unit = Unit.USD
    mode: Mode = Mode.HARD
    fallback_models: list[str] = Field(default_factory=list)
    max_tokens_cap: int | None = Field(default=None, gt=0)
    thresholds: list[int] = Field(default_factory=lambda: list(DEFAULT_THRESHOLDS))
    timezone: str = "UTC"
    alert_emails: list[Annotated[str, Field(max_length=254, pattern=EMAIL_PATTERN)]] = Field(
        default_factory=list, max_length=MAX_ALERT_EMAILS
    )

    @field_validator("scope")
    @classmethod
    def _scope_values(cls, value: dict[str, str]) -> dict[str, str]:
        for dim, v in value.items():
            if not v.strip():
                raise ValueError(f"scope {dim} must not be empty (leave the dimension out for 'any')")
        return value

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, value: list[int]) -> list[int]:
        bad = [t for t in value if not 0 < t <= 1000]
        if bad:
            raise ValueError(f"thresholds are percentages between 1 and 1000, got {bad}")
        return sorted(set(value))

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r} (e.g. 'UTC', 'Europe/Berlin')") from None
        return value

    @model_validator(mode="after")
    def _adaptive(self) -> BudgetSpec:
        if self.mode is Mode.ADAPTIVE and not self.fallback_models:
            raise ValueError("an adaptive budget needs at least one model in fallback_models")
        if any(not m.strip() for m in self.fallback_models):
            raise ValueError("fallback_models must not contain empty names")
        return self

    def to_budget(self) -> Budget:
        return Budget(
            id=self.id or f"b-{uuid.uuid4().hex[:12]}",
            name=self.name,
            scope=tuple(sorted(self.scope.items())),
            period=self.period,
            limit=self.limit,
            unit=self.unit,
            mode=self.mode,
            fallback_models=tuple(self.fallback_models),
            max_tokens_cap=self.max_tokens_cap,
            thresholds=tuple(self.thresholds),
            timezone=self.timezone,
            alert_emails=tuple(dict.fromkeys(self.alert_emails)),
        )


def explain(exc: ValidationError) -> str:
    """One line per problem: ``field: message``."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "budget"
        parts.append(f"{where}: {err['msg']}")
    return "invalid budget: " + "; ".join(parts)


def parse_budget(data: Mapping[str, Any] | BudgetSpec) -> Budget:
    """Validate a budget definition; raises :class:`InvalidBudgetError` with a readable message."""
    if isinstance(data, BudgetSpec):
        return data.to_budget()
    try:
        return BudgetSpec.model_validate(dict(data)).to_budget()
    except ValidationError as exc:
        raise InvalidBudgetError(explain(exc)) from None


@dataclass(frozen=True, slots=True)
class Call:
    """One LLM call as the budgets see it: who makes it, to which model, how big it may get."""

    tenant: str | None = None
    service: str | None = None
    workflow: str | None = None
    user: str | None = None
    project: str | None = None
    provider: str | None = None
    model: str | None = None
    input_tokens: int | None = None
    max_tokens: int | None = None

    def dims(self) -> tuple[str | None, ...]:
        return (self.tenant, self.service, self.workflow, self.user, self.project, self.provider, self.model)


@dataclass(frozen=True, slots=True)
class EstimateBasis:
    """How a call's pre-call estimate was made: its tokens, and where the output count came from.

    ``source`` is ``max_tokens`` (the caller's, possibly capped at the model's maximum output),
    ``model_max`` (max_tokens unset: the model's maximum output from the catalog),
    ``family_max`` (unset, and the catalog has no figure: the model family's table, or its default),
    or ``configured`` (unset: the estimator's configured default).
    """

    input_tokens: int
    output_tokens: int
    max_tokens: int | None  # as the caller sent it
    source: str

    def describe(self) -> str:
        """``max_tokens=400``, or ``max_tokens unset → assumed 16384 output tokens (model max)``."""
        if self.max_tokens is not None:
            if self.output_tokens < self.max_tokens:
                return f"max_tokens={self.max_tokens}, capped at the model's max output {self.output_tokens}"
            return f"max_tokens={self.max_tokens}"
        why = {"model_max": "model max", "family_max": "model family max", "configured": "configured default"}
        return f"max_tokens unset → assumed {self.output_tokens} output tokens ({why.get(self.source, self.source)})"


@dataclass(frozen=True, slots=True)
class Block:
    """Why a call was refused: the budget and scope that tripped, its limit, spend and reset, and
    this call's estimate and how it was made."""

    budget_id: str
    scope: Mapping[str, str]
    unit: Unit
    period: Period
    limit: Decimal
    spent: Decimal
    reserved: Decimal
    requested: Decimal
    resets_at: datetime | None
    #: this call's estimated cost in USD (None: unpriced model) and how it was made
    estimate_usd: Decimal | None = None
    basis: EstimateBasis | None = None
    mode: Mode = Mode.HARD
    #: With spend leases across instances: why this instance has no more room (e.g. the lease owner is down).
    note: str = ""

    def retry_after(self, now: float) -> int | None:
        """Whole seconds until the period resets (None: it never does)."""
        if self.resets_at is None:
            return None
        return max(1, int(self.resets_at.timestamp() - now + 0.999))

    @property
    def exhausted(self) -> bool:
        """Whether spend alone has used the limit (else the call's estimate does not fit what is left)."""
        return self.spent >= self.limit

    def _amount(self, value: Decimal) -> str:
        return f"{money(value)} USD" if self.unit is Unit.USD else f"{money(value)} {self.unit.value}"

    def estimate_text(self) -> str:
        """This call's estimate and how it was made (the caller's own figures, always shown)."""
        text = "this call's estimate " + self._amount(self.requested)
        details = []
        if self.unit is not Unit.USD and self.estimate_usd is not None:
            details.append(f"{money(self.estimate_usd)} USD")
        if self.basis is not None:
            b = self.basis
            details.append(f"{b.input_tokens} input + {b.output_tokens} output tokens, {b.describe()}")
        return text + (f" ({'; '.join(details)})" if details else "")

    def advice(self) -> list[str]:
        """What the caller can do, most likely first."""
        out: list[str] = []
        basis = self.basis
        if basis is not None and self.unit is not Unit.REQUESTS:
            if basis.max_tokens is None:
                out.append("set max_tokens to what the call needs (the estimate assumed the model's max output)")
            elif not self.exhausted:
                out.append("lower max_tokens")
        out.append(f"raise the limit of budget {self.budget_id!r}")
        if self.reserved > 0:
            out.append("wait for calls in flight to settle their reservations")
        if self.resets_at is not None:
            out.append(f"wait for the period to roll at {self.resets_at.isoformat()}")
        return out

    def message(self, *, show_spend: bool = True) -> str:
        """One paragraph: which budget, why (with its figures when ``show_spend``), this call's estimate,
        what to do."""
        scope = ", ".join(f"{k}={v}" for k, v in self.scope.items()) or "global"
        what = "is exhausted" if self.exhausted else "has no room for this call"
        text = f"budget {self.budget_id!r} ({scope}, {self.period.value}, {self.mode.value}) {what}"
        if show_spend:
            text += (
                f": limit {self._amount(self.limit)}, spent {self._amount(self.spent)},"
                f" reserved {self._amount(self.reserved)}"
            )
        if self.note:
            text += f" ({self.note})"
        return f"{text}; {self.estimate_text()}. To go ahead: " + "; or ".join(self.advice()) + "."


class Decision(NamedTuple):
    """The answer to a pre-call check. ``allowed`` calls hold ``reservation_id`` until settled.

    A named tuple, not a frozen dataclass: it is built on every check (the 5 µs path).
    """

    allowed: bool
    reservation_id: str | None = None
    estimate_usd: Decimal | None = None
    block: Block | None = None
    #: Set when an adaptive budget degraded the call: the model and max_tokens to send instead.
    model: str | None = None
    max_tokens: int | None = None
    reason: str = ""

    @property
    def rewritten(self) -> bool:
        return self.model is not None or self.max_tokens is not None


def adaptive_candidates(
    budget: Budget, call: Call, served: Callable[[str], bool] = lambda model: True
) -> list[tuple[str | None, int | None]]:
    """What an adaptive budget tries, in order: each fallback model, the capped max_tokens, both.

    Only fallbacks ``served(model)`` accepts are tried: a model the call's provider does not serve
    (``gpt-4o-mini`` for an Anthropic call) would fail or be mispriced.
    """
    fallbacks = [m for m in budget.fallback_models if m == call.model or served(m)]
    out: list[tuple[str | None, int | None]] = [(m, call.max_tokens) for m in fallbacks]
    cap = budget.max_tokens_cap
    if cap is not None and (call.max_tokens is None or call.max_tokens > cap):
        out.append((call.model, cap))
        out += [(m, cap) for m in fallbacks]
    return out
