"""The ids of the budgets the workspace routes make: one per (workspace, project, period), never shared.

``POST /api/workspaces/{workspace_id}/budget`` keeps its budgets as ``ws-<workspace>-daily`` and
``ws-<workspace>-monthly``; ``POST /api/projects/{project_id}/budget`` as
``ws-<workspace>-p-<project>-daily`` and ``-monthly``. A ``-`` inside a workspace or project id is
written twice, so no two scopes share an id (workspace ``a-p-b`` is ``ws-a--p--b-daily``, project
``b`` of workspace ``a`` is ``ws-a-p-b-daily``). A budget under such an id belongs to the workspace
only if its scope is exactly the workspace's (or project's): one made under that id for another scope
(through ``/v1/budgets``) is never shown, changed or deleted through the workspace routes.

Data written before ids were escaped keeps working: a budget stored under the unescaped id with exactly
the right scope is the workspace's, until the escaped id holds one.
"""

from __future__ import annotations

from typing import Final, Protocol

from costspan.processor.budgets._model import Budget

__all__ = ["SEED_NAMES", "SeedBudgets", "seed_budget_id", "seed_scope"]

#: The budgets a workspace route keeps per scope, by name: ``daily`` (period day), ``monthly`` (month).
SEED_NAMES: Final = ("daily", "monthly")


class _Budgets(Protocol):
    def get_budget(self, budget_id: str) -> Budget | None: ...


def seed_scope(workspace: str, project: str | None = None) -> dict[str, str]:
    """The scope of a workspace's (or a workspace's project's) budgets."""
    return {"tenant": workspace} if project is None else {"tenant": workspace, "project": project}


def seed_budget_id(workspace: str, project: str | None, name: str, *, escaped: bool = True) -> str:
    """The id of the ``name`` (``daily``/``monthly``) budget of a workspace or project.

    ``escaped=False``: the id earlier versions used (``-`` not doubled; ambiguous, read only).
    """

    def part(value: str) -> str:
        return value.replace("-", "--") if escaped else value

    middle = part(workspace) if project is None else f"{part(workspace)}-p-{part(project)}"
    return f"ws-{middle}-{name}"


class SeedBudgets:
    """The budgets of one workspace (or one project of it) among a book's, by period name."""

    __slots__ = ("_book", "project", "scope", "workspace")

    def __init__(self, book: _Budgets, workspace: str, project: str | None = None) -> None:
        self._book = book
        self.workspace = workspace
        self.project = project
        self.scope = seed_scope(workspace, project)

    def id_for(self, name: str) -> str:
        """The id this scope's ``name`` budget has (or gets when created)."""
        escaped = seed_budget_id(self.workspace, self.project, name)
        if self._book.get_budget(escaped) is None:
            legacy = seed_budget_id(self.workspace, self.project, name, escaped=False)
            if legacy != escaped and self._owned(self._book.get_budget(legacy)) is not None:
                return legacy
        return escaped

    def get(self, name: str) -> Budget | None:
        """This scope's ``name`` budget; None when there is none (or its id holds another scope's)."""
        return self._owned(self._book.get_budget(self.id_for(name)))

    def taken(self, name: str) -> bool:
        """Whether this scope's id for ``name`` holds a budget of another scope."""
        budget = self._book.get_budget(self.id_for(name))
        return budget is not None and self._owned(budget) is None

    def _owned(self, budget: Budget | None) -> Budget | None:
        return budget if budget is not None and budget.scope_dict == self.scope else None
