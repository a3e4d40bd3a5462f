"""The uvicorn server of ``costspan serve``, with the request line and headers bounded.

uvicorn's httptools parser keeps every header byte a client sends until the headers end: a 200 MB
header is read into memory and handed to the app. :func:`server_config` makes the server count
the bytes of a request's head (request line and headers) as they arrive and answer ``431 Request
Header Fields Too Large`` and close once they pass ``max_header_bytes`` — before the app runs.
Without httptools (uvicorn's h11 protocol) h11's own bound does the same job (uvicorn answers 400).
"""

from __future__ import annotations

from typing import Any, Final

import uvicorn

__all__ = ["DEFAULT_MAX_HEADER_BYTES", "server_config"]

DEFAULT_MAX_HEADER_BYTES: Final = 64 * 1024


def _bounded_httptools(max_header_bytes: int) -> type[Any] | None:
    """A subclass of uvicorn's httptools protocol that refuses a request head above the bound."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools is not installed: uvicorn runs h11
        return None

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        limit = max_header_bytes

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_bytes = 0  # bytes received since the last head ended
            self._in_body = False

        def on_headers_complete(self) -> None:
            self._in_body = True
            self._head_bytes = 0
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._in_body = False
            super().on_message_complete()

        def data_received(self, data: bytes) -> None:
            if self._in_body:
                super().data_received(data)
                return
            self._head_bytes += len(data)
            super().data_received(data)
            # still in the head after this chunk (a chunk that ends the head also counts its body's
            # first bytes, so only a head that is still open is judged)
            if not self._in_body and self._head_bytes > self.limit and not self.transport.is_closing():
                self._refuse_head()

        def _refuse_head(self) -> None:
            message = b"request line and headers are above the limit of %d bytes" % self.limit
            self.logger.warning("refused a request whose head is above %d bytes", self.limit)
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                b"content-type: text/plain; charset=utf-8\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(message), message)
            )
            self.transport.close()

    return BoundedHttpToolsProtocol


def server_config(
    app: Any, *, host: str, port: int, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES, **options: Any
) -> uvicorn.Config:
    """``uvicorn.Config`` for ``app`` with the request head bounded (``options`` as uvicorn's)."""
    protocol = _bounded_httptools(max_header_bytes)
    if protocol is not None:
        return uvicorn.Config(app, host=host, port=port, http=protocol, **options)
    options["h11_max_incomplete_event_size"] = max_header_bytes
    return uvicorn.Config(app, host=host, port=port, http="h11", **options)
