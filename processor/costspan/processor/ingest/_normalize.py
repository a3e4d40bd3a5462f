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
from costspan.processor.ingest._outcomes import BLOCKED_REASON, call_outcome, said_outcome
from costspan.processor.store._records import CallRecord, TokenCounts
from costspan.processor.store._validate import MAX_ID_LENGTH

__all__ = ["WANTED_KEYS", "AttrValue", "Normalizer", "SpanView", "VolumeSpend"]

logger = logging.getLogger(__name__)

AttrValue = str | bool | int | float | tuple[object, ...]
_Money = Decimal | None
_new_tuple: Final = tuple.__new__
_usage_of_tokens: Final = Usage.of_tokens
#: What :func:`_int` reads a token count that is no count as: negative, so the span is refused.
_NOT_A_COUNT: Final = -1

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
#: Usage keys most spans do not carry: a span with none of them has no cache writes and no reasoning.
_RARE_USAGE_KEYS: Final = frozenset(
    (*_CACHE_WRITE_KEYS, attr.ANTHROPIC_CACHE_WRITE_1H, attr.ANTHROPIC_CACHE_WRITE_5M, *_REASONING_KEYS)
)
_LLM_REQUEST_TYPE: Final = "llm.request.type"
# read for every span: module constants, one lookup each instead of two
_PROVIDER: Final = attr.GEN_AI_PROVIDER_NAME
_SYSTEM: Final = attr.GEN_AI_SYSTEM
_RESPONSE_MODEL: Final = attr.GEN_AI_RESPONSE_MODEL
_REQUEST_MODEL: Final = attr.GEN_AI_REQUEST_MODEL
_OPERATION: Final = attr.GEN_AI_OPERATION_NAME
_TENANT: Final = attr.TENANT_ID
_INPUT: Final = attr.GEN_AI_USAGE_INPUT_TOKENS
_OUTPUT: Final = attr.GEN_AI_USAGE_OUTPUT_TOKENS
_CACHE_READ: Final = attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS
_PRICED: Final = attr.STATUS_PRICED
_OK: Final = attr.OUTCOME_OK
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
        attr.CALL_OUTCOME,
        attr.BUDGET_ACTION,
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
        attr.CALL_OUTCOME,
        attr.BUDGET_ACTION,
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
        month_to_date_usd: Decimal | None = ...,
    ) -> PriceBreakdown: ...


class VolumeSpend(Protocol):
    """A tenant's month-to-date spend, for the volume tiers of its terms (see ``ingest/_volume.py``)."""

    def tiered(self, tenant: str) -> bool: ...

    def spent(self, tenant: str, at: float) -> Decimal: ...


