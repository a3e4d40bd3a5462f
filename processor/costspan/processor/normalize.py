"""Turn a span, whoever emitted it, into one priced :class:`CallRecord` — or ``None`` for non-LLM spans.

Every spelling seen in the wild is read here: semconv ``gen_ai.provider.name`` and the older
``gen_ai.system``; ``gen_ai.usage.input_tokens``/``output_tokens`` and the older
``prompt_tokens``/``completion_tokens``; OpenLLMetry's ``llm.usage.*`` and
``gen_ai.usage.cache_*_input_tokens``; semconv ``cache_read``/``cache_creation``/``cache_write``;
the anthropic SDK's ``anthropic.usage.cache_creation.ephemeral_{5m,1h}_input_tokens``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Final, NamedTuple, Protocol

from costspan.instrumentation import attributes as attr
from costspan.pricing import PriceBreakdown, Usage
from costspan.processor.records import CallRecord, TokenCounts

__all__ = ["WANTED_KEYS", "AttrValue", "Normalizer", "SpanView"]

logger = logging.getLogger(__name__)

AttrValue = str | bool | int | float | tuple[object, ...]
_Money = Decimal | None
_Costs = tuple[_Money, _Money, _Money, _Money, _Money, _Money]

#: Operations that are one billable model call (agent and tool spans are not).
CALL_OPERATIONS: Final = frozenset(
    {"chat", "text_completion", "completion", "generate_content", "embeddings", "responses", "create_response"}
)

_INPUT_KEYS: Final = (attr.GEN_AI_USAGE_INPUT_TOKENS, attr.GEN_AI_USAGE_PROMPT_TOKENS, attr.LLM_USAGE_PROMPT_TOKENS)
_OUTPUT_KEYS: Final = (
    attr.GEN_AI_USAGE_OUTPUT_TOKENS,
    attr.GEN_AI_USAGE_COMPLETION_TOKENS,
    attr.LLM_USAGE_COMPLETION_TOKENS,
)
_CACHE_READ_KEYS: Final = (attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, attr.LLM_USAGE_CACHE_READ_INPUT_TOKENS)
_CACHE_WRITE_KEYS: Final = (
    attr.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS,
    attr.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
    attr.LLM_USAGE_CACHE_CREATION_INPUT_TOKENS,
)
_USAGE_KEYS: Final = frozenset(
    (*_INPUT_KEYS, *_OUTPUT_KEYS, *_CACHE_READ_KEYS, *_CACHE_WRITE_KEYS, attr.LLM_USAGE_TOTAL_TOKENS)
)
_REASONING_KEYS: Final = (attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,)
_LLM_REQUEST_TYPE: Final = "llm.request.type"
#: OpenAI's service_tier values → costspan's pricing tiers ("auto" and "default" are standard).
_SERVICE_TIERS: Final = {"flex": "flex", "priority": "priority", "batch": "batch", "scale": "standard"}
_USER_FALLBACKS: Final = ("user.id", "enduser.id")
_SESSION_FALLBACKS: Final = ("session.id", attr.GEN_AI_CONVERSATION_ID)

#: The span attributes the normalizer reads; everything else (content included) is never decoded.
WANTED_KEYS: Final = frozenset(
    {
        *_USAGE_KEYS,
        attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
        attr.ANTHROPIC_CACHE_WRITE_5M,
        attr.ANTHROPIC_CACHE_WRITE_1H,
        attr.GEN_AI_OPERATION_NAME,
        attr.GEN_AI_PROVIDER_NAME,
        attr.GEN_AI_SYSTEM,
        attr.GEN_AI_REQUEST_MODEL,
        attr.GEN_AI_RESPONSE_MODEL,
        attr.ERROR_TYPE,
        attr.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
        attr.GEN_AI_REQUEST_SERVICE_TIER,
        attr.GEN_AI_RESPONSE_SERVICE_TIER,
        attr.TENANT_ID,
        attr.WORKFLOW_ID,
        attr.USER_ID,
        attr.SESSION_ID,
        attr.PROJECT_ID,
        attr.BUDGET_RESERVATION_ID,
        attr.TOKENS_ESTIMATED,
        attr.RECORD_SOURCE,
        attr.ENRICHED,
        _LLM_REQUEST_TYPE,
        *_USER_FALLBACKS,
        *_SESSION_FALLBACKS,
    }
)
#: Keys most spans do not carry; a span with none of them takes every default in one check.
_OPTIONAL_KEYS: Final = frozenset(
    {
        attr.TOKENS_ESTIMATED,
        attr.ERROR_TYPE,
        attr.RECORD_SOURCE,
        attr.ENRICHED,
        attr.GEN_AI_RESPONSE_SERVICE_TIER,
        attr.GEN_AI_REQUEST_SERVICE_TIER,
        attr.WORKFLOW_ID,
        attr.USER_ID,
        *_USER_FALLBACKS,
        attr.SESSION_ID,
        *_SESSION_FALLBACKS,
        attr.PROJECT_ID,
        attr.BUDGET_RESERVATION_ID,
        attr.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
    }
)


class SpanView(NamedTuple):
    """The parts of a span the normalizer needs, whatever it was decoded from.

    A named tuple rather than a frozen dataclass: one is built for every span received, and a
    frozen dataclass's ``__init__`` costs several times more.
    """

    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int
    end_ns: int
    attributes: Mapping[str, AttrValue]
    resource: Mapping[str, AttrValue]
    scope_name: str
    status_error: bool = False


class Pricer(Protocol):
    def price_call(
        self,
        model: str,
        usage: Usage,
        *,
        provider: str | None = ...,
        at: float | None = ...,
        tier: str = ...,
        tenant: str | None = ...,
        currency: str = ...,
    ) -> PriceBreakdown: ...


def _int(attrs: Mapping[str, AttrValue], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = attrs.get(key)
        if value is None:
            continue
        if type(value) is int:  # the common case, first and cheapest
            return value
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    return None


def _str(attrs: Mapping[str, AttrValue], *keys: str) -> str:
    for key in keys:
        value = attrs.get(key)
        if value and type(value) is str:
            return value
    return ""


def _ttfc(value: AttrValue | None) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 86400:
        return None
    return float(value)


def _bool(value: AttrValue | None) -> bool:
    if isinstance(value, str):
        return value.lower() == "true"
    return value is True


class Normalizer:
    """Reads spans into priced call records; counts what it could not price instead of raising."""

    def __init__(self, pricer: Pricer, *, default_tenant: str = "", default_service: str = "unknown") -> None:
        self._pricer = pricer
        self._default_tenant = default_tenant
        self._default_service = default_service
        self._last_resource: Mapping[str, AttrValue] | None = None
        self._resource_dims = ("", "", "", "", "", "")

    @staticmethod
    def is_call(attrs: Mapping[str, object]) -> bool:
        """Whether the span describes one model call (cheap: looks at a few keys only)."""
        if attr.RECORD_SOURCE in attrs:
            return True
        if not (attrs.get(attr.GEN_AI_REQUEST_MODEL) or attrs.get(attr.GEN_AI_RESPONSE_MODEL)):
            return False
        if not _USAGE_KEYS.isdisjoint(attrs):
            return True
        operation = attrs.get(attr.GEN_AI_OPERATION_NAME) or attrs.get(_LLM_REQUEST_TYPE)
        return operation in CALL_OPERATIONS

    def tokens(self, attrs: Mapping[str, AttrValue], provider: str) -> tuple[TokenCounts, Usage | None, str]:
        """Usage in the semconv-inclusive meaning, as counts and as a pricing ``Usage``.

        The ``Usage`` is ``None``, with a reason, when the counts are inconsistent.
        """
        # the first spelling, as an int, is the common case: looked up once before the general reading
        value = attrs.get(_INPUT_KEYS[0])
        input_tokens = value if type(value) is int else _int(attrs, _INPUT_KEYS)
        value = attrs.get(_OUTPUT_KEYS[0])
        output_tokens = value if type(value) is int else _int(attrs, _OUTPUT_KEYS)
        if input_tokens is None or output_tokens is None:
            total = _int(attrs, (attr.LLM_USAGE_TOTAL_TOKENS,))
            if input_tokens is None and output_tokens is not None and total is not None:
                input_tokens = total - output_tokens
            if output_tokens is None and input_tokens is not None and total is not None:
                output_tokens = total - input_tokens
        value = attrs.get(_CACHE_READ_KEYS[0])
        cache_read = (value if type(value) is int else _int(attrs, _CACHE_READ_KEYS)) or 0
        cache_write = _int(attrs, _CACHE_WRITE_KEYS)
        write_1h = 0
        if attr.ANTHROPIC_CACHE_WRITE_1H in attrs or attr.ANTHROPIC_CACHE_WRITE_5M in attrs:
            write_1h = _int(attrs, (attr.ANTHROPIC_CACHE_WRITE_1H,)) or 0
            if cache_write is None:
                cache_write = (_int(attrs, (attr.ANTHROPIC_CACHE_WRITE_5M,)) or 0) + write_1h
        cache_write = cache_write or 0
        input_tokens = input_tokens or 0
        if cache_read + cache_write > input_tokens and provider == "anthropic":
            # Anthropic's API spelling (input EXCLUDES cache tokens) leaked into the input count.
            input_tokens += cache_read + cache_write
        counts = TokenCounts(
            input_tokens,
            output_tokens or 0,
            cache_read,
            cache_write,
            write_1h,
            (_int(attrs, _REASONING_KEYS) or 0) if attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS in attrs else 0,
        )
        try:
            usage = Usage(
                input_tokens=counts.input,
                output_tokens=counts.output,
                cache_read_tokens=counts.cache_read,
                cache_write_tokens=counts.cache_write,
                cache_write_1h_tokens=counts.cache_write_1h,
                reasoning_tokens=counts.reasoning,
            )
        except ValueError as exc:  # InvalidUsageError
            return counts, None, f"invalid usage: {exc}"
        return counts, usage, ""

    def normalize(self, span: SpanView) -> CallRecord | None:
        """The call record of ``span``, or ``None`` if it does not describe an LLM call."""
        attrs = span.attributes
        if not self.is_call(attrs):
            return None
        resource = span.resource
        if resource is not self._last_resource:  # spans of one export share their resource
            self._last_resource = resource
            self._resource_dims = (
                _str(resource, attr.SERVICE_NAME) or self._default_service,
                _str(resource, attr.TENANT_ID) or self._default_tenant,
                _str(resource, attr.WORKFLOW_ID),
                _str(resource, attr.USER_ID),
                _str(resource, attr.SESSION_ID),
                _str(resource, attr.PROJECT_ID),
            )
        service, resource_tenant, resource_workflow, resource_user, resource_session, resource_project = (
            self._resource_dims
        )
        provider = _str(attrs, attr.GEN_AI_PROVIDER_NAME, attr.GEN_AI_SYSTEM).lower() or "unknown"
        model = _str(attrs, attr.GEN_AI_RESPONSE_MODEL, attr.GEN_AI_REQUEST_MODEL) or "unknown"
        operation = _str(attrs, attr.GEN_AI_OPERATION_NAME, _LLM_REQUEST_TYPE) or "chat"
        tokens, usage, invalid = self.tokens(attrs, provider)
        tenant = _str(attrs, attr.TENANT_ID) or resource_tenant
        if _OPTIONAL_KEYS.isdisjoint(attrs):  # the common span: none of the rarer keys, so their defaults
            estimated = False
            error_type = "error" if span.status_error else ""
            source = span.scope_name or "unknown"
            tier = "standard"
            workflow, user, session = resource_workflow, resource_user, resource_session
            project, reservation, ttfc = resource_project, "", None
        else:
            estimated = _bool(attrs.get(attr.TOKENS_ESTIMATED))
            error_type = _str(attrs, attr.ERROR_TYPE) or ("error" if span.status_error else "")
            if attr.RECORD_SOURCE in attrs:
                source = "costspan"
            elif _bool(attrs.get(attr.ENRICHED)):
                source = "costspan-enriched"
            else:
                source = span.scope_name or "unknown"
            tier = _SERVICE_TIERS.get(
                _str(attrs, attr.GEN_AI_RESPONSE_SERVICE_TIER, attr.GEN_AI_REQUEST_SERVICE_TIER).lower(), "standard"
            )
            workflow = _str(attrs, attr.WORKFLOW_ID) or resource_workflow
            user = _str(attrs, attr.USER_ID, *_USER_FALLBACKS) or resource_user
            session = _str(attrs, attr.SESSION_ID, *_SESSION_FALLBACKS) or resource_session
            project = _str(attrs, attr.PROJECT_ID) or resource_project
            reservation = _str(attrs, attr.BUDGET_RESERVATION_ID)
            ttfc = _ttfc(attrs.get(attr.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK))

        breakdown: PriceBreakdown | None = None
        if usage is None:
            reason = invalid
        else:
            try:
                breakdown = self._pricer.price_call(
                    model, usage, provider=provider, at=span.start_ns / 1e9, tier=tier, tenant=tenant or None
                )
            except Exception as exc:  # price_call must not raise; if it does, store unpriced and carry on
                logger.warning("pricing failed for model %s: %s", model, type(exc).__name__)
                breakdown = None
                reason = f"pricing error: {type(exc).__name__}"
            else:
                reason = breakdown.reason
        priced = breakdown is not None and breakdown.status == "priced" and breakdown.total is not None
        if breakdown is not None and priced:
            status = attr.STATUS_ESTIMATED if estimated else attr.STATUS_PRICED
            costs: tuple[
                Decimal | None, Decimal | None, Decimal | None, Decimal | None, Decimal | None, Decimal | None
            ] = (
                breakdown.total,
                breakdown.input,
                breakdown.output,
                breakdown.cache_read,
                breakdown.cache_write,
                breakdown.other,
            )
            version = breakdown.catalog_version
            reason = ""
        else:
            status = attr.STATUS_UNPRICED
            costs = (None, None, None, None, None, None)
            version = breakdown.catalog_version if breakdown is not None else ""
            reason = reason or "unpriced"
        return CallRecord(
            span.trace_id,
            span.span_id,
            span.parent_span_id,
            span.start_ns,
            span.end_ns,
            service,
            tenant,
            workflow,
            user,
            session,
            provider,
            model,
            operation,
            source,
            tokens,
            estimated,
            status,
            reason,
            costs[0],
            costs[1],
            costs[2],
            costs[3],
            costs[4],
            costs[5],
            version,
            error_type,
            ttfc,
            project,
            reservation,
        )
