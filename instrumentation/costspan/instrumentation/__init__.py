"""costspan.instrumentation: every LLM HTTP call becomes one exact, priced GenAI span.

Load it with ``opentelemetry-instrument`` (entry point ``costspan``) or programmatically::

    from costspan.instrumentation import CostspanInstrumentor, attribute

    CostspanInstrumentor().instrument(tracer_provider=tp, meter_provider=mp)
    with attribute(tenant="acme", workflow="wf-42"):
        client.chat.completions.create(...)
"""

from costspan.instrumentation._baggage import attribute
from costspan.instrumentation._hooks import BudgetExceededError, PreSendHook, RequestInfo, RequestRewrite
from costspan.instrumentation._instrumentor import INJECT_STREAM_USAGE_ENV, CostspanInstrumentor

__all__ = [
    "INJECT_STREAM_USAGE_ENV",
    "BudgetExceededError",
    "CostspanInstrumentor",
    "PreSendHook",
    "RequestInfo",
    "RequestRewrite",
    "attribute",
]
