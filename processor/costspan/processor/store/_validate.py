"""Identifiers and numbers checked where they enter: one set of rules for OTLP, the JSON routes and the CLI.

The rules, with their limits as the constants below (``docs/hostile-input.md`` is the user's page):

- An identifier (tenant, user, workflow, project, session, service, model, provider, operation) holds
  no control character (C0 and C1, DEL, U+2028/U+2029: NUL, CR and LF included). A span or call
  carrying one is refused. The usage index's every-tenant key starts with NUL, so no accepted id can
  equal or start like it.
- A tenant id is refused, not shortened, when longer than the limit, and when it is ``.`` or ``..``
  or holds ``/`` or ``\\`` (tenant ids name budgets, keys and files): truncating it could merge two
  tenants. Any other identifier, and the free-text values (error type, instrumentation scope), is
  truncated to the limit, as the OpenTelemetry SDK does with ``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``,
  and counted (``value_truncated``).
- Token counts are integers with ``0 <= n <= 10**12``; cost is finite, ``>= 0`` and at most
  :data:`MAX_COST_USD` per call; latency is ``0 <= s <=`` :data:`MAX_LATENCY_S`; a call starts between
  2000-01-01 and one day after the server's clock.
- Names new to a tenant beyond the per-tenant bounds (:class:`NameBounds`) are summed as
  :data:`OVERFLOW` in the usage index instead of getting their own entry (``cardinality_<dim>``).

Every refusal and every change has a reason, counted by the server as ``costspan_rejected_total{reason}``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from costspan.processor.store._records import MAX_TOKENS, CallRecord

__all__ = [
    "CONTROL_FREE_PATTERN",
    "EARLIEST_START_NS",
    "FUTURE_SLACK_S",
    "MAX_COST_USD",
    "MAX_ID_LENGTH",
    "MAX_LATENCY_S",
    "MAX_TOKENS",
    "OVERFLOW",
    "REASONS",
    "REJECTED_PREFIX",
    "TENANT_PATTERN",
    "CardinalityLimits",
    "InvalidValueError",
    "NameBounds",
    "check_id",
    "check_tenant",
    "finite_decimal",
    "finite_seconds",
    "id_problem",
    "screen",
]

#: The longest identifier or attribute value kept (the SDK's attribute value length limit, by default).
MAX_ID_LENGTH: Final = 256
MAX_COST_USD: Final = Decimal(10**9)
MAX_LATENCY_S: Final = 7 * 86400
#: 2000-01-01T00:00:00Z in nanoseconds: a call that claims to start before it is refused.
EARLIEST_START_NS: Final = 946_684_800 * 10**9
#: How far after the server's clock a call may start (clock skew between hosts).
FUTURE_SLACK_S: Final = 86400
#: What a name beyond its tenant's bound is summed as.
OVERFLOW: Final = "(other)"
#: The store counter of a reason is this prefix and the reason (``Store.count``).
REJECTED_PREFIX: Final = "rejected."
#: Every reason a value is refused or changed (the labels of ``costspan_rejected_total``).
REASONS: Final = (
    "invalid_tenant",
    "invalid_id",
    "invalid_tokens",
    "invalid_cost",
    "invalid_latency",
    "invalid_timestamp",
    "value_truncated",
    "cardinality_model",
    "cardinality_user",
    "cardinality_workflow",
    "cardinality_session",
    "cardinality_project",
    "invalid_stored_record",
)

_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: The same class for a JSON schema ``pattern`` (both Python's and pydantic's regex engines read it).
CONTROL_FREE_PATTERN: Final = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*$"
#: Names a tenant may not take: a budget scope's wildcard, and the names the usage index and the
#: metrics fold the names beyond their bounds into.
RESERVED_TENANTS: Final = frozenset({"*", OVERFLOW, "__overflow__"})
_ODD_TENANTS: Final = frozenset({".", "..", *RESERVED_TENANTS})
TENANT_PATTERN: Final = r"^[^/\\\x00-\x1f\x7f-\x9f\u2028\u2029]*$"
_ID_FIELDS: Final = ("service", "tenant", "workflow", "user", "session", "provider", "model", "operation", "project")
_TEXT_FIELDS: Final = ("source", "error_type", "reservation_id")
_MAX_LATENCY_NS: Final = MAX_LATENCY_S * 10**9
_FUTURE_SLACK_NS: Final = FUTURE_SLACK_S * 10**9


class InvalidValueError(ValueError):
    """A value the rules refuse; ``reason`` is one of :data:`REASONS`, the message names the field."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def id_problem(value: str, *, tenant: bool = False, limit: int = MAX_ID_LENGTH) -> str:
    """Why ``value`` is not a valid identifier (``""``: it is). Length counts only for a tenant."""
    if _CONTROL.search(value):
        return "holds a control character"
    if tenant:
        if len(value) > limit:
            return f"is longer than {limit} characters"
        if "/" in value or "\\" in value or value in (".", ".."):
            return "holds a path separator or is '.' or '..'"
        if value in RESERVED_TENANTS:
            return f"is {value!r}, a name costspan keeps for itself"
    return ""


def check_id(value: str, field: str, *, limit: int = MAX_ID_LENGTH) -> str:
    """``value`` if it is a valid identifier of at most ``limit`` characters; else InvalidValueError."""
    problem = id_problem(value) or (f"is longer than {limit} characters" if len(value) > limit else "")
    if problem:
        raise InvalidValueError("invalid_id", f"{field} {problem}")
    return value


def check_tenant(value: str, field: str = "tenant id", *, limit: int = MAX_ID_LENGTH) -> str:
    """``value`` if it is a valid tenant id; else InvalidValueError (reason ``invalid_tenant``)."""
    problem = id_problem(value, tenant=True, limit=limit)
    if problem:
        raise InvalidValueError("invalid_tenant", f"{field} {problem}")
    return value


