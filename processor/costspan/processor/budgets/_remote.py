"""The remote guard, as the processor's budget code sees it: ``check`` takes a :class:`Call`.

The guard itself runs in apps and lives in the instrumentation slice
(:mod:`costspan.instrumentation._remote_guard`), which installs it when ``COSTSPAN_ENDPOINT`` is set.
"""

from __future__ import annotations

from typing import Any

from costspan.instrumentation._remote_guard import ENDPOINT_ENV, KEY_ENV
from costspan.instrumentation._remote_guard import RemoteBudgetGuard as _Guard
from costspan.processor.budgets._model import Call

__all__ = ["ENDPOINT_ENV", "KEY_ENV", "RemoteBudgetGuard"]


class RemoteBudgetGuard(_Guard):
    """The app-side remote guard, plus ``check(call)`` for budget code holding a :class:`Call`."""

    def check(self, call: Call) -> dict[str, Any]:
        return self.check_payload(
            {
                "tenant": call.tenant,
                "service": call.service,
                "workflow": call.workflow,
                "user": call.user,
                "project": call.project,
                "provider": call.provider,
                "model": call.model,
                "input_tokens": call.input_tokens,
                "max_tokens": call.max_tokens,
            }
        )
