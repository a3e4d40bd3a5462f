"""Every span attribute and baggage key costspan reads or writes, defined once.

The GenAI semantic-convention names are spelled here as plain strings so that the slices do not
depend on the incubating semconv package's moving module layout.
"""

from __future__ import annotations

from typing import Final

# --- costspan's own attributes (written by the instrumentation and the processor) -----------------
COST_USD: Final = "costspan.cost.usd"
COST_INPUT_USD: Final = "costspan.cost.input_usd"
COST_OUTPUT_USD: Final = "costspan.cost.output_usd"
COST_CACHE_READ_USD: Final = "costspan.cost.cache_read_usd"
COST_CACHE_WRITE_USD: Final = "costspan.cost.cache_write_usd"
COST_OTHER_USD: Final = "costspan.cost.other_usd"
COST_STATUS: Final = "costspan.cost.status"  # priced | estimated | unpriced
COST_UNPRICED_REASON: Final = "costspan.cost.unpriced_reason"
PRICING_VERSION: Final = "costspan.pricing.version"
PRICING_RULE: Final = "costspan.pricing.rule"
PRICING_MODEL: Final = "costspan.pricing.model"
TENANT_ID: Final = "costspan.tenant.id"
WORKFLOW_ID: Final = "costspan.workflow.id"
USER_ID: Final = "costspan.user.id"
SESSION_ID: Final = "costspan.session.id"
PROJECT_ID: Final = "costspan.project.id"
TOKENS_ESTIMATED: Final = "costspan.tokens.estimated"
#: Marks a span as costspan's own call record (so the processor can tell it from a peer's span).
RECORD_SOURCE: Final = "costspan.record.source"
#: Set on a peer's span that costspan enriched in place instead of emitting its own.
ENRICHED: Final = "costspan.enriched"
BUDGET_ACTION: Final = "costspan.budget.action"
BUDGET_ID: Final = "costspan.budget.id"
BUDGET_RESERVATION_ID: Final = "costspan.budget.reservation_id"
BUDGET_ORIGINAL_MODEL: Final = "costspan.budget.original_model"
BUDGET_ORIGINAL_MAX_TOKENS: Final = "costspan.budget.original_max_tokens"
#: A degraded call sent without its tools: how many tool definitions were removed.
BUDGET_TOOLS_REMOVED: Final = "costspan.budget.tools_removed"
#: A degraded call sent with a lower temperature: the temperature the caller asked for.
BUDGET_ORIGINAL_TEMPERATURE: Final = "costspan.budget.original_temperature"

#: What happened to the call, one of the OUTCOME_* values below (one per call, always set by costspan).
CALL_OUTCOME: Final = "costspan.call.outcome"
#: The call was sent, answered, and priced from reported usage.
OUTCOME_OK: Final = "ok"
#: The call was answered, but with less than asked or less than known: a budget moved it to a fallback
#: model or capped its max_tokens, its tokens were estimated, or it could not be priced.
OUTCOME_DEGRADED: Final = "degraded"
#: A budget refused the call before it was sent: nothing reached the provider, nothing was spent.
OUTCOME_BLOCKED: Final = "blocked"
#: The call failed (an exception, an HTTP error status, an error event in the stream).
OUTCOME_ERROR: Final = "error"
OUTCOMES: Final = (OUTCOME_OK, OUTCOME_DEGRADED, OUTCOME_BLOCKED, OUTCOME_ERROR)
#: ``error.type`` of a call a budget blocked (a stable public name, whatever class carried the block).
ERROR_TYPE_BUDGET_EXCEEDED: Final = "costspan.BudgetExceeded"

STATUS_PRICED: Final = "priced"
STATUS_ESTIMATED: Final = "estimated"
STATUS_UNPRICED: Final = "unpriced"

#: W3C baggage keys carrying attribution across services (same spelling as the span attributes).
BAGGAGE_KEYS: Final = (TENANT_ID, WORKFLOW_ID, USER_ID, SESSION_ID, PROJECT_ID)

# --- vendor-neutral cost attribute other tools read (USD, float) ----------------------------------
GEN_AI_USAGE_COST: Final = "gen_ai.usage.cost"

