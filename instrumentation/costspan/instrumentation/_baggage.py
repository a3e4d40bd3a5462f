"""Attribution through W3C baggage: ``with attribute(tenant="acme", workflow="wf-42"): ...``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import baggage, context

from costspan.instrumentation import attributes as attr

__all__ = ["attribute", "attribution_from_context"]

_ARG_TO_KEY = {
    "tenant": attr.TENANT_ID,
    "workflow": attr.WORKFLOW_ID,
    "user": attr.USER_ID,
    "session": attr.SESSION_ID,
    "project": attr.PROJECT_ID,
}


@contextmanager
def attribute(
    *,
    tenant: str | None = None,
    workflow: str | None = None,
    user: str | None = None,
    session: str | None = None,
    project: str | None = None,
) -> Iterator[None]:
    """Attribute every LLM call made inside the block (and downstream, via baggage) to these ids.

    Values left ``None`` keep whatever an outer block set. The values travel as W3C baggage under the
    ``costspan.*`` keys, so they follow the context into asyncio tasks, threads that carry the
    context, and other services that propagate baggage.
    """
    values = {"tenant": tenant, "workflow": workflow, "user": user, "session": session, "project": project}
    for name, value in values.items():
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    ctx = context.get_current()
    for name, value in values.items():
        if value is not None:
            ctx = baggage.set_baggage(_ARG_TO_KEY[name], value, context=ctx)
    token = context.attach(ctx)
    try:
        yield
    finally:
        context.detach(token)


def attribution_from_context(ctx: context.Context | None = None) -> dict[str, str]:
    """The costspan.* attribution in the baggage of ``ctx`` (default: the current context)."""
    found = baggage.get_all(ctx)
    if not found:
        return {}
    out: dict[str, str] = {}
    for key in attr.BAGGAGE_KEYS:
        value = found.get(key)
        if isinstance(value, str) and value:
            out[key] = value
    return out
