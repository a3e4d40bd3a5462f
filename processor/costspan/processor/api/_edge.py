"""The HTTP edge of ``costspan serve``: who gets in, and how much they may send, before a route runs.

:class:`EdgeGuard` is the outermost ASGI middleware. For every request to a path that is not public
it checks the API key from the headers alone — before a byte of the body is read — and answers
``401`` (no or bad key) or ``403`` (a key whose role may not use the path) itself. It then refuses
a JSON write whose body is not ``application/json`` (``415``: a browser form cannot post it) and
bounds the body (``413``: at once from ``Content-Length``, or as soon as a chunked body passes the
limit). The verified principal is left in ``scope["state"]`` for the route dependencies
(:func:`~costspan.processor.api._auth.principal_of`), which then do not verify the key again.

OTLP ``/v1/traces`` keeps its own content types and body limit (the receiver's); its errors keep
the OTLP JSON shape (``{"code", "message"}``). Everything else answers as the usage API's errors do
(``{"success": false, "detail", "error"}``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, Final

from fastapi import HTTPException

from costspan.processor.api._auth import PRINCIPAL_STATE, authenticate
from costspan.processor.api._keys import KeyStore

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "METRICS_PATH", "OTLP_PATHS", "PUBLIC_PATHS", "EdgeGuard"]

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_App = Callable[[_Scope, _Receive, _Send], Awaitable[None]]

#: Paths anyone may call: health and readiness, the dashboard page (it asks for a key itself), the
#: API's documentation.
PUBLIC_PATHS: Final = frozenset({"/healthz", "/readyz", "/health", "/dashboard", "/docs", "/openapi.json"})
OTLP_PATHS: Final = frozenset({"/v1/traces"})
METRICS_PATH: Final = "/metrics"
DEFAULT_MAX_REQUEST_BYTES: Final = 1024 * 1024
_WRITE_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
# google.rpc.Code values of OTLP error bodies
_UNAUTHENTICATED: Final = 16
_PERMISSION_DENIED: Final = 7


class _BodyTooLargeError(Exception):
    """Raised from ``receive`` once a streamed body passes the limit (the route stops reading)."""


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class EdgeGuard:
    """ASGI middleware in front of the whole app (add it last: ``app.add_middleware(EdgeGuard, ...)``).

    ``keys`` None means ``--insecure-no-auth`` (every caller is admin; sizes and content types are
    still checked). ``metrics_public`` serves ``/metrics`` without a key. ``max_body_bytes`` bounds
    every body except OTLP's.
    """

    def __init__(
        self,
        app: _App,
        *,
        keys: KeyStore | None,
        max_body_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        metrics_public: bool = False,
    ) -> None:
        self.app = app
        self.keys = keys
        self.max_body_bytes = max_body_bytes
        self.metrics_public = metrics_public

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        otlp = path in OTLP_PATHS
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        length = headers.get("content-length", "")
        # a refused request's body is never read: the connection is closed after the answer
        has_body = (length.isdigit() and int(length) > 0) or "transfer-encoding" in headers
        public = path in PUBLIC_PATHS or (path == METRICS_PATH and self.metrics_public)
        if not public:
            try:
                principal = authenticate(self.keys, headers)
            except HTTPException as exc:
                await _refuse(send, otlp, exc.status_code, str(exc.detail), has_body, exc.headers)
                return
            refused = _role_refusal(path, principal.role)
            if refused:
                await _refuse(send, otlp, 403, refused, has_body)
                return
            scope.setdefault("state", {})[PRINCIPAL_STATE] = principal
        if otlp:  # the receiver checks OTLP's content types and its own (larger) body limit
            await self.app(scope, receive, send)
            return
        content_type = headers.get("content-type", "")
        if scope["method"] in _WRITE_METHODS and (has_body or content_type) and not _is_json(content_type):
            message = f"Content-Type must be application/json, not {content_type or '(none)'!r}"
            await _refuse(send, False, 415, message, has_body)
            return
        if length.isdigit() and int(length) > self.max_body_bytes:
            limit = self.max_body_bytes
            await _refuse(send, False, 413, f"request body of {length} bytes is above the limit of {limit}", True)
            return
        if not has_body:
            await self.app(scope, receive, send)
            return
        await self._bounded(scope, receive, send)

    async def _bounded(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        """Run the app with a body counted as it streams: past the limit, the app's read fails and
        whatever it answers is replaced by one 413."""
        limit = self.max_body_bytes
        received = 0
        too_large = False
        started = False

        async def counted() -> _Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    raise _BodyTooLargeError
            return message

        async def guarded(message: _Message) -> None:
            nonlocal started
            if too_large:
                return  # the app's answer to a body it could not read; ours follows
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(_BodyTooLargeError):  # the app did not catch it: nothing answered yet
            await self.app(scope, counted, guarded)
        if too_large and not started:
            await _refuse(send, False, 413, f"request body is above the limit of {limit} bytes", True)


def _role_refusal(path: str, role: str) -> str:
    """Why ``role`` may not call ``path`` at all ("" if it may; the routes check the rest)."""
    if path in OTLP_PATHS:
        return "" if role in ("admin", "ingest") else "this key may not send traces"
    if path == METRICS_PATH:
        return "" if role in ("admin", "metrics") else "an admin or metrics key is required to scrape /metrics"
    if role == "metrics":
        return "a metrics key may only scrape /metrics"
    return ""


async def _refuse(
    send: _Send, otlp: bool, status: int, message: str, close: bool, extra: Mapping[str, str] | None = None
) -> None:
    if otlp:
        code = _UNAUTHENTICATED if status == 401 else _PERMISSION_DENIED
        body = json.dumps({"code": code, "message": message}).encode()
    else:
        body = json.dumps({"success": False, "detail": message, "error": message}, ensure_ascii=False).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (extra or {}).items()]
    if close:  # the body (or its rest) is not read: the connection cannot be reused
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
