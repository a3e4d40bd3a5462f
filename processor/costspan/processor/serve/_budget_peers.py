"""Budget definitions reach every peer: a budget created, changed or deleted on one instance is
forwarded to the others (only with peers), so each shard knows every budget's definition.

Only a change the local route accepted (2xx, so an admin key made it) is forwarded, as an idempotent
``PUT /v1/budgets/{id}`` of the stored definition (a created budget keeps the id this instance gave
it) or a ``DELETE``, with the peer key and ``X-Costspan-Forwarded`` (a forwarded change is not
forwarded again). The answer carries ``X-Costspan-Peers-Failed``: the peers that did not take the
change (empty: all did); define the budget again there, or PUT it again anywhere, once they are back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any, Final
from urllib.parse import quote

import httpx

from costspan.processor.cluster import Peers

__all__ = ["FAILED_HEADER", "FORWARDED_HEADER", "BudgetDefinitionsToPeers"]

logger = logging.getLogger(__name__)

FORWARDED_HEADER: Final = "x-costspan-forwarded"
FAILED_HEADER: Final = "x-costspan-peers-failed"
_ONE = re.compile(r"^/v1/budgets/([^/]+)$")
_Scope = dict[str, Any]


def _definition_change(scope: _Scope) -> bool:
    method, path = scope.get("method"), scope.get("path", "")
    if method == "POST":
        return bool(path == "/v1/budgets")
    return method in ("PUT", "DELETE") and _ONE.match(path) is not None


class BudgetDefinitionsToPeers:
    """ASGI middleware: forward accepted budget definition changes to every other peer."""

    def __init__(self, app: Any, *, peers: Peers, peer_key: str | None, timeout: float) -> None:
        self.app = app
        self._peers = peers
        self._headers = {"x-api-key": peer_key} if peer_key else {}
        self._timeout = timeout

    async def __call__(self, scope: _Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not _definition_change(scope):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if FORWARDED_HEADER.encode() in headers:
            await self.app(scope, receive, send)
            return
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
            failed = await self._forward(scope, content, actor)
            out_headers.append((FAILED_HEADER.encode(), ",".join(failed).encode()))
        await send({**start, "headers": out_headers})
        await send({"type": "http.response.body", "body": content, "more_body": False})

    async def _forward(self, scope: _Scope, content: bytes, actor: str) -> list[str]:
        """Send the change to every other peer; the peers that did not take it."""
        headers = {**self._headers, FORWARDED_HEADER: self._peers.self_url}
        if actor:
            headers["x-costspan-actor"] = actor
        if scope["method"] == "DELETE":
            match = _ONE.match(scope["path"])
            assert match is not None
            budget_id, definition = match[1], None
        else:
            try:
                definition = json.loads(content)
                budget_id = quote(str(definition["id"]), safe="")
            except (ValueError, KeyError, TypeError):
                logger.warning("budget change not forwarded: the answer carried no definition")
                return list(self._peers.others())

        # the peer key goes to the configured peers only: no proxy from the environment, no redirect
        async with httpx.AsyncClient(
            timeout=self._timeout, headers=headers, trust_env=False, follow_redirects=False
        ) as client:

            async def one(peer: str) -> bool:
                url = f"{peer}/v1/budgets/{budget_id}"
                try:
                    if definition is None:
                        answer = await asyncio.wait_for(client.delete(url), self._timeout)
                        return answer.status_code in (204, 404)
                    answer = await asyncio.wait_for(client.put(url, json=definition), self._timeout)
                    return answer.status_code == 200
                except (httpx.HTTPError, TimeoutError) as exc:
                    logger.warning("peer %s did not take budget %s: %s", peer, budget_id, type(exc).__name__)
                    return False

            others = self._peers.others()
            results = await asyncio.gather(*(one(peer) for peer in others))
        return [peer for peer, ok in zip(others, results, strict=True) if not ok]
