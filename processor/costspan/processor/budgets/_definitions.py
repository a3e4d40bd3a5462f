"""Budget definitions of a book: create, replace, delete, list, and the audit trail of those changes."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from costspan.processor.budgets._journal import AuditLog, JournaledState
from costspan.processor.budgets._match import Matches
from costspan.processor.budgets._model import Budget, BudgetSpec, parse_budget

__all__ = ["BudgetDefinitions"]


class BudgetDefinitions:
    """The budgets a :class:`~costspan.processor.budgets.BudgetBook` enforces.

    Every change is one journaled event (under the book's ``lock``) and one audit line (after it),
    and drops the cached scope matches: which budgets a call falls in is cached per scope.
    """

    __slots__ = ("_audit", "_lock", "_log", "_matches")

    def __init__(self, lock: threading.Lock, log: JournaledState, matches: Matches, audit: AuditLog) -> None:
        self._lock = lock
        self._log = log
        self._matches = matches
        self._audit = audit

    def put(self, spec: Budget | BudgetSpec | Mapping[str, Any], *, actor: str) -> Budget:
        """Create or replace a budget (validated; raises ``InvalidBudgetError``); audited."""
        budget = spec if isinstance(spec, Budget) else parse_budget(spec)
        with self._lock:
            before = self._log.state.budgets.get(budget.id)
            if before == budget:
                return budget
            self._log.commit(["b", budget])
            self._matches.forget()
        self._audit.write(
            actor, "update" if before else "create", budget.id, before.to_json() if before else None, budget.to_json()
        )
        return budget

    def delete(self, budget_id: str, *, actor: str) -> bool:
        """Delete a budget and its counters; False if there is none; audited."""
        with self._lock:
            before = self._log.state.budgets.get(budget_id)
            if before is None:
                return False
            self._log.commit(["d", budget_id])
            self._matches.forget()
        self._audit.write(actor, "delete", budget_id, before.to_json(), None)
        return True

    def get(self, budget_id: str) -> Budget | None:
        return self._log.state.budgets.get(budget_id)

    def all(self) -> list[Budget]:
        with self._lock:
            return list(self._log.state.budgets.values())

    def audit_log(self, budget_id: str | None = None) -> list[dict[str, Any]]:
        return self._audit.entries(budget_id)
