"""Budget definitions reach every peer: a budget created, changed or deleted on one instance is
forwarded to the others (only with peers), so each shard knows every budget's definition.

The routes that define budgets: ``POST /v1/budgets``, ``PUT``/``DELETE /v1/budgets/{id}`` (also what
``costspan budgets create|delete`` call) and the workspace and project budget routes
(``POST /api/workspaces/{id}/budget``, ``POST /api/projects/{id}/budget?workspace_id=``), which keep up
to two budgets per scope (budgets/_workspace_ids.py). Only a change the local route accepted (2xx, so
a key allowed to manage budgets made it) is forwarded, as an idempotent ``PUT /v1/budgets/{id}`` of
the stored definition (a created budget keeps the id this instance gave it) or a ``DELETE``, with the
peer key and ``X-Costspan-Forwarded`` (a forwarded change is not forwarded again). After a workspace
route, every budget of that scope is put (a repeated post re-sends them all) and the ones it removed
are deleted. The answer carries ``X-Costspan-Peers-Failed``: the peers that did not take the
change (empty: all did); define the budget again there, or PUT it again anywhere, once they are back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any, Final
from urllib.parse import parse_qsl, quote

import httpx

from costspan.processor.budgets._book import BudgetBook
from costspan.processor.budgets._workspace_ids import SEED_NAMES, seed_budget_id, seed_scope
from costspan.processor.cluster import Peers

__all__ = ["FAILED_HEADER", "FORWARDED_HEADER", "BudgetDefinitionsToPeers"]

logger = logging.getLogger(__name__)

FORWARDED_HEADER: Final = "x-costspan-forwarded"
FAILED_HEADER: Final = "x-costspan-peers-failed"
_ONE = re.compile(r"^/v1/budgets/([^/]+)$")
_WORKSPACE = re.compile(r"^/api/workspaces/([^/]+)/budget$")
_PROJECT = re.compile(r"^/api/projects/([^/]+)/budget$")
_Scope = dict[str, Any]
#: A definition to send each peer: the budget's id and its stored definition (None: delete it).
_Change = tuple[str, dict[str, Any] | None]


def _definition_change(scope: _Scope) -> bool:
    method, path = scope.get("method"), scope.get("path", "")
    if method == "POST":
        return bool(path == "/v1/budgets")
    return method in ("PUT", "DELETE") and _ONE.match(path) is not None


def _seed_target(scope: _Scope) -> tuple[str, str | None] | None:
    """(workspace, project) of a workspace or project budget route's request; None for any other."""
    if scope.get("method") != "POST":
        return None
    path = scope.get("path", "")
    found = _WORKSPACE.match(path)
    if found is not None:
        return found[1], None
    found = _PROJECT.match(path)
    if found is None:
        return None
    query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    workspaces = [value for name, value in query if name == "workspace_id"]
    return (workspaces[-1], found[1]) if workspaces else None  # the route reads the last one too


def _seed_ids(workspace: str, project: str | None) -> list[str]:
    """Every id a workspace's (or project's) budgets may have, escaped or as earlier versions wrote it."""
    ids = [seed_budget_id(workspace, project, name, escaped=e) for name in SEED_NAMES for e in (True, False)]
    return list(dict.fromkeys(ids))


