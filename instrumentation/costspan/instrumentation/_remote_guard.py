"""The remote budget guard: a pre-send hook asking ``costspan serve`` (``POST /v1/budgets/check``).

Installed by the instrumentor when ``COSTSPAN_ENDPOINT`` is set, so an app run under
``opentelemetry-instrument`` is guarded with no code. Lives in the instrumentation slice because it
runs in the app; it speaks only JSON over HTTP to the processor.

One keep-alive HTTP connection per thread (``http.client`` connects it, TLS and ``TCP_NODELAY``
included, so costspan's own httpx instrumentation never sees it), a short timeout, and a choice when
the server cannot be reached: fail open (the call goes ahead; counted) or fail closed
(``BudgetExceededError``). The request goes out as one pre-built write and the answer is read with a
minimal HTTP/1.1 reader: ``http.client``'s own request building and header parsing cost more than the
check itself on the server.

The pre-send hook hands the reservation id back in its ``RequestRewrite``; the instrumentation writes
it on the call's span (``costspan.budget.reservation_id``), so the server settles exactly that
reservation from the call's priced record.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import threading
from decimal import Decimal
from typing import IO, Any
from urllib.parse import urlsplit

from costspan.instrumentation import attributes as attr
from costspan.instrumentation._hooks import BudgetExceededError, RequestInfo, RequestRewrite

__all__ = ["ENDPOINT_ENV", "FAIL_OPEN_ENV", "KEY_ENV", "TIMEOUT_ENV", "RemoteBudgetGuard", "request_payload"]

logger = logging.getLogger(__name__)

ENDPOINT_ENV = "COSTSPAN_ENDPOINT"
KEY_ENV = "COSTSPAN_API_KEY"
#: ``false`` makes an unreachable budget server block calls (default: let them through, counted).
FAIL_OPEN_ENV = "COSTSPAN_BUDGET_FAIL_OPEN"
#: Seconds to wait for the budget server before failing open or closed (default 0.25).
TIMEOUT_ENV = "COSTSPAN_BUDGET_TIMEOUT"


class RemoteBudgetGuard:
    """Call it as a pre-send hook; :meth:`check` and :meth:`settle` are the raw client."""

    def __init__(
        self,
        endpoint: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 0.25,
        fail_open: bool = True,
        service: str | None = None,
        count_input: bool = True,
    ) -> None:
        url = endpoint or os.environ.get(ENDPOINT_ENV, "")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"budget endpoint must be an http(s) URL (set {ENDPOINT_ENV}), got {url[:60]!r}")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._base = parts.path.rstrip("/")
        key = api_key if api_key is not None else os.environ.get(KEY_ENV)
        if key is not None and any(c in key for c in "\r\n"):
            raise ValueError("the API key must not contain line breaks")
        host = self._host if ":" not in self._host else f"[{self._host}]"
        default_port = (self._https and self._port == 443) or (not self._https and self._port == 80)
        # everything before the body but Content-Length's value, per path: one write per request
        self._head = (
            f"Host: {host if default_port else f'{host}:{self._port}'}\r\n"
            "Content-Type: application/json\r\nAccept: application/json\r\n"
            + (f"Authorization: Bearer {key}\r\n" if key else "")
            + "Content-Length: "
        ).encode("latin-1")
        self._timeout = timeout
        self.fail_open = fail_open
        # the server settles a reservation from the call's priced record, whose service is the
        # resource's service.name: send the same (OTEL_SERVICE_NAME unless given)
        self._service = service if service is not None else (os.environ.get("OTEL_SERVICE_NAME") or None)
        self._count_input = count_input
        self._local = threading.local()
        self.unreachable = 0
        #: checks the server answered 401 or 403 to (a wrong key or role, not an outage)
        self.key_refused = 0

    def _link(self) -> tuple[http.client.HTTPConnection, socket.socket, IO[bytes]]:
        link: tuple[http.client.HTTPConnection, socket.socket, IO[bytes]] | None = getattr(self._local, "link", None)
        if link is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self._timeout)
            conn.connect()  # sets TCP_NODELAY (and does the TLS handshake for https)
            sock = conn.sock
            assert sock is not None
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = self._local.link = (conn, sock, sock.makefile("rb"))
        return link

    def _drop(self) -> None:
        link = getattr(self._local, "link", None)
        self._local.link = None
        if link is not None:
            link[2].close()
            link[0].close()

    def _post(self, path: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = json.dumps(payload, separators=(",", ":")).encode()
        request = b"POST %s HTTP/1.1\r\n%s%d\r\n\r\n%s" % ((self._base + path).encode(), self._head, len(body), body)
        for attempt in (1, 2):  # a kept-alive connection the server closed: retry once on a fresh one
            _, sock, reader = self._link()
            try:
                sock.sendall(request)
                status, data, close = _read_response(reader)
            except _ClosedBeforeAnswerError:
                self._drop()  # nothing was answered: the server closed an idle connection, not this request
                if attempt == 2:
                    raise ConnectionResetError("the budget server closed the connection") from None
                continue
            except BaseException:
                self._drop()
                raise
            if close:
                self._drop()
            return status, json.loads(data) if data else {}
        raise AssertionError("unreachable")

    def check_payload(self, call: dict[str, Any]) -> dict[str, Any]:
        """The server's answer: ``{"allowed": true, "reservation_id": ...}`` or raises.

        Raises ``BudgetExceededError`` on 429 (or when unreachable and failing closed); returns
        ``{"allowed": true, "reservation_id": None, "unreachable": true}`` when failing open.
        """
        payload = {k: v for k, v in call.items() if v is not None}
        try:
            status, body = self._post("/v1/budgets/check", payload)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            return self._unreachable(type(exc).__name__)
        if status == 429:
            raise _error_from(body)
        if status in (401, 403):
            return self._refused_key(status, body)
        if status != 200:
            return self._unreachable(f"HTTP {status}")
        return body

    def _unreachable(self, why: str) -> dict[str, Any]:
        self.unreachable += 1
        if self.unreachable == 1 or self.unreachable % 1000 == 0:
            logger.warning("budget server unreachable (%s); failing %s", why, "open" if self.fail_open else "closed")
        if not self.fail_open:
            raise BudgetExceededError(
                f"budget server unreachable ({why}); failing closed", budget_id="", reason="unreachable"
            )
        return {"allowed": True, "reservation_id": None, "unreachable": True}

    def _refused_key(self, status: int, body: dict[str, Any]) -> dict[str, Any]:
        """The server answered but refused this guard's key: a configuration error, not an outage."""
        self.key_refused += 1
        detail = str(body.get("detail") or "")[:200]
        what = "key rejected (401)" if status == 401 else "forbidden (403)"
        fix = f"check {KEY_ENV}" if status == 401 else "use an ingest or admin key bound to this tenant (or none)"
        if self.key_refused == 1 or self.key_refused % 1000 == 0:
            logger.warning(
                "budget server: %s: %s; %s; failing %s", what, detail, fix, "open" if self.fail_open else "closed"
            )
        if not self.fail_open:
            raise BudgetExceededError(
                f"budget server: {what}: {detail}; {fix}; failing closed",
                budget_id="",
                reason="key_rejected" if status == 401 else "forbidden",
            )
        return {"allowed": True, "reservation_id": None, "key_refused": status}

    def settle(self, reservation_id: str, cost_usd: Decimal | None, tokens: int | None = None) -> bool:
        payload = {"reservation_id": reservation_id, "cost_usd": None if cost_usd is None else str(cost_usd)}
        if tokens is not None:
            payload["tokens"] = str(tokens)
        try:
            status, body = self._post("/v1/budgets/settle", payload)
        except (OSError, ValueError, http.client.HTTPException):
            return False
        return status == 200 and bool(body.get("settled"))

    def __call__(self, info: RequestInfo) -> RequestRewrite | None:
        """Check the call; the rewrite carries the reservation id (and an adaptive budget's changes)."""
        answer = self.check_payload(request_payload(info, service=self._service, count_input=self._count_input))
        rid = answer.get("reservation_id")
        rid = rid if isinstance(rid, str) else ""
        model, max_tokens = answer.get("model"), answer.get("max_tokens")
        if model is not None or max_tokens is not None:
            reason = str(answer.get("reason") or "adaptive")
            return RequestRewrite(model=model, max_tokens=max_tokens, reason=reason, reservation_id=rid)
        return RequestRewrite(reservation_id=rid) if rid else None

    def close(self) -> None:
        """Close this thread's connection (other threads' close with them)."""
        self._drop()


