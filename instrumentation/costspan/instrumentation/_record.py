"""One LLM call seen at the HTTP layer: its span (or the peer span it enriches), usage, cost, metrics."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from opentelemetry.context import Context, get_current
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.util.types import AttributeValue

from costspan.instrumentation import attributes as attr
from costspan.instrumentation._facts import input_text, output_text, tap_facts
from costspan.instrumentation._hooks import BudgetExceededError
from costspan.instrumentation._providers import RequestFacts, Route
from costspan.instrumentation._runtime import Runtime
from costspan.instrumentation._stream import BodyTap
from costspan.instrumentation._tokens import lean_high, scaled
from costspan.instrumentation._usage import Counts, ResponseFacts
from costspan.pricing import SERVICE_TIERS, Usage

__all__ = ["Call", "peer_span_of"]

_MESSAGE_OVERHEAD = 4
_TIER_ALIASES = {"default": "standard", "auto": "standard", "scale": "standard", "standard_only": "standard"}
_USAGE_KEYS = (
    attr.GEN_AI_USAGE_INPUT_TOKENS,
    attr.GEN_AI_USAGE_OUTPUT_TOKENS,
    attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
    attr.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS,
    attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
)
_CALL_OPERATIONS = frozenset({"chat", "text_completion", "embeddings", "generate_content"})


def peer_span_of(span: Span) -> Span | None:
    """The current span if it is another instrumentation's open GenAI *model call* span, else None.

    Agent, workflow and tool spans (``invoke_agent``, ``execute_tool`` …) are not calls: costspan
    records its own span under them.
    """
    if not span.is_recording():
        return None
    attrs = getattr(span, "attributes", None)
    if isinstance(attrs, Mapping):
        operation = attrs.get(attr.GEN_AI_OPERATION_NAME)
        if operation is not None:
            return span if operation in _CALL_OPERATIONS else None
        if attr.GEN_AI_SYSTEM in attrs and attr.GEN_AI_PROVIDER_NAME not in attrs:
            return span  # older instrumentations (OpenLLMetry, openai-v2 < 2.0) name only the system
    name = getattr(span, "name", None)
    if isinstance(name, str) and name.startswith("anthropic.messages.create"):
        return span
    return None


class Call:
    """The record of one HTTP attempt to an LLM API. ``finish`` is idempotent and never raises."""

    __slots__ = (
        "attribution",
        "done",
        "peer",
        "request",
        "rewritten",
        "route",
        "rt",
        "server_address",
        "server_port",
        "span",
        "start_ns",
        "start_perf",
    )

    def __init__(
        self,
        rt: Runtime,
        route: Route,
        *,
        request: RequestFacts,
        source: str,
        server_address: str,
        server_port: int | None,
        attribution: Mapping[str, str],
        peer: Span | None,
        extra: Mapping[str, AttributeValue] | None = None,
        ctx: Context | None = None,
    ) -> None:
        self.rt = rt
        self.route = route
        self.request = request
        self.attribution = attribution
        self.peer = peer
        self.done = False
        self.server_address = server_address
        self.server_port = server_port
        self.start_ns = time.time_ns()
        self.start_perf = time.perf_counter()
        # a budget changed the request (a fallback model, capped max_tokens): the outcome is degraded
        self.rewritten = extra is not None and extra.get(attr.BUDGET_ACTION) not in (None, "blocked")
        if peer is not None:
            self.span: Span | None = None
            if extra:
                peer.set_attributes(dict(extra))
            return
        a: dict[str, AttributeValue] = {
            attr.GEN_AI_OPERATION_NAME: route.operation,
            attr.GEN_AI_PROVIDER_NAME: route.provider,
        }
        if request.model:
            a[attr.GEN_AI_REQUEST_MODEL] = request.model
        if request.max_tokens is not None:
            a[attr.GEN_AI_REQUEST_MAX_TOKENS] = request.max_tokens
        if request.temperature is not None:
            a[attr.GEN_AI_REQUEST_TEMPERATURE] = request.temperature
        if request.top_p is not None:
            a[attr.GEN_AI_REQUEST_TOP_P] = request.top_p
        if request.stream:  # semconv: set if and only if the request is streaming (unset means not)
            a[attr.GEN_AI_REQUEST_STREAM] = True
        if route.azure_deployment:
            a[attr.AZURE_DEPLOYMENT] = route.azure_deployment
        a[attr.SERVER_ADDRESS] = server_address
        if server_port is not None:
            a[attr.SERVER_PORT] = server_port
        a[attr.RECORD_SOURCE] = source
        if attribution:
            a.update(attribution)
        if extra:
            a.update(extra)
        name = f"{route.operation} {request.model}" if request.model else route.operation
        self.span = rt.tracer.start_span(name, ctx, kind=SpanKind.CLIENT, attributes=a, start_time=self.start_ns)

    def finish(self, status_code: int | None, tap: BodyTap | None, error: BaseException | None) -> None:
        if self.done:
            return
        self.done = True
        try:
            self._finish(status_code, tap, error)
        except Exception as exc:
            self.rt.report("record", exc)
            if self.span is not None:
                self.span.end()

    def _finish(self, status_code: int | None, tap: BodyTap | None, error: BaseException | None) -> None:
        end_ns = time.time_ns()
        duration = time.perf_counter() - self.start_perf
        facts = tap_facts(tap) if tap is not None and not tap.broken else ResponseFacts()
        out: dict[str, AttributeValue] = {}
        error_type: str | None = None
        blocked = isinstance(error, BudgetExceededError)
        if blocked:
            error_type = attr.ERROR_TYPE_BUDGET_EXCEEDED
        elif error is not None and not isinstance(error, GeneratorExit):
            error_type = type(error).__qualname__
        elif status_code is not None and status_code >= 400:
            error_type = str(status_code)
        elif tap is not None and tap.error_event is not None:
            error_type = _stream_error_type(tap.error_event)
        if facts.model:
            out[attr.GEN_AI_RESPONSE_MODEL] = facts.model
        if facts.response_id:
            out[attr.GEN_AI_RESPONSE_ID] = facts.response_id
        if facts.finish_reasons:
            out[attr.GEN_AI_RESPONSE_FINISH_REASONS] = tuple(facts.finish_reasons)
        ttfc: float | None = None
        if self.request.stream and tap is not None and tap.first_chunk_at is not None:
            ttfc = tap.first_chunk_at - self.start_perf
            out[attr.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = ttfc
        usage = facts.usage
        estimated = False
        answered = status_code is not None and status_code < 400 and tap is not None
        if answered and (usage is None or facts.usage_partial):
            usage, estimator = self._estimate(usage, tap)
            estimated = True
            out[attr.TOKENS_ESTIMATED] = True
            out[attr.TOKENS_ESTIMATOR] = estimator
        if usage is not None:
            out[attr.GEN_AI_USAGE_INPUT_TOKENS] = usage.input
            out[attr.GEN_AI_USAGE_OUTPUT_TOKENS] = usage.output
            if usage.cache_read:
                out[attr.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = usage.cache_read
            if usage.cache_write:
                out[attr.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] = usage.cache_write
            if usage.cache_write_1h:
                out[attr.ANTHROPIC_CACHE_WRITE_1H] = usage.cache_write_1h
            if usage.reasoning:
                out[attr.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = usage.reasoning
            self._price(usage, facts, estimated, out)
        if error_type is not None:
            out[attr.ERROR_TYPE] = error_type
        degraded = self.rewritten or out.get(attr.COST_STATUS) != attr.STATUS_PRICED
        out[attr.CALL_OUTCOME] = _outcome(blocked, error_type is not None, degraded)
        if self.span is None:
            self._enrich_peer(out)
            return
        span = self.span
        if self.rt.settings.capture_content != "NO_CONTENT":
            self._record_content(tap, out)
        span.set_attributes(out)
        if error_type is not None:
            span.set_status(Status(StatusCode.ERROR, error_type))
        span.end(end_time=end_ns)
        if not blocked:  # nothing was sent: not an operation of the provider's
            self._record_metrics(out, usage, duration, ttfc)

    def _estimate(self, reported: Counts | None, tap: BodyTap | None) -> tuple[Counts, str]:
        text, messages = input_text(self.request.body)
        tokens = self.rt.tokens
        factor = lean_high(self.route.family, self.request.model)
        est_in, estimator = scaled(*tokens.count(text), factor)
        est_in += _MESSAGE_OVERHEAD * messages
        est_out = 0 if self.route.operation == "embeddings" else scaled(*tokens.count(output_text(tap)), factor)[0]
        if tap is not None and tap.dropped_events and tap.events:  # beyond the kept bound: extrapolate
            est_out = est_out * (len(tap.events) + tap.dropped_events) // len(tap.events)
        if reported is None:
            return Counts(est_in, est_out), estimator
        reported.output = max(reported.output, est_out)
        return reported, estimator

    def _price(self, usage: Counts, facts: ResponseFacts, estimated: bool, out: dict[str, AttributeValue]) -> None:
        model = facts.model or self.request.model
        deployment = self.route.azure_deployment
        if deployment and (not facts.model or facts.model == deployment):
            model = self.rt.router.azure_deployments.get(deployment, model)
        if not model:
            out[attr.COST_STATUS] = attr.STATUS_UNPRICED
            out[attr.COST_UNPRICED_REASON] = "no model named in the request or response"
            return
        try:
            u = Usage(
                input_tokens=usage.input,
                output_tokens=usage.output,
                cache_read_tokens=usage.cache_read,
                cache_write_tokens=usage.cache_write,
                cache_write_1h_tokens=usage.cache_write_1h,
                reasoning_tokens=usage.reasoning,
            )
        except ValueError as exc:  # InvalidUsageError: counts a provider reported inconsistently
            self.rt.report("usage", exc)
            out[attr.COST_STATUS] = attr.STATUS_UNPRICED
            out[attr.COST_UNPRICED_REASON] = "inconsistent usage counts"
            return
        tier = _TIER_ALIASES.get(facts.service_tier or "", facts.service_tier or "standard")
        b = self.rt.pricer().price_call(
            model,
            u,
            provider=self.route.provider,
            at=self.start_ns / 1e9,
            tier=tier if tier in SERVICE_TIERS else "standard",
            tenant=self.attribution.get(attr.TENANT_ID),
        )
        out[attr.PRICING_VERSION] = b.catalog_version
        if b.total is None:
            out[attr.COST_STATUS] = attr.STATUS_UNPRICED
            if b.reason:
                out[attr.COST_UNPRICED_REASON] = b.reason
            return
        total = float(b.total)
        out[attr.COST_USD] = total
        out[attr.GEN_AI_USAGE_COST] = total
        # A part that is zero is left out (absent means 0; the total is always there): fewer attributes
        # for the SDK to clean and store, and float(Decimal), which goes through a string, only when needed.
        if b.input:
            out[attr.COST_INPUT_USD] = float(b.input)
        if b.output:
            out[attr.COST_OUTPUT_USD] = float(b.output)
        if b.cache_read:
            out[attr.COST_CACHE_READ_USD] = float(b.cache_read)
        if b.cache_write:
            out[attr.COST_CACHE_WRITE_USD] = float(b.cache_write)
        if b.other:
            out[attr.COST_OTHER_USD] = float(b.other)
        out[attr.COST_STATUS] = attr.STATUS_ESTIMATED if estimated else attr.STATUS_PRICED
        out[attr.PRICING_RULE] = b.rule
        out[attr.PRICING_MODEL] = b.model

    def _record_content(self, tap: BodyTap | None, out: dict[str, AttributeValue]) -> None:
        """Opt-in content: on the span (JSON strings) and/or in the operation-details event."""
        try:
            from costspan.instrumentation._content import dumps, messages_of

            rt = self.rt
            system, inputs, outputs = messages_of(
                self.route, self.request.body, tap if tap is not None and not tap.broken else None
            )
            found = {
                attr.GEN_AI_SYSTEM_INSTRUCTIONS: system,
                attr.GEN_AI_INPUT_MESSAGES: inputs,
                attr.GEN_AI_OUTPUT_MESSAGES: outputs,
            }
            if rt.settings.content_on_span:
                out.update({k: dumps(v) for k, v in found.items() if v is not None})
            if rt.event_logger is not None and self.span is not None:
                event: dict[str, Any] = {
                    attr.GEN_AI_OPERATION_NAME: self.route.operation,
                    attr.GEN_AI_PROVIDER_NAME: self.route.provider,
                }
                if self.request.model:
                    event[attr.GEN_AI_REQUEST_MODEL] = self.request.model
                for key in (attr.GEN_AI_RESPONSE_MODEL, attr.GEN_AI_RESPONSE_ID, attr.GEN_AI_RESPONSE_FINISH_REASONS):
                    if key in out:
                        event[key] = out[key]
                event.update({k: v for k, v in found.items() if v is not None})
                rt.event_logger.emit(
                    event_name=attr.GEN_AI_OPERATION_DETAILS_EVENT,
                    attributes=event,
                    context=set_span_in_context(self.span),
                )
        except Exception as exc:
            self.rt.report("content", exc)

    def _enrich_peer(self, out: dict[str, AttributeValue]) -> None:
        peer = self.peer
        if peer is None or not peer.is_recording():
            return  # the peer ended first: it carries its own usage; nothing left to enrich
        existing: Any = getattr(peer, "attributes", None)
        if isinstance(existing, Mapping):
            for key in _USAGE_KEYS:
                if key in existing:
                    out.pop(key, None)
            if attr.ERROR_TYPE in existing:
                out.pop(attr.ERROR_TYPE, None)
        out.pop(attr.ERROR_TYPE, None)  # the peer reports its own outcome (it sees retries we don't)
        out.update(self.attribution)
        out[attr.ENRICHED] = True
        peer.set_attributes(out)

    def _record_metrics(
        self, out: Mapping[str, AttributeValue], usage: Counts | None, duration: float, ttfc: float | None
    ) -> None:
        rt = self.rt
        # The GenAI metric attributes (low cardinality): operation, provider, models, server, error. The
        # same few sets recur call after call, so they are built once and handed to the SDK as they are
        # (it copies what it keeps).
        key = (
            self.route.operation,
            self.route.provider,
            self.server_address,
            self.server_port,
            self.request.model,
            out.get(attr.GEN_AI_RESPONSE_MODEL),
            out.get(attr.ERROR_TYPE),
        )
        cache = rt.metric_attributes
        sets = cache.get(key)
        if sets is None:
            sets = _metric_attribute_sets(*key)
            if len(cache) >= _METRIC_SETS_MAX:
                cache.clear()
            cache[key] = sets
        ctx = get_current()  # once for all records (each would look it up otherwise)
        rt.duration.record(duration, sets[0], ctx)
        if ttfc is not None:
            rt.time_to_first_chunk.record(ttfc, sets[0], ctx)
        if usage is not None:
            rt.token_usage.record(usage.input, sets[1], ctx)
            rt.token_usage.record(usage.output, sets[2], ctx)


_METRIC_SETS_MAX = 1024


def _metric_attribute_sets(
    operation: str,
    provider: str,
    server_address: str,
    server_port: int | None,
    request_model: str | None,
    response_model: AttributeValue | None,
    error_type: AttributeValue | None,
) -> tuple[dict[str, AttributeValue], dict[str, AttributeValue], dict[str, AttributeValue]]:
    """(call attributes, input-token attributes, output-token attributes) for the GenAI client metrics."""
    m: dict[str, AttributeValue] = {
        attr.GEN_AI_OPERATION_NAME: operation,
        attr.GEN_AI_PROVIDER_NAME: provider,
        attr.SERVER_ADDRESS: server_address,
    }
    if request_model:
        m[attr.GEN_AI_REQUEST_MODEL] = request_model
    if server_port is not None:
        m[attr.SERVER_PORT] = server_port
    if response_model is not None:
        m[attr.GEN_AI_RESPONSE_MODEL] = response_model
    if error_type is not None:
        m[attr.ERROR_TYPE] = error_type
    return m, {**m, attr.GEN_AI_TOKEN_TYPE: "input"}, {**m, attr.GEN_AI_TOKEN_TYPE: "output"}


def _outcome(blocked: bool, failed: bool, degraded: bool) -> str:
    if blocked:
        return attr.OUTCOME_BLOCKED
    return attr.OUTCOME_ERROR if failed else attr.OUTCOME_DEGRADED if degraded else attr.OUTCOME_OK


def _stream_error_type(raw: bytes) -> str:
    import json

    try:
        obj = json.loads(raw)
    except ValueError:
        return "stream_error"
    err = obj.get("error") if isinstance(obj, dict) else None
    kind = err.get("type") or err.get("code") if isinstance(err, dict) else None
    return kind if isinstance(kind, str) and kind else "stream_error"
