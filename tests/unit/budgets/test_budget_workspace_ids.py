"""The ids of the workspace routes' budgets: one per (workspace, project, period), whatever the ids hold."""

from __future__ import annotations

import itertools

from costspan.processor.budgets._workspace_ids import SEED_NAMES, seed_budget_id

#: names built to collide when ``-`` is not escaped (``a-p-b`` vs project ``b`` of ``a``, ...)
NAMES = ["a", "b", "a-p-b", "b-p-c", "p", "-", "--", "a-", "-a", "a--p--b", "p-b", "a-p", "daily", "a-daily"]


def test_every_scope_and_period_has_its_own_id() -> None:
    scopes: list[tuple[str, str | None]] = [(w, None) for w in NAMES]
    scopes += list(itertools.product(NAMES, NAMES))
    ids = {(scope, name): seed_budget_id(scope[0], scope[1], name) for scope in scopes for name in SEED_NAMES}
    assert len(set(ids.values())) == len(ids)
    # the unescaped ids of earlier versions did collide for these names
    assert seed_budget_id("a-p-b", None, "daily", escaped=False) == seed_budget_id("a", "b", "daily", escaped=False)


def test_ids_without_a_dash_are_the_ones_earlier_versions_made() -> None:
    assert seed_budget_id("acme", None, "daily") == "ws-acme-daily"
    assert seed_budget_id("acme", "checkout", "monthly") == "ws-acme-p-checkout-monthly"
    assert seed_budget_id("team-1", None, "daily") == "ws-team--1-daily"