def _int(attrs: Mapping[str, AttrValue], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = attrs.get(key)
        if value is None:
            continue
        if type(value) is int:  # the common case, first and cheapest
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float):  # NaN, an infinity or a fraction is no count: refused (see _validate.screen)
            return int(value) if value.is_integer() else _NOT_A_COUNT
        if isinstance(value, str):
            text = value.strip()
            if not text:  # an empty value: as if it were not there
                continue
            if text.isascii() and text.lstrip("-").isdecimal():
                return int(text) if len(text) <= 20 else _NOT_A_COUNT  # beyond any 64-bit count: refused
        return _NOT_A_COUNT  # "NaN", "1e12", "1_000", "１２", a bool, an array: not a count, refused
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

    def __init__(
        self,
        pricer: Pricer,
        *,
        default_tenant: str = "",
        default_service: str = "unknown",
        max_value_length: int = MAX_ID_LENGTH,
        volume: VolumeSpend | None = None,
    ) -> None:
        if max_value_length < 1:
            raise ValueError("max_value_length must be at least 1")
        self._pricer = pricer
        #: where a tiered tenant's month-to-date spend comes from (None: volume tiers never apply)
        self.volume = volume
        #: Identifiers and attribute values longer than this are truncated (a tenant id: refused).
        self.max_value_length = max_value_length
        self._default_tenant = default_tenant
        self._default_service = default_service
        self._last_resource: Mapping[str, AttrValue] | None = None
        self._resource_dims = ("", "", "", "", "", "")

    def with_volume(self, volume: VolumeSpend | None) -> Normalizer:
        """A normalizer over the same pricer and defaults whose month-to-date spend comes from ``volume``."""
        return Normalizer(
            self._pricer,
            default_tenant=self._default_tenant,
            default_service=self._default_service,
            max_value_length=self.max_value_length,
            volume=volume,
        )

    def with_default_tenant(self, tenant: str) -> Normalizer:
        """A normalizer over the same pricer whose spans without a tenant are ``tenant``'s."""
        return Normalizer(
            self._pricer,
            default_tenant=tenant,
            default_service=self._default_service,
            max_value_length=self.max_value_length,
            volume=self.volume,
        )

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
        value = attrs.get(_INPUT)
        input_tokens = value if type(value) is int else _int(attrs, _INPUT_KEYS)
        value = attrs.get(_OUTPUT)
        output_tokens = value if type(value) is int else _int(attrs, _OUTPUT_KEYS)
        if input_tokens is None or output_tokens is None:
            total = _int(attrs, (attr.LLM_USAGE_TOTAL_TOKENS,))
            if input_tokens is None and output_tokens is not None and total is not None:
                input_tokens = total - output_tokens
            if output_tokens is None and input_tokens is not None and total is not None:
                output_tokens = total - input_tokens
        value = attrs.get(_CACHE_READ)
        cache_read = (value if type(value) is int else _int(attrs, _CACHE_READ_KEYS)) or 0
        cache_write = write_1h = reasoning = 0
        if not _RARE_USAGE_KEYS.isdisjoint(attrs):  # most spans have no cache writes and no reasoning
            written = _int(attrs, _CACHE_WRITE_KEYS)
            if attr.ANTHROPIC_CACHE_WRITE_1H in attrs or attr.ANTHROPIC_CACHE_WRITE_5M in attrs:
                write_1h = _int(attrs, (attr.ANTHROPIC_CACHE_WRITE_1H,)) or 0
                if written is None:
                    written = (_int(attrs, (attr.ANTHROPIC_CACHE_WRITE_5M,)) or 0) + write_1h
            cache_write = written or 0
            reasoning = (_int(attrs, _REASONING_KEYS) or 0) if _REASONING_KEYS[0] in attrs else 0
        input_tokens = input_tokens or 0
        if cache_read + cache_write > input_tokens and provider == "anthropic":
            # Anthropic's API spelling (input EXCLUDES cache tokens) leaked into the input count.
            input_tokens += cache_read + cache_write
        output_tokens = output_tokens or 0
        counts = _new_tuple(TokenCounts, (input_tokens, output_tokens, cache_read, cache_write, write_1h, reasoning))
        try:
            usage = _usage_of_tokens(input_tokens, output_tokens, cache_read, cache_write, write_1h, reasoning)
        except ValueError as exc:  # InvalidUsageError
            return counts, None, f"invalid usage: {exc}"
        return counts, usage, ""

    def normalize(self, span: SpanView) -> CallRecord | None:
        """The call record of ``span``, or ``None`` if it does not describe an LLM call."""
        trace_id, span_id, parent_span_id, start_ns, end_ns, attrs, resource, scope_name, status_error = span
        if not self.is_call(attrs):
            return None
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
        # each first spelling, a non-empty string, is the common case: one lookup before the general reading
        value = attrs.get(_PROVIDER)
        provider = (value if value and type(value) is str else _str(attrs, _SYSTEM)).lower() or "unknown"
        value = attrs.get(_RESPONSE_MODEL)
        model = value if value and type(value) is str else _str(attrs, _REQUEST_MODEL) or "unknown"
        value = attrs.get(_OPERATION)
        operation = value if value and type(value) is str else _str(attrs, _LLM_REQUEST_TYPE) or "chat"
        tokens, usage, invalid = self.tokens(attrs, provider)
        value = attrs.get(_TENANT)
        tenant = value if value and type(value) is str else resource_tenant
        if _OPTIONAL_KEYS.isdisjoint(attrs):  # the common span: none of the rarer keys, so their defaults
            tokens_estimated = False
            said = ""
            error_type = "error" if status_error else ""
            source = scope_name or "unknown"
            tier = "standard"
            workflow, user, session = resource_workflow, resource_user, resource_session
            project, reservation_id, ttfc_s = resource_project, "", None
        else:
            tokens_estimated = _bool(attrs.get(attr.TOKENS_ESTIMATED))
            error_type = _str(attrs, attr.ERROR_TYPE) or ("error" if status_error else "")
            said, error_type = said_outcome(attrs, error_type)
            if attr.RECORD_SOURCE in attrs:
                source = "costspan"
            elif _bool(attrs.get(attr.ENRICHED)):
                source = "costspan-enriched"
            else:
                source = scope_name or "unknown"
            tier = _SERVICE_TIERS.get(
                _str(attrs, attr.GEN_AI_RESPONSE_SERVICE_TIER, attr.GEN_AI_REQUEST_SERVICE_TIER).lower(), "standard"
            )
            workflow = _str(attrs, attr.WORKFLOW_ID) or resource_workflow
            user = _str(attrs, attr.USER_ID, *_USER_FALLBACKS) or resource_user
            session = _str(attrs, attr.SESSION_ID, *_SESSION_FALLBACKS) or resource_session
            project = _str(attrs, attr.PROJECT_ID) or resource_project
            reservation_id = _str(attrs, attr.BUDGET_RESERVATION_ID)
            ttfc_s = _ttfc(attrs.get(attr.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK))

        breakdown: PriceBreakdown | None = None
        if said == attr.OUTCOME_BLOCKED:  # never sent: nothing to price, and not a priced call of 0
            usage, invalid = None, BLOCKED_REASON
        if usage is None:
            unpriced_reason = invalid
        else:
            try:
                volume = self.volume
                if volume is not None and tenant and volume.tiered(tenant):
                    at = start_ns / 1e9
                    breakdown = self._pricer.price_call(
                        model,
                        usage,
                        provider=provider,
                        at=at,
                        tier=tier,
                        tenant=tenant,
                        month_to_date_usd=volume.spent(tenant, at),
                    )
                else:
                    breakdown = self._pricer.price_call(
                        model, usage, provider=provider, at=start_ns / 1e9, tier=tier, tenant=tenant or None
                    )
            except Exception as exc:  # price_call must not raise; if it does, store unpriced and carry on
                logger.warning("pricing failed for model %s: %s", model, type(exc).__name__)
                breakdown = None
                unpriced_reason = f"pricing error: {type(exc).__name__}"
            else:
                unpriced_reason = breakdown.reason
        if breakdown is not None and breakdown.status == "priced" and breakdown.total is not None:
            cost_status = attr.STATUS_ESTIMATED if tokens_estimated else _PRICED
            cost_total: _Money = breakdown.total
            cost_input: _Money = breakdown.input
            cost_output: _Money = breakdown.output
            cost_cache_read: _Money = breakdown.cache_read
            cost_cache_write: _Money = breakdown.cache_write
            cost_other: _Money = breakdown.other
            pricing_version = breakdown.catalog_version
            unpriced_reason = ""
        else:
            cost_status = attr.STATUS_UNPRICED
            cost_total = cost_input = cost_output = cost_cache_read = cost_cache_write = cost_other = None
            pricing_version = breakdown.catalog_version if breakdown is not None else ""
            unpriced_reason = unpriced_reason or "unpriced"
        # the common call (nothing said, no error, priced) without a function call
        outcome = (
            _OK
            if not said and not error_type and cost_status == _PRICED
            else call_outcome(said, error_type, cost_status)
        )
        # Every value is the local named as its field, in CallRecord's order: a test reads this call and pins
        # the names to CallRecord._fields. Not keywords: past 15 keyword arguments CPython builds a dict for
        # the call (over a microsecond a span); not the named tuple's __new__: one more Python frame.
        return _new_tuple(
            CallRecord,
            (
                trace_id,
                span_id,
                parent_span_id,
                start_ns,
                end_ns,
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
                tokens_estimated,
                cost_status,
                unpriced_reason,
                cost_total,
                cost_input,
                cost_output,
                cost_cache_read,
                cost_cache_write,
                cost_other,
                pricing_version,
                error_type,
                ttfc_s,
                project,
                reservation_id,
                outcome,
            ),
        )
