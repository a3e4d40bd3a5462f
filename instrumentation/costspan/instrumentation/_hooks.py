"""The extension point before a request is sent: block it, or rewrite it (model, max_tokens, tools, temperature).

A pre-send hook is any callable taking a :class:`RequestInfo`. It may

- return ``None``: the call goes ahead unchanged;
- return a :class:`RequestRewrite`: the JSON body is sent with the new ``model`` and/or ``max_tokens``,
  without its tools (``disable_tools``) and/or with a lower ``temperature``, and its ``reservation_id``
  (if any) is written on the call's span;
- raise :class:`BudgetExceededError` (or a subclass): the call is blocked and the caller gets that exception.

Any other exception from a hook is an internal error: it is logged once, counted, and the call proceeds
unmodified. Hooks run on the caller's thread, inside the caller's context, and must not block for long.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

__all__ = ["BudgetExceededError", "PreSendHook", "RequestInfo", "RequestRewrite"]


class BudgetExceededError(Exception):
    """A budget blocked the call before it was sent.

    Raised by a pre-send hook (the budget guard); the instrumentation lets it through to the caller
    unchanged. The message says which budget refused, why, this call's estimate and how it was made,
    and what to do; the same facts are attributes. Spend figures (limit, spent, reserved) are
    optional: a guard configured to hide them, or a server that does not show them to this key,
    leaves them out.

    ``reason`` is ``exhausted`` (spend alone reached the limit), ``estimate_exceeds_room`` (this
    call's estimate does not fit what is left) or, from the remote guard, ``unreachable`` /
    ``key_rejected`` / ``forbidden`` when it fails closed. ``estimate_basis`` reads like
    ``max_tokens=400`` or ``max_tokens unset → assumed 16384 output tokens (model max)``.
    """

    def __init__(
        self,
        message: str,
        *,
        budget_id: str = "",
        scope: Mapping[str, str] | None = None,
        limit_usd: Decimal | None = None,
        spent_usd: Decimal | None = None,
        resets_at: str | None = None,
        reserved_usd: Decimal | None = None,
        estimate_usd: Decimal | None = None,
        estimate_basis: str = "",
        reason: str = "",
        advice: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.budget_id = budget_id
        self.scope: dict[str, str] = dict(scope or {})
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd
        self.resets_at = resets_at
        self.reserved_usd = reserved_usd
        self.estimate_usd = estimate_usd
        self.estimate_basis = estimate_basis
        self.reason = reason
        self.advice = advice


def passable(exc: BudgetExceededError) -> BudgetExceededError:
    """``exc`` as an error the calling SDK lets through unchanged.

    anthropic 2.x wraps every exception its HTTP client raises in ``APIConnectionError`` unless it is
    an ``AnthropicError``: when anthropic is loaded, the block is raised as a subclass of both, so the
    caller's ``except BudgetExceededError`` still catches it (openai passes non-transport errors as is).
    """
    anthropic = sys.modules.get("anthropic")
    base = getattr(anthropic, "AnthropicError", None) if anthropic is not None else None
    if not isinstance(base, type) or not issubclass(base, BaseException) or isinstance(exc, base):
        return exc
    combined = _COMBINED.get((type(exc), base))
    if combined is None:
        combined = type(type(exc).__name__, (type(exc), base), {"__module__": type(exc).__module__})
        _COMBINED[(type(exc), base)] = combined
    out: BudgetExceededError = combined.__new__(combined)
    out.__dict__.update(exc.__dict__)
    out.args = exc.args
    return out


_COMBINED: dict[tuple[type[BaseException], type[BaseException]], type[BudgetExceededError]] = {}


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What is known about an LLM call just before it is sent. Never carries prompt content."""

    provider: str
    operation: str
    model: str | None
    max_tokens: int | None
    stream: bool
    server_address: str
    server_port: int | None
    url_path: str
    #: costspan.* attribution found in the context (tenant, workflow, user, session, project).
    attribution: Mapping[str, str] = field(default_factory=dict)
    #: The sampling temperature the body asks for (None: not set).
    temperature: float | None = None
    #: How many tool (function) definitions the body carries.
    tools: int = 0
    #: Rough count of the input tokens, made only if a hook asks via :meth:`estimate_input_tokens`.
    _estimate: Callable[[], int] | None = field(default=None, repr=False, compare=False)

    def estimate_input_tokens(self) -> int | None:
        """A (possibly coarse) estimate of the call's input tokens, computed on demand."""
        return self._estimate() if self._estimate is not None else None


@dataclass(frozen=True, slots=True)
class RequestRewrite:
    """A change a pre-send hook asks for; ``None`` leaves a field as the caller sent it."""

    model: str | None = None
    max_tokens: int | None = None
    #: Why (e.g. the budget id that degraded the call); written to ``costspan.budget.action``.
    reason: str = ""
    #: The reservation a budget guard took for this call, written to ``costspan.budget.reservation_id``
    #: so that the call's priced record settles exactly that reservation. May come without any change.
    reservation_id: str = ""
    #: Send the request without its tool definitions (``tools``, ``tool_choice``, ``functions`` …).
    disable_tools: bool = False
    #: Send the request with this temperature (a hook lowering it passes ``min(current, lower)``).
    temperature: float | None = None

    @property
    def changes(self) -> bool:
        """Whether the request body is to be rewritten (model, max_tokens, tools or temperature)."""
        return (
            self.model is not None or self.max_tokens is not None or self.disable_tools or self.temperature is not None
        )

    def merged(self, later: RequestRewrite) -> RequestRewrite:
        """This rewrite with a later hook's on top (the later hook's non-empty fields win)."""
        return RequestRewrite(
            model=later.model if later.model is not None else self.model,
            max_tokens=later.max_tokens if later.max_tokens is not None else self.max_tokens,
            disable_tools=self.disable_tools or later.disable_tools,
            temperature=later.temperature if later.temperature is not None else self.temperature,
            reason=later.reason or self.reason,
            reservation_id=later.reservation_id or self.reservation_id,
        )


PreSendHook = Callable[[RequestInfo], RequestRewrite | None]
