"""Test support: run an ASGI app with uvicorn on 127.0.0.1 in a background thread (real sockets), with
the request head bounded as ``costspan serve`` bounds it."""

from __future__ import annotations

import threading
import time
from types import TracebackType

import uvicorn
from fastapi import FastAPI

from costspan.processor.serve._http import DEFAULT_MAX_HEADER_BYTES, server_config

__all__ = ["ServerThread"]


class ServerThread:
    """``with ServerThread(app) as server: httpx.post(server.url + "/v1/traces", ...)``; port 0 picks one."""

    def __init__(
        self,
        app: FastAPI,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        timeout: float = 20.0,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    ) -> None:
        config = server_config(
            app,
            host=host,
            port=port,
            max_header_bytes=max_header_bytes,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="costspan-test-server", daemon=True)
        self._timeout = timeout
        self.url = ""

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + self._timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        sockets = self.server.servers[0].sockets
        host, port = sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.should_exit = True
        self._thread.join(self._timeout)
