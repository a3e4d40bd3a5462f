"""Reads across shards: fanned out and merged, or answered by the shard that holds the tenant's calls.

:class:`ClusterRouting` is ASGI middleware inside the edge (the key is verified, the principal is in
the request's state) and in front of the routes. For a ``GET`` of the usage API:

- an admin key without a tenant filter, on a route of :data:`~._merge.MERGED_PATHS`: the same request
  goes to every other peer at once (``X-Costspan-Fanout: 1``, the peer key), this node answers too,
  and the answers are merged; ``partial`` says whether a peer failed or timed out (``failed_peers``);
- a tenant key, or an admin key naming a tenant, on a route of ``MERGED_PATHS``: fanned out and merged
  the same way, each peer limited to that tenant (the Collector's ring, not :meth:`Peers.owner`,
  decides where a tenant's calls are, and a re-balance leaves some on another shard: every shard is
  asked); on any other route: answered by the shard holding the most of the tenant's calls (asked
  with ``GET /api/cluster/tenant-calls``), proxied there when it is another; a holder that does not
  answer → 503. Peers are asked by an admin with the peer key and ``X-Tenant-ID`` naming the tenant,
  by anyone else with the caller's own key headers — never with more rights than the caller has
  (tenant keys must be valid on every shard);
- anything else, and every request that carries ``X-Costspan-Fanout`` (a peer asking): answered here.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final
from urllib.parse import parse_qs, quote, urlencode

import httpx

from costspan.processor.api._auth import PRINCIPAL_STATE
from costspan.processor.api._keys import Principal
from costspan.processor.cluster._holders import TENANT_CALLS_PATH, tenant_calls
from costspan.processor.cluster._merge import MERGED_PATHS, JSONObject, merge_answers
from costspan.processor.cluster._peers import Peers
from costspan.processor.cluster._usable import usable

__all__ = ["FANOUT_HEADER", "ROUTED_PREFIXES", "ClusterRouting", "PeerClient"]

logger = logging.getLogger(__name__)

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_App = Callable[[_Scope, _Receive, _Send], Awaitable[None]]

#: Marks a request one node sends another: answered with the node's own data, never fanned out again.
FANOUT_HEADER: Final = "x-costspan-fanout"
#: The reads routed by tenant (the usage API's; budgets have their own rules).
ROUTED_PREFIXES: Final = (
    "/v1/usage",
    "/api/usage/",
    "/api/dashboard/",
    "/api/v2/",
    "/api/analytics/",
    "/api/workspaces/",
    "/api/executions/",
)
_TENANT_PARAMS: Final = ("tenant", "tenant_id")
_JSON: Final = "application/json"
_KEY_HEADERS: Final = ("x-api-key", "authorization", "x-tenant-id")


class PeerClient:
    """The one ``httpx.AsyncClient`` a node talks to its peers with (opened in the app's lifespan),
    and the count of failed peer calls by peer (``costspan_peer_failures_total``)."""

    def __init__(self, peers: Peers, key: str | None, timeout_s: float) -> None:
        self.peers = peers
        self.key = key
        self.timeout_s = timeout_s
        self.failures: dict[str, int] = dict.fromkeys(peers.others(), 0)
        self._client: httpx.AsyncClient | None = None

    async def open(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False, trust_env=False)

    async def close(self) -> None:
        """Safe twice."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def get(
        self, peer: str, path_qs: str, tenant: str | None, credentials: dict[str, str] | None = None
    ) -> httpx.Response:
        """``GET peer + path_qs`` as a peer (with ``credentials``, the caller's key headers, instead of
        the peer key); raises ``httpx.HTTPError`` or ``TimeoutError`` (counted)."""
        if self._client is None:
            raise httpx.TransportError("the peer client is not open")
        headers = {FANOUT_HEADER: "1", "accept": _JSON}
        if credentials is not None:  # the caller's key decides the tenant, as it does here
            headers.update(credentials)
        else:
            if self.key:
                headers["x-api-key"] = self.key
            if tenant is not None:
                headers["x-tenant-id"] = tenant
        try:
            return await asyncio.wait_for(self._client.get(peer + path_qs, headers=headers), self.timeout_s)
        except (httpx.HTTPError, TimeoutError) as exc:
            self.failures[peer] = self.failures.get(peer, 0) + 1
            logger.warning("peer %s did not answer %s: %s", peer, path_qs.split("?", 1)[0], type(exc).__name__)
            raise