def finite_decimal(value: Decimal, field: str, *, limit: Decimal = MAX_COST_USD) -> Decimal:
    """``value`` if finite and in ``[0, limit]``; else InvalidValueError (reason ``invalid_cost``)."""
    if not value.is_finite() or not 0 <= value <= limit:
        raise InvalidValueError("invalid_cost", f"{field} must be a finite amount from 0 to {limit}")
    return value


def finite_seconds(value: float, field: str, *, limit: float = MAX_LATENCY_S) -> float:
    """``value`` if finite and in ``[0, limit]``; else InvalidValueError (reason ``invalid_latency``)."""
    if not math.isfinite(value) or not 0 <= value <= limit:
        raise InvalidValueError("invalid_latency", f"{field} must be a finite number from 0 to {limit}")
    return value


def _truncated(record: CallRecord, limit: int) -> CallRecord | None:
    """``record`` with every over-long identifier (not the tenant) and free text cut to ``limit``; None if none is."""
    changes = {
        name: value[:limit]
        for name in (*_ID_FIELDS, *_TEXT_FIELDS)
        if name != "tenant" and len(value := getattr(record, name)) > limit
    }
    return record._replace(**changes) if changes else None


def screen(record: CallRecord, now_ns: int, limit: int = MAX_ID_LENGTH) -> tuple[CallRecord | None, str, str]:
    """``(record, reason, message)``: the record as stored (``None``: refused), and why it was refused or
    changed (``""``: it was taken as it came).

    Runs for every span received, so the common case is one unpacking, one string built and checked
    by ``str.isprintable`` (every character refused is unprintable; a value that is not printable for
    another reason, a no-break space say, is looked at by the exact rule), one ``or`` of the counts and
    a few comparisons. Cost is not checked: on this path it is computed from bounded counts, never read.
    """
    (_, _, _, start, end, service, tenant, workflow, user, session, provider, model, operation, source,
     tokens, _, _, _, _, _, _, _, _, _, _, error_type, _, project, reservation_id, _) = record  # fmt: skip
    ids = service + tenant + workflow + user + session + provider + model + operation + project
    if not ids.isprintable() and _CONTROL.search(ids):
        for name in _ID_FIELDS:
            if _CONTROL.search(getattr(record, name)):
                reason = "invalid_tenant" if name == "tenant" else "invalid_id"
                return None, reason, f"span refused: {name} holds a control character"
    if len(tenant) > limit or "/" in tenant or "\\" in tenant or tenant in _ODD_TENANTS:
        return None, "invalid_tenant", f"span refused: tenant id {id_problem(tenant, tenant=True, limit=limit)}"
    i, o, cr, cw, w1, rs = tokens
    if not 0 <= (i | o | cr | cw | w1 | rs) <= MAX_TOKENS and (min(tokens) < 0 or max(tokens) > MAX_TOKENS):
        return None, "invalid_tokens", f"span refused: a token count is not an integer from 0 to {MAX_TOKENS}"
    if not EARLIEST_START_NS <= start <= now_ns + _FUTURE_SLACK_NS:
        return None, "invalid_timestamp", "span refused: its start time is before 2000 or more than a day ahead"
    if end - start > _MAX_LATENCY_NS:
        return None, "invalid_latency", f"span refused: it lasts more than {MAX_LATENCY_S} seconds"
    if len(ids) + len(source) + len(error_type) + len(reservation_id) > limit:
        shorter = _truncated(record, limit)
        if shorter is not None:
            return shorter, "value_truncated", ""
    return record, "", ""


@dataclass(frozen=True, slots=True)
class CardinalityLimits:
    """How many distinct names of each dimension one tenant may have in the usage index."""

    model: int = 1_000
    user: int = 100_000
    workflow: int = 10_000
    session: int = 1_000_000
    project: int = 10_000

    def __post_init__(self) -> None:
        for dim in ("model", "user", "workflow", "session", "project"):
            if getattr(self, dim) < 1:
                raise ValueError(f"the bound of {dim} names per tenant must be at least 1")


class NameBounds:
    """The names each tenant has per dimension; a name beyond the bound is :data:`OVERFLOW`.

    Not thread-safe: the owner (the usage index) calls it under its own lock. ``count(reason, n)``
    receives the calls folded into :data:`OVERFLOW`.
    """

    __slots__ = ("_count", "_known", "limits")

    def __init__(self, limits: CardinalityLimits, count: Callable[[str, int], None] | None = None) -> None:
        self.limits = limits
        self._count = count
        self._known: dict[tuple[str, str], set[str]] = {}

    def name(self, tenant: str, dim: str, name: str, calls: int = 1) -> str:
        """``name`` if ``tenant`` already has it or has room for it, else :data:`OVERFLOW` (counted)."""
        known = self._known.get((tenant, dim))
        if known is None:
            known = self._known[tenant, dim] = set()
        if name in known:
            return name
        if len(known) < getattr(self.limits, dim) or name == OVERFLOW:
            known.add(name)
            return name
        if self._count is not None:
            self._count(f"cardinality_{dim}", calls)
        return OVERFLOW

    def learn(self, tenant: str, dim: str, names: set[str] | list[str]) -> None:
        """Take names already held (a snapshot's) as known, without bounding them."""
        self._known.setdefault((tenant, dim), set()).update(names)

    def forget(self, tenant: str, dim: str, names: list[str]) -> None:
        """Names no longer held (aged or pruned) free their places under the bound."""
        known = self._known.get((tenant, dim))
        if known is not None:
            known.difference_update(names)

    def clear(self) -> None:
        self._known.clear()

    def size(self, tenant: str, dim: str) -> int:
        return len(self._known.get((tenant, dim), ()))