class BudgetDefinitionsToPeers:
    """ASGI middleware: forward accepted budget definition changes to every other peer."""

    def __init__(
        self, app: Any, *, peers: Peers, peer_key: str | None, timeout: float, book: BudgetBook | None = None
    ) -> None:
        self.app = app
        self._peers = peers
        self._book = book
        self._headers = {"x-api-key": peer_key} if peer_key else {}
        self._timeout = timeout

    async def __call__(self, scope: _Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seed = _seed_target(scope) if self._book is not None else None
        headers = dict(scope.get("headers") or [])
        if (seed is None and not _definition_change(scope)) or FORWARDED_HEADER.encode() in headers:
            await self.app(scope, receive, send)
            return
        before = self._seed_definitions(seed) if seed is not None else {}
        start: dict[str, Any] = {}
        body: list[bytes] = []

        async def hold(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                body.append(message.get("body", b""))

        await self.app(scope, receive, hold)
        content = b"".join(body)
        status = int(start.get("status", 500))
        out_headers = list(start.get("headers", []))
        if 200 <= status < 300:
            actor = headers.get(b"x-costspan-actor", b"").decode("latin-1")
            changes = self._seed_changes(seed, before) if seed is not None else self._changes(scope, content)
            failed = list(self._peers.others()) if changes is None else await self._forward(changes, actor)
            out_headers.append((FAILED_HEADER.encode(), ",".join(failed).encode()))
        await send({**start, "headers": out_headers})
        await send({"type": "http.response.body", "body": content, "more_body": False})

    @staticmethod
    def _changes(scope: _Scope, content: bytes) -> list[_Change] | None:
        """What a ``/v1/budgets`` change sends the peers (None: the answer carried no definition)."""
        if scope["method"] == "DELETE":
            match = _ONE.match(scope["path"])
            assert match is not None
            return [(match[1], None)]
        try:
            definition = json.loads(content)
            return [(str(definition["id"]), definition)]
        except (ValueError, KeyError, TypeError):
            logger.warning("budget change not forwarded: the answer carried no definition")
            return None

    def _seed_definitions(self, seed: tuple[str, str | None]) -> dict[str, dict[str, Any]]:
        """The stored budgets of a workspace's (or project's) scope, by id."""
        assert self._book is not None
        scope = seed_scope(*seed)
        out: dict[str, dict[str, Any]] = {}
        for budget_id in _seed_ids(*seed):
            budget = self._book.get_budget(budget_id)
            if budget is not None and budget.scope_dict == scope:
                out[budget_id] = budget.to_json()
        return out

    def _seed_changes(self, seed: tuple[str, str | None], before: dict[str, dict[str, Any]]) -> list[_Change]:
        """After a workspace route: put every budget of its scope, delete those it removed."""
        after = self._seed_definitions(seed)
        gone: list[_Change] = [(budget_id, None) for budget_id in before if budget_id not in after]
        return gone + [(budget_id, definition) for budget_id, definition in after.items()]

    async def _forward(self, changes: list[_Change], actor: str) -> list[str]:
        """Send the changes to every other peer; the peers that did not take all of them."""
        headers = {**self._headers, FORWARDED_HEADER: self._peers.self_url}
        if actor:
            headers["x-costspan-actor"] = actor

        # the peer key goes to the configured peers only: no proxy from the environment, no redirect
        async with httpx.AsyncClient(
            timeout=self._timeout, headers=headers, trust_env=False, follow_redirects=False
        ) as client:

            async def one(peer: str, budget_id: str, definition: dict[str, Any] | None) -> bool:
                url = f"{peer}/v1/budgets/{quote(budget_id, safe='')}"
                try:
                    if definition is None:
                        answer = await asyncio.wait_for(client.delete(url), self._timeout)
                        ok = answer.status_code in (204, 404)
                    else:
                        answer = await asyncio.wait_for(client.put(url, json=definition), self._timeout)
                        ok = answer.status_code == 200
                except (httpx.HTTPError, TimeoutError) as exc:
                    logger.warning("peer %s did not take budget %s: %s", peer, budget_id, type(exc).__name__)
                    return False
                if not ok:
                    logger.warning("peer %s did not take budget %s: answered %s", peer, budget_id, answer.status_code)
                return ok

            # every change to every peer at once: a hanging peer delays the answer by one timeout at most
            others = self._peers.others()
            sends = [(peer, change) for peer in others for change in changes]
            results = await asyncio.gather(*(one(peer, *change) for peer, change in sends))
        failed = {peer for (peer, _), ok in zip(sends, results, strict=True) if not ok}
        return [peer for peer in others if peer in failed]