class _ClosedBeforeAnswerError(ConnectionError):
    """The connection ended before a status line came back."""


def _read_response(reader: IO[bytes]) -> tuple[int, bytes, bool]:
    """(status, body, whether the server closes the connection) of one HTTP/1.1 response."""
    line = reader.readline(65537)
    if not line:
        raise _ClosedBeforeAnswerError
    parts = line.split(None, 2)
    version, status = parts[0], parts[1] if len(parts) > 1 else b""
    if not version.startswith(b"HTTP/1.") or not status.isdigit():
        raise http.client.BadStatusLine(line.decode("latin-1", "replace"))
    length: int | None = None
    chunked = close = False
    while True:
        header = reader.readline(65537)
        if header in (b"\r\n", b"\n", b""):
            break
        name, _, value = header.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            close = b"close" in value.lower()
    if chunked:
        chunks = []
        while size := int(reader.readline(65537).split(b";", 1)[0], 16):
            chunks.append(reader.read(size))
            reader.readline(65537)
        while reader.readline(65537) not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return int(status), b"".join(chunks), close
    if length is None:
        return int(status), reader.read(), True
    data = reader.read(length)
    if len(data) != length:
        raise http.client.IncompleteRead(data, length - len(data))
    return int(status), data, close or version == b"HTTP/1.0"


