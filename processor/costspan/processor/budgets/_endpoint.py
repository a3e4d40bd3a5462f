"""``POST /v1/budgets/check`` as raw ASGI, in front of FastAPI: the pre-call check's round trip.

FastAPI's routing, dependency resolution and response classes cost more than the check itself
(an empty FastAPI route already took most of the 1 ms budget). :class:`BudgetCheckEndpoint` answers
that one route before the app routes it — the same request and response JSON, the same status
codes and ``Retry-After`` (:func:`check_answer` makes both), the same authorization callable —
and passes every other request on. The FastAPI route stays mounted, so the OpenAPI document still
lists it and an app without this middleware still answers it.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import HTTPException
from starlette.requests import Request

from costspan.processor.budgets._api import CHECK_PATH, check_answer, error_json
from costspan.processor.budgets._book import BudgetBook

__all__ = ["BudgetCheckEndpoint"]

logger = logging.getLogger(__name__)

_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_App = Callable[[_Scope, _Receive, _Send], Awaitable[None]]

#: A check body is a few hundred bytes; anything far larger is refused before it is read in full.
MAX_BODY = 64 * 1024
_JSON = (b"content-type", b"application/json")


class BudgetCheckEndpoint:
    """ASGI middleware: answers ``POST /v1/budgets/check`` itself; everything else goes to ``app``.

    ``authorize(request)`` is called first, as the router's dependency would be: it returns the
    caller (an API key's principal: its tenant binding limits what the check may name and what a
    429 shows, see :func:`~costspan.processor.budgets._api.check_answer`) to allow, or raises
    ``HTTPException`` (answered as FastAPI answers it, ``{"detail": ...}`` with the exception's
    headers). It may be a coroutine function. ``show_spend`` as for
    :func:`~costspan.processor.budgets.budget_router`.

    Add it with ``app.add_middleware(BudgetCheckEndpoint, book=book, authorize=...)``: Starlette
    then runs it inside its error handling, with ``scope["app"]`` set (what ``authorize`` reads).
    """

    def __init__(
        self,
        app: _App,
        *,
        book: BudgetBook,
        authorize: Callable[[Request], object] | None = None,
        show_spend: bool = True,
        path: str = CHECK_PATH,
    ) -> None:
        self.app = app
        self.book = book
        self.authorize = authorize
        self.authorize_async = authorize is not None and inspect.iscoroutinefunction(authorize)
        self.show_spend = show_spend
        self.path = path

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        caller: object = None
        if self.authorize is not None:
            try:
                caller = self.authorize(Request(scope))
                if self.authorize_async:
                    caller = await caller  # type: ignore[misc]
            except HTTPException as exc:
                headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (exc.headers or {}).items()]
                await _answer(send, exc.status_code, _detail(exc.detail), headers)
                return
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_BODY:
                await _answer(send, 413, _detail(f"a budget check body is at most {MAX_BODY} bytes"), [])
                return
        try:
            status, payload, extra = check_answer(self.book, body, show_spend=self.show_spend, caller=caller)
        except Exception:  # a bug, not bad input: the same JSON shape as every other error, logged
            logger.exception("a budget check failed")
            status, payload, extra = 500, error_json("internal error: the budget check failed"), []
        await _answer(send, status, payload, [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra])


def _detail(detail: Any) -> bytes:
    return error_json(detail if isinstance(detail, str) else str(detail))


async def _answer(send: _Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON, (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})
