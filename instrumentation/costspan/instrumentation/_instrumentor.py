"""``CostspanInstrumentor``: the entry point ``opentelemetry-instrument`` loads."""

from __future__ import annotations

import atexit
import importlib
import logging
import os
from collections.abc import Collection, Mapping
from typing import Any

from opentelemetry.instrumentation.dependencies import DependencyConflict, get_dependency_conflicts
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from wrapt import wrap_function_wrapper

from costspan.instrumentation import attributes as attr
from costspan.instrumentation._content import CAPTURE_CONTENT_ENV, capture_mode
from costspan.instrumentation._hooks import PreSendHook
from costspan.instrumentation._runtime import Runtime, Settings
from costspan.instrumentation._wrapper import SendWrapper
from costspan.instrumentation.package import _instruments, _instruments_any

__all__ = ["INJECT_STREAM_USAGE_ENV", "CostspanInstrumentor"]

logger = logging.getLogger(__name__)

__version__ = "0.1.0"
#: Set to ``false`` to stop asking OpenAI-style streams for their usage chunk.
INJECT_STREAM_USAGE_ENV = "COSTSPAN_INJECT_STREAM_USAGE"
_LIBRARIES = (("httpx", attr.RECORD_SOURCE_HTTPX), ("httpx2", attr.RECORD_SOURCE_HTTPX2))


def _env_flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    logger.warning("ignoring %s=%r (expected true or false); using %s", name, raw, default)
    return default


def _remote_guard_from_env() -> PreSendHook | None:
    """The remote budget guard when ``COSTSPAN_ENDPOINT`` is set; a bad setting is logged, never raised."""
    from costspan.instrumentation._remote_guard import ENDPOINT_ENV, FAIL_OPEN_ENV, TIMEOUT_ENV, RemoteBudgetGuard

    if not os.environ.get(ENDPOINT_ENV, "").strip():
        return None
    raw_timeout = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        timeout = float(raw_timeout) if raw_timeout else 0.25
        return RemoteBudgetGuard(timeout=timeout, fail_open=_env_flag(FAIL_OPEN_ENV, True))
    except ValueError as exc:
        logger.warning("budget guard not installed: %s", exc)
        return None


class CostspanInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Every LLM HTTP call made with httpx or httpx2 becomes one priced GenAI span.

    ``instrument()`` takes, besides ``tracer_provider`` and ``meter_provider``:

    - ``inject_stream_usage`` (bool, default True, env ``COSTSPAN_INJECT_STREAM_USAGE``);
    - ``base_urls``: ``{base URL: provider name}`` for gateways and self-hosted servers;
    - ``azure_deployments``: ``{deployment: model}``;
    - ``pre_send_hooks``: callables run before each LLM call (see :mod:`._hooks`);
    - ``remote_budget_guard`` (bool, default True): with ``COSTSPAN_ENDPOINT`` set, ask that
      ``costspan serve`` before each call (``COSTSPAN_API_KEY``, ``COSTSPAN_BUDGET_TIMEOUT``,
      ``COSTSPAN_BUDGET_FAIL_OPEN``);
    - ``pricer``: a ``costspan.pricing.Pricer`` (default: the packaged catalog);
    - ``token_counter``: a ``TokenCounter`` to share (default: one loading ``o200k_base`` in the background);
    - ``capture_message_content`` (bool or ``NO_CONTENT`` | ``SPAN_ONLY`` | ``EVENT_ONLY`` |
      ``SPAN_AND_EVENT``; default: env ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``, off);
    - ``logger_provider``: for the ``gen_ai.client.inference.operation.details`` event (default: global).
    """

    _runtime: Runtime | None = None
    _wrapped: list[tuple[Any, str]]
    _remote_guard: Any = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _check_dependency_conflicts(self) -> DependencyConflict | None:
        return get_dependency_conflicts(_instruments, _instruments_any)

    @property
    def pre_send_hooks(self) -> list[PreSendHook]:
        """The live hook list (empty and detached while not instrumented)."""
        return self._runtime.hooks if self._runtime is not None else []

    @property
    def internal_errors(self) -> Mapping[str, int]:
        """Internal errors so far, by component."""
        return dict(self._runtime.error_counts) if self._runtime is not None else {}

    def _instrument(self, **kwargs: Any) -> None:
        inject = kwargs.get("inject_stream_usage")
        capture = kwargs.get("capture_message_content")
        settings = Settings(
            inject_stream_usage=_env_flag(INJECT_STREAM_USAGE_ENV, True) if inject is None else bool(inject),
            base_urls=dict(kwargs.get("base_urls") or {}),
            azure_deployments=dict(kwargs.get("azure_deployments") or {}),
            capture_content=capture_mode(os.environ.get(CAPTURE_CONTENT_ENV) if capture is None else capture),
        )
        rt = Runtime(
            settings,
            kwargs.get("tracer_provider"),
            kwargs.get("meter_provider"),
            __version__,
            kwargs.get("pricer"),
            kwargs.get("token_counter"),
            kwargs.get("logger_provider"),
        )
        rt.hooks.extend(kwargs.get("pre_send_hooks") or ())
        remote = _remote_guard_from_env() if kwargs.get("remote_budget_guard", True) else None
        if remote is not None:
            rt.hooks.append(remote)
        self._remote_guard = remote
        self._wrapped = []
        for module_name, source in _LIBRARIES:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            wrapper = SendWrapper(rt, module, source)
            wrap_function_wrapper(module, "Client.send", wrapper.sync_send)
            wrap_function_wrapper(module, "AsyncClient.send", wrapper.async_send)
            self._wrapped.append((module, module_name))
        self._runtime = rt
        rt.warm_up()

    def _uninstrument(self, **kwargs: Any) -> None:
        from opentelemetry.instrumentation.utils import unwrap

        for module, _ in getattr(self, "_wrapped", []):
            unwrap(module.Client, "send")
            unwrap(module.AsyncClient, "send")
        self._wrapped = []
        runtime = getattr(self, "_runtime", None)
        if runtime is not None:
            atexit.unregister(runtime.finish_warm_up)
        self._runtime = None
        remote = getattr(self, "_remote_guard", None)
        if remote is not None:
            remote.close()  # its kept-alive connection
            self._remote_guard = None
