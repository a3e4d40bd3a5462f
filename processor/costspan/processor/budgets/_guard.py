"""The in-app guard: a pre-send hook that reserves before the call, and the span path that settles it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from costspan.instrumentation import BudgetExceededError, PreSendHook, RequestInfo, RequestRewrite
from costspan.instrumentation import attributes as attr
from costspan.processor.budgets._book import BudgetBook
from costspan.processor.budgets._model import Block, Call, Unit

__all__ = ["BudgetSpanProcessor", "budget_exceeded_error", "budget_guard", "call_from_attributes", "call_from_request"]

logger = logging.getLogger(__name__)


def call_from_request(info: RequestInfo, *, service: str | None = None, count_input: bool = True) -> Call:
    """The budget's view of a request about to be sent (attribution from the context's baggage)."""
    a = info.attribution
    return Call(
        tenant=a.get(attr.TENANT_ID),
        service=service,
        workflow=a.get(attr.WORKFLOW_ID),
        user=a.get(attr.USER_ID),
        project=a.get(attr.PROJECT_ID),
        provider=info.provider,
        model=info.model,
        input_tokens=info.estimate_input_tokens() if count_input else None,
        max_tokens=info.max_tokens,
    )


def budget_exceeded_error(block: Block, *, show_spend: bool = True) -> BudgetExceededError:
    """The app's error for a refusal: the budget, why, this call's estimate and how, what to do."""
    usd = block.unit is Unit.USD and show_spend
    return BudgetExceededError(
        block.message(show_spend=show_spend),
        budget_id=block.budget_id,
        scope=block.scope,
        limit_usd=block.limit if usd else None,
        spent_usd=block.spent if usd else None,
        resets_at=block.resets_at.isoformat() if block.resets_at else None,
        reserved_usd=block.reserved if usd else None,
        estimate_usd=block.estimate_usd,
        estimate_basis=block.basis.describe() if block.basis is not None else "",
        reason="exhausted" if block.exhausted else "estimate_exceeds_room",
        advice=tuple(block.advice()),
    )


def budget_guard(
    book: BudgetBook, *, service: str | None = None, show_spend: bool = True, count_input: bool = True
) -> PreSendHook:
    """A pre-send hook for :class:`~costspan.instrumentation.CostspanInstrumentor` (in-process mode).

    Reserves the call's estimate against every matching budget; raises ``BudgetExceededError`` when
    a hard (or exhausted adaptive) budget has no room, or returns a ``RequestRewrite`` carrying the
    reservation id (written on the call's span as ``costspan.budget.reservation_id``) and, from an
    adaptive budget, a fallback model or capped max_tokens. :class:`BudgetSpanProcessor` settles
    exactly that reservation when the priced span ends (or it expires after the book's TTL).
    ``service`` is this app's ``service.name`` (the hook cannot see the resource).
    """

    def guard(info: RequestInfo) -> RequestRewrite | None:
        decision = book.check(call_from_request(info, service=service, count_input=count_input))
        if decision.block is not None:
            raise budget_exceeded_error(decision.block, show_spend=show_spend)
        if decision.rewritten:
            return RequestRewrite(
                model=decision.model,
                max_tokens=decision.max_tokens,
                reason=decision.reason,
                reservation_id=decision.reservation_id or "",
            )
        if decision.reservation_id is not None:
            return RequestRewrite(reservation_id=decision.reservation_id)
        return None

    return guard


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def call_from_attributes(attributes: Mapping[str, object], service: str | None = None) -> Call | None:
    """The budget's view of a finished call span (None if the span is not an LLM call)."""

    def text(*keys: str) -> str | None:
        for key in keys:
            value = attributes.get(key)
            if isinstance(value, str) and value:
                return value
        return None

    model = text(attr.GEN_AI_REQUEST_MODEL, attr.GEN_AI_RESPONSE_MODEL)
    provider = text(attr.GEN_AI_PROVIDER_NAME, attr.GEN_AI_SYSTEM)
    if model is None or provider is None:
        return None
    return Call(
        tenant=text(attr.TENANT_ID),
        service=service,
        workflow=text(attr.WORKFLOW_ID),
        user=text(attr.USER_ID),
        project=text(attr.PROJECT_ID),
        provider=provider,
        model=model,
    )


def cost_of(attributes: Mapping[str, object]) -> tuple[Decimal | None, int | None]:
    """(USD cost, total tokens) of a finished call span; cost None when unpriced."""
    cost: Decimal | None = None
    raw = attributes.get(attr.COST_USD)
    if isinstance(raw, int | float | str) and not isinstance(raw, bool):
        try:
            cost = Decimal(str(raw))
        except InvalidOperation:
            cost = None
    tin = _int(attributes.get(attr.GEN_AI_USAGE_INPUT_TOKENS))
    tout = _int(attributes.get(attr.GEN_AI_USAGE_OUTPUT_TOKENS))
    tokens = None if tin is None and tout is None else (tin or 0) + (tout or 0)
    if cost is None and tokens is None and attributes.get(attr.ERROR_TYPE):
        return Decimal(0), 0  # failed before anything was billed
    return cost, tokens


class BudgetSpanProcessor(SpanProcessor):
    """Settles the guard's reservations from the priced spans the instrumentation emits (in-process).

    Add it to the app's ``TracerProvider`` next to the guard, with the same ``service``. An LLM span
    settles the reservation named by its ``costspan.budget.reservation_id``; a span without one
    settles the oldest open reservation of the same scope and model; either way a span with nothing
    to settle is recorded as unreserved spend. Never throws.
    """

    def __init__(self, book: BudgetBook, *, service: str | None = None) -> None:
        self._book = book
        self._service = service
        self.errors = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        try:
            attributes = span.attributes or {}
            if attributes.get(attr.BUDGET_ACTION) == "blocked":
                return
            call = call_from_attributes(attributes, self._service)
            if call is None:
                return
            cost, tokens = cost_of(attributes)
            rid = attributes.get(attr.BUDGET_RESERVATION_ID)
            at = None if span.start_time is None else span.start_time / 1e9  # counted in the periods of its start
            self._book.settle_call(call, cost, tokens, reservation_id=rid if isinstance(rid, str) else None, at=at)
        except Exception:
            self.errors += 1
            logger.exception("budget settlement from a span failed")

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
