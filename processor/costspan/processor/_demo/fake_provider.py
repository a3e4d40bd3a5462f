"""A fake LLM provider on 127.0.0.1 for the demo and the tests: real sockets, real chunked SSE, gzip/br.

Speaks enough of each API for the real SDKs: OpenAI chat/completions, legacy completions, responses
and embeddings (also under Azure's ``/openai/deployments/{d}/...``), Anthropic ``/v1/messages`` (+
``count_tokens``), Gemini ``generateContent`` / ``streamGenerateContent`` (``alt=sse`` or a JSON array)
and Ollama ``/api/chat``. Every request it receives is recorded.

    with FakeProvider() as fake:
        fake.script(Behavior(status=500), Behavior())   # the next two requests: a 500, then normal
        client = openai.OpenAI(base_url=fake.url("/v1"), api_key="k")
        ...
        fake.requests[-1].json["model"]

Usage is given in semconv-inclusive terms (:class:`FakeUsage`) and spelled per provider.
"""

from __future__ import annotations

import gzip
import json
import socket
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from costspan.processor._demo import provider_apis as apis
from costspan.processor._demo.provider_script import Behavior, FakeUsage, RecordedRequest

__all__ = ["Behavior", "FakeProvider", "FakeUsage", "RecordedRequest"]


class _Encoder:
    def __init__(self, encoding: str | None) -> None:
        self.encoding = encoding
        if encoding == "gzip":
            self._z: Any = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._z = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS)
        elif encoding == "br":
            import brotli

            self._z = brotli.Compressor()
        else:
            self._z = None

    def chunk(self, data: bytes) -> bytes:
        if self._z is None:
            return data
        if self.encoding == "br":
            return bytes(self._z.process(data)) + bytes(self._z.flush())
        return bytes(self._z.compress(data)) + bytes(self._z.flush(zlib.Z_SYNC_FLUSH))

    def end(self) -> bytes:
        if self._z is None:
            return b""
        if self.encoding == "br":
            return bytes(self._z.finish())
        return bytes(self._z.flush())


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return  # a client that hung up (timeouts, cut streams, early close) is expected here
        super().handle_error(request, client_address)


class FakeProvider:
    def __init__(self, usage: FakeUsage | None = None, *, usage_for: Callable[[Any], FakeUsage] | None = None) -> None:
        """``usage`` answers every call; ``usage_for(request_json)`` (if given) computes it per call."""
        self.usage = usage or FakeUsage()
        self.usage_for = usage_for
        self.requests: list[RecordedRequest] = []
        self._script: deque[Behavior] = deque()
        self._lock = threading.Lock()
        provider = self

        class Handler(_Handler):
            fake = provider

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> FakeProvider:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    # --- scripting ---------------------------------------------------------------------------------
    def script(self, *behaviors: Behavior) -> None:
        """Answer the next requests with these behaviours, in order (then normally)."""
        with self._lock:
            self._script.extend(behaviors)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.requests.clear()

    def _next(self, req: RecordedRequest) -> Behavior:
        with self._lock:
            self.requests.append(req)
            return self._script.popleft() if self._script else Behavior()


class _Handler(BaseHTTPRequestHandler):
    fake: FakeProvider
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else every small write waits ~40 ms for a delayed ACK

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    # --- dispatch ------------------------------------------------------------------------------------
    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        req = RecordedRequest(
            self.command, parts.path, parse_qs(parts.query), {k.lower(): v for k, v in self.headers.items()}, body
        )
        b = self.fake._next(req)
        override = req.headers.get("x-fake-behavior")
        if override:  # for a server in another process: the request carries its behaviour
            b = Behavior(**json.loads(override))
        if b.delay:
            time.sleep(b.delay)
        payload = req.json if body[:1] == b"{" else {}
        per_call = self.fake.usage_for(payload) if self.fake.usage_for is not None else None
        usage = None if b.omit_usage else (b.usage or per_call or self.fake.usage)
        path = parts.path
        model = b.response_model or (payload or {}).get("model") or "unknown-model"
        if b.status >= 400:
            return self._error(b, path)
        if path.endswith("/messages/count_tokens"):
            return self._json(b, {"input_tokens": (usage or FakeUsage()).input})
        if path.endswith("/messages"):
            return self._answer(b, apis.anthropic(b, payload, model, usage))
        if ":generateContent" in path or ":streamGenerateContent" in path:
            gmodel = b.response_model or path.rsplit("/", 1)[-1].split(":", 1)[0]
            return self._answer(b, apis.gemini(b, req, gmodel, usage))
        if path.endswith("/api/chat"):
            return self._answer(b, apis.ollama(b, payload, model, usage))
        if "/openai/deployments/" in path and not (payload or {}).get("model"):
            model = b.response_model or path.split("/openai/deployments/", 1)[1].split("/", 1)[0]
        if path.endswith("/chat/completions"):
            return self._answer(b, apis.openai_chat(b, payload, model, usage))
        if path.endswith("/completions"):
            return self._answer(b, apis.openai_completions(b, payload, model, usage))
        if path.endswith("/responses"):
            return self._answer(b, apis.openai_responses(b, payload, model, usage))
        if path.endswith("/embeddings"):
            return self._answer(b, apis.openai_embeddings(b, payload, model, usage))
        self._send(404, b'{"error":{"message":"not found","type":"not_found"}}', {}, None)

    # --- plumbing ------------------------------------------------------------------------------------
    def _send(self, status: int, data: bytes, headers: dict[str, str], encoding: str | None) -> None:
        enc = _Encoder(encoding)
        data = enc.chunk(data) + enc.end() if encoding else data
        self.send_response(status)
        self.send_header("content-type", headers.pop("content-type", "application/json"))
        if encoding:
            self.send_header("content-encoding", encoding)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _json(self, b: Behavior, obj: Any) -> None:
        self._send(200, json.dumps(obj).encode(), dict(b.headers), b.encoding)

    def _stream(self, b: Behavior, events: Iterator[bytes], content_type: str = "text/event-stream") -> None:
        enc = _Encoder(b.encoding)
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("transfer-encoding", "chunked")
        self.send_header("cache-control", "no-cache")
        if b.encoding:
            self.send_header("content-encoding", b.encoding)
        for k, v in b.headers.items():
            self.send_header(k, v)
        self.end_headers()
        for n, ev in enumerate(events):
            if b.cut_after is not None and n >= b.cut_after:
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            data = enc.chunk(ev)
            if data:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            if b.chunk_delay:
                time.sleep(b.chunk_delay)
        tail = enc.end()
        if tail:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(tail), tail))
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _answer(self, b: Behavior, answer: apis.Answer) -> None:
        if isinstance(answer, apis.Json):
            self._json(b, answer.body)
        else:
            self._stream(b, answer.events, answer.content_type)

    def _error(self, b: Behavior, path: str) -> None:
        if path.endswith("/messages"):
            err: dict[str, Any] = {"type": "error", "error": {"type": "api_error", "message": "fake failure"}}
        else:
            err = {"error": {"message": "fake failure", "type": "server_error", "code": None}}
        headers = {"retry-after-ms": "1", **b.headers}
        self._send(b.status, json.dumps(err).encode(), headers, b.encoding)


def gunzip(data: bytes) -> bytes:
    """Test helper: decompress a gzip body."""
    return gzip.decompress(data)


def _serve_until_stdin_closes() -> None:
    """``python -m costspan.processor._demo.fake_provider``: print the port, serve until stdin is closed."""
    with FakeProvider() as fake:
        print(fake.port, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    _serve_until_stdin_closes()