def _json_of(response: httpx.Response) -> object:
    """A peer's JSON body (None: not JSON, or nested too deep to read)."""
    try:
        return response.json()
    except (ValueError, RecursionError):
        return None


def _calls_of(result: httpx.Response | BaseException) -> int | None:
    """The ``calls`` of a peer's tenant-calls answer (None: no usable answer)."""
    if not isinstance(result, httpx.Response) or result.status_code != 200:
        return None
    answer = _json_of(result)
    calls = answer.get("calls") if isinstance(answer, dict) else None
    return calls if isinstance(calls, int) and not isinstance(calls, bool) and calls >= 0 else None


def _top_of(scope: _Scope) -> int:
    """The N of a merged "top N" list: the request's ``limit`` (valid: this node answered 200), else 10."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    limit = query.get("limit", ["10"])[-1]
    return int(limit) if limit.isdigit() else 10


def _tenant_of(principal: Principal, scope: _Scope, headers: dict[str, str]) -> str | None:
    """The one tenant a read is limited to, as the routes will decide it (None: every tenant)."""
    if principal.role != "admin":
        return principal.tenant or None
    wanted = headers.get("x-tenant-id") or None
    if wanted is None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        wanted = next((query[p][0] for p in _TENANT_PARAMS if query.get(p)), None)
    path: str = scope["path"]
    if wanted is None and path.startswith("/api/workspaces/"):
        wanted = path.split("/")[3] or None
    return wanted


async def _answer(send: _Send, status: int, body: bytes, content_type: str = _JSON) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode("latin-1")),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _error(detail: str) -> bytes:
    return json.dumps({"detail": detail, "success": False}).encode()


class ClusterRouting:
    """ASGI middleware: add it before the edge (so it runs inside it, after the key is checked)."""

    def __init__(self, app: _App, *, client: PeerClient) -> None:
        self.app = app
        self.client = client

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        peers = self.client.peers
        if scope["type"] != "http" or scope["method"] != "GET" or peers.single:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        principal = scope.get("state", {}).get(PRINCIPAL_STATE)
        if (
            FANOUT_HEADER in headers
            or not isinstance(principal, Principal)
            or principal.role not in ("admin", "tenant")
            or not path.startswith(ROUTED_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        tenant = _tenant_of(principal, scope, headers)
        # an admin asks peers with the peer key; anyone else with their own key (no more rights than theirs)
        credentials = None if principal.role == "admin" else {k: headers[k] for k in _KEY_HEADERS if k in headers}
        if path in MERGED_PATHS:
            await self._fan_out(scope, receive, send, tenant, credentials)
        elif tenant is None:
            await self.app(scope, receive, send)
        else:
            await self._to_holder(scope, receive, send, tenant, credentials)

    @staticmethod
    def _path_qs(scope: _Scope) -> str:
        """The request's path and query as the client sent them: the decoded path re-sent as is would
        be another request (``/export%3Fx`` would reach the peer as ``/export?x``)."""
        query: bytes = scope.get("query_string", b"")
        raw: bytes | None = scope.get("raw_path")
        path = raw.decode("latin-1") if raw else quote(scope["path"])
        return path + ("?" + query.decode("latin-1") if query else "")

    async def _proxy(
        self, holder: str, scope: _Scope, send: _Send, tenant: str, credentials: dict[str, str] | None
    ) -> None:
        try:
            answer = await self.client.get(holder, self._path_qs(scope), tenant, credentials)
        except (httpx.HTTPError, TimeoutError):
            await _answer(send, 503, _error(f"the shard holding this tenant ({holder}) did not answer; retry later"))
            return
        await _answer(send, answer.status_code, answer.content, answer.headers.get("content-type", _JSON))

    async def _to_holder(
        self, scope: _Scope, receive: _Receive, send: _Send, tenant: str, credentials: dict[str, str] | None
    ) -> None:
        """A read that cannot be merged: answered by the shard holding most of the tenant's calls."""
        index = getattr(scope["app"].state, "usage_index", None)
        here = tenant_calls(index, tenant) if index is not None else 0
        others = self.client.peers.others()
        path_qs = f"{TENANT_CALLS_PATH}?{urlencode({'tenant': tenant})}"
        results = await asyncio.gather(
            *(self.client.get(peer, path_qs, None) for peer in others), return_exceptions=True
        )
        best, holder, failed = here, self.client.peers.self_url, False
        for peer, result in zip(others, results, strict=True):
            calls = _calls_of(result)
            if calls is None:
                failed = True
            elif calls > best:
                best, holder = calls, peer
        if holder != self.client.peers.self_url:
            await self._proxy(holder, scope, send, tenant, credentials)
        elif here or not failed:
            await self.app(scope, receive, send)
        else:
            detail = "a shard that may hold this tenant's calls did not answer; retry later"
            await _answer(send, 503, _error(detail))

    async def _local(self, scope: _Scope, receive: _Receive) -> tuple[int, bytes, str]:
        """This node's own answer, captured."""
        status = 500
        content_type = _JSON
        chunks: list[bytes] = []

        async def capture(message: _Message) -> None:
            nonlocal status, content_type
            if message["type"] == "http.response.start":
                status = message["status"]
                for key, value in message.get("headers", []):
                    if key.lower() == b"content-type":
                        content_type = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        return status, b"".join(chunks), content_type

    async def _fan_out(
        self, scope: _Scope, receive: _Receive, send: _Send, tenant: str | None, credentials: dict[str, str] | None
    ) -> None:
        others = self.client.peers.others()
        path_qs = self._path_qs(scope)
        asked = [asyncio.ensure_future(self.client.get(peer, path_qs, tenant, credentials)) for peer in others]
        try:
            status, body, content_type = await self._local(scope, receive)
            results = await asyncio.gather(*asked, return_exceptions=True)
        finally:
            for future in asked:
                future.cancel()
        if status != 200:  # refused or invalid here: the same answer everywhere
            await _answer(send, status, body, content_type)
            return
        try:
            own = json.loads(body)
        except (ValueError, RecursionError):
            own = None
        if not isinstance(own, dict):  # not an answer that merges (e.g. another format): ours as it is
            await _answer(send, status, body, content_type)
            return
        answers: list[JSONObject] = [own]
        failed: list[str] = []
        for peer, result in zip(others, results, strict=True):
            if isinstance(result, httpx.Response) and result.status_code == 200:
                answer = _json_of(result)
                if isinstance(answer, dict) and usable(own, answer):
                    answers.append(answer)
                    continue
            if isinstance(result, httpx.Response):  # an answer, but not a usable one: a failure too
                self.client.failures[peer] = self.client.failures.get(peer, 0) + 1
                logger.warning("peer %s answered %s unusably (%d)", peer, scope["path"], result.status_code)
            failed.append(peer)
        try:
            merged = merge_answers(scope["path"], answers, top=_top_of(scope))
        except (ArithmeticError, TypeError, ValueError, AttributeError, KeyError, RecursionError):
            logger.exception("answers of %s could not be merged: this node's own answer, partial", scope["path"])
            merged, failed = dict(own), list(others)
        merged["partial"] = bool(failed)
        merged["failed_peers"] = failed
        await _answer(send, 200, json.dumps(merged, separators=(",", ":")).encode())