def request_payload(info: RequestInfo, *, service: str | None, count_input: bool = True) -> dict[str, Any]:
    """The body of ``POST /v1/budgets/check`` for a request about to be sent (attribution from baggage)."""
    a = info.attribution
    return {
        "tenant": a.get(attr.TENANT_ID),
        "service": service,
        "workflow": a.get(attr.WORKFLOW_ID),
        "user": a.get(attr.USER_ID),
        "project": a.get(attr.PROJECT_ID),
        "provider": info.provider,
        "model": info.model,
        "input_tokens": info.estimate_input_tokens() if count_input else None,
        "max_tokens": info.max_tokens,
    }


def _error_from(body: dict[str, Any]) -> BudgetExceededError:
    def money(key: str) -> Decimal | None:
        value = body.get(key)
        return Decimal(str(value)) if value is not None and body.get("unit", "usd") == "usd" else None

    scope = body.get("scope") or {}
    estimate = body.get("estimate")
    estimate = estimate if isinstance(estimate, dict) else {}
    usd = estimate.get("usd")
    advice = body.get("advice")
    return BudgetExceededError(
        str(body.get("message") or "budget exceeded"),
        budget_id=str(body.get("budget_id") or ""),
        scope={str(k): str(v) for k, v in scope.items()},
        limit_usd=money("limit"),
        spent_usd=money("spent"),
        resets_at=body.get("resets_at"),
        reserved_usd=money("reserved"),
        estimate_usd=Decimal(str(usd)) if usd is not None else None,
        estimate_basis=str(estimate.get("how") or ""),
        reason=str(body.get("reason") or ""),
        advice=tuple(str(a) for a in advice) if isinstance(advice, list) else (),
    )
