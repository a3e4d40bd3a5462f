"""Budget definitions on a book: create, replace, delete, list, and the audit trail of those changes."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from costspan.processor.budgets._journal import AuditLog
from costspan.processor.budgets._model import Budget, BudgetSpec, parse_budget
from costspan.processor.budgets._state import BudgetState

__all__ = ["BudgetDefinitions"]


class BudgetDefinitions:
    """The budget-definition half of :class:`~costspan.processor.budgets.BudgetBook`.

    Every change is one journaled event (``_commit``) and one audit line, and drops the book's
    per-scope match cache (``_forget_matches``): which budgets a call falls in is cached per scope.
    """

    _lock: threading.Lock
    _state: BudgetState
    _audit: AuditLog

    if TYPE_CHECKING:  # provided by BudgetBook

        def _commit(self, event: list[Any]) -> None: ...
        def _forget_matches(self) -> None: ...

    def put_budget(self, spec: Budget | BudgetSpec | Mapping[str, Any], *, actor: str = "system") -> Budget:
        """Create or replace a budget (validated; raises ``InvalidBudgetError``); audited."""
        budget = spec if isinstance(spec, Budget) else parse_budget(spec)
        with self._lock:
            before = self._state.budgets.get(budget.id)
            if before == budget:
                return budget
            self._commit(["b", budget])
            self._forget_matches()
        self._audit.write(
            actor, "update" if before else "create", budget.id, before.to_json() if before else None, budget.to_json()
        )
        return budget

    def delete_budget(self, budget_id: str, *, actor: str = "system") -> bool:
        with self._lock:
            before = self._state.budgets.get(budget_id)
            if before is None:
                return False
            self._commit(["d", budget_id])
            self._forget_matches()
        self._audit.write(actor, "delete", budget_id, before.to_json(), None)
        return True

    def get_budget(self, budget_id: str) -> Budget | None:
        return self._state.budgets.get(budget_id)

    def budgets(self) -> list[Budget]:
        with self._lock:
            return list(self._state.budgets.values())

    def audit_log(self, budget_id: str | None = None) -> list[dict[str, Any]]:
        return self._audit.entries(budget_id)