# --- GenAI semantic conventions -------------------------------------------------------------------
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_SYSTEM: Final = "gen_ai.system"  # older spelling of the provider
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P: Final = "gen_ai.request.top_p"
GEN_AI_REQUEST_STREAM: Final = "gen_ai.request.stream"
GEN_AI_REQUEST_SERVICE_TIER: Final = "openai.request.service_tier"
GEN_AI_RESPONSE_SERVICE_TIER: Final = "openai.response.service_tier"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: Final = "gen_ai.response.time_to_first_chunk"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_PROMPT_TOKENS: Final = "gen_ai.usage.prompt_tokens"  # legacy
GEN_AI_USAGE_COMPLETION_TOKENS: Final = "gen_ai.usage.completion_tokens"  # legacy
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: Final = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS: Final = "gen_ai.usage.cache_write.input_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: Final = "gen_ai.usage.reasoning.output_tokens"
GEN_AI_CONVERSATION_ID: Final = "gen_ai.conversation.id"
#: Opt-in content (JSON strings on spans; structured in the operation-details event).
GEN_AI_INPUT_MESSAGES: Final = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
GEN_AI_SYSTEM_INSTRUCTIONS: Final = "gen_ai.system_instructions"
GEN_AI_OPERATION_DETAILS_EVENT: Final = "gen_ai.client.inference.operation.details"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
ERROR_TYPE: Final = "error.type"
SERVICE_NAME: Final = "service.name"

# anthropic SDK's own spans
ANTHROPIC_CACHE_WRITE_5M: Final = "anthropic.usage.cache_creation.ephemeral_5m_input_tokens"
ANTHROPIC_CACHE_WRITE_1H: Final = "anthropic.usage.cache_creation.ephemeral_1h_input_tokens"

# OpenLLMetry (traceloop) spellings
LLM_USAGE_PROMPT_TOKENS: Final = "llm.usage.prompt_tokens"
LLM_USAGE_COMPLETION_TOKENS: Final = "llm.usage.completion_tokens"
LLM_USAGE_TOTAL_TOKENS: Final = "llm.usage.total_tokens"
LLM_USAGE_CACHE_READ_INPUT_TOKENS: Final = "gen_ai.usage.cache_read_input_tokens"
LLM_USAGE_CACHE_CREATION_INPUT_TOKENS: Final = "gen_ai.usage.cache_creation_input_tokens"

# --- added by the instrumentation ------------------------------------------------------------------
#: How estimated token counts were made: ``tiktoken:<encoding>`` or ``bytes/4`` (coarse fallback).
TOKENS_ESTIMATOR: Final = "costspan.tokens.estimator"
GEN_AI_TOKEN_TYPE: Final = "gen_ai.token.type"
GEN_AI_EMBEDDINGS_DIMENSION_COUNT: Final = "gen_ai.embeddings.dimension.count"
GEN_AI_REQUEST_FREQUENCY_PENALTY: Final = "gen_ai.request.frequency_penalty"
GEN_AI_REQUEST_PRESENCE_PENALTY: Final = "gen_ai.request.presence_penalty"
GEN_AI_REQUEST_STOP_SEQUENCES: Final = "gen_ai.request.stop_sequences"
GEN_AI_REQUEST_SEED: Final = "gen_ai.request.seed"
GEN_AI_REQUEST_TOP_K: Final = "gen_ai.request.top_k"
AZURE_DEPLOYMENT: Final = "azure.openai.deployment"
GEN_AI_CLIENT_TOKEN_USAGE: Final = "gen_ai.client.token.usage"
GEN_AI_CLIENT_OPERATION_DURATION: Final = "gen_ai.client.operation.duration"
GEN_AI_CLIENT_TIME_TO_FIRST_CHUNK: Final = "gen_ai.client.operation.time_to_first_chunk"
#: Counter of internal errors of costspan's instrumentation (Prometheus: costspan_internal_errors_total).
INTERNAL_ERRORS_METRIC: Final = "costspan.internal_errors"
INTERNAL_ERROR_COMPONENT: Final = "component"
#: Values of RECORD_SOURCE written by the instrumentation.
RECORD_SOURCE_HTTPX: Final = "costspan.instrumentation.httpx"
RECORD_SOURCE_HTTPX2: Final = "costspan.instrumentation.httpx2"
