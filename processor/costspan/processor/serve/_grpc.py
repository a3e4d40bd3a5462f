"""OTLP/gRPC ``TraceService/Export`` of ``costspan serve``: what the Collector's ``load_balancing`` exporter speaks.

One ``grpc.aio`` server on the app's own event loop, started once every other piece of the app's
lifespan has started and stopped before any of them stops (:func:`with_grpc_receiver`). It answers
with the HTTP receiver's own path (:meth:`~costspan.processor.ingest._receiver.Receiver.export`), so
both protocols decode and price in the ingest thread or workers — never on the event loop — and
answer only once the store holds the batch durably.

The method is registered on the raw bytes of the request (no deserializer): the generated
``add_TraceServiceServicer_to_server`` would parse every export with the full protobuf decoder on
the event loop before the handler runs, while the receiver's decoder reads only the attributes it
needs, off the loop. The service and method names come from the generated ``TraceService`` descriptor.

The rest is HTTP's, in gRPC's terms:

- the key from the ``x-api-key`` or ``authorization: Bearer`` metadata, checked with the key store
  before anything else: none or a bad one → ``UNAUTHENTICATED``, a key whose role may not send →
  ``PERMISSION_DENIED``;
- a key bound to a tenant: spans naming another tenant are refused in the partial success, spans
  naming none are the key's tenant's;
- ``grpc.max_receive_message_length`` = ``max_body_bytes`` (after gzip decompression too) →
  ``RESOURCE_EXHAUSTED``; gzip (``grpc-encoding``) is decompressed by gRPC itself;
- a full ingest queue or a failed ledger write → ``UNAVAILABLE`` with ``google.rpc.RetryInfo`` (the
  OTLP exporters wait that long and retry), a body that does not decode → ``INVALID_ARGUMENT``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Final, NoReturn

import grpc
from fastapi import FastAPI, HTTPException
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from grpc import aio
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from costspan.processor.api._auth import authenticate
from costspan.processor.api._keys import KeyStore
from costspan.processor.ingest._otlp import PROTOBUF, encode_response
from costspan.processor.ingest._receiver import OutcomeKind, Receiver

__all__ = ["GRPC_PORT_STATE", "TraceExportService", "with_grpc_receiver"]

logger = logging.getLogger(__name__)

_SERVICE: Final = trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"]
_EXPORT: Final = _SERVICE.methods_by_name["Export"].name
#: Where the app keeps the port its gRPC server is bound to (``app.state``), 0 when it is off.
GRPC_PORT_STATE: Final = "grpc_port"
#: How long a stopping server lets exports in flight finish (they wait for the ledger).
_STOP_GRACE_S: Final = 10.0
_SENDING_ROLES: Final = frozenset({"admin", "ingest"})
_CODES: Final[dict[OutcomeKind, grpc.StatusCode]] = {
    "bad_request": grpc.StatusCode.INVALID_ARGUMENT,
    "too_large": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "internal": grpc.StatusCode.INTERNAL,
}
_RETRY_INFO_KEY: Final = "google.rpc.retryinfo-bin"

_Context = aio.ServicerContext[bytes, bytes]


class TraceExportService:
    """``TraceService/Export`` over a :class:`Receiver`: :meth:`export` answers one call.

    ``keys`` None: no key is asked for (``--insecure-no-auth``, or an app without the usage API), as
    on OTLP/HTTP.
    """

    def __init__(self, receiver: Receiver, keys: KeyStore | None, retry_after_seconds: int) -> None:
        self.receiver = receiver
        self.keys = keys
        self._retry_info = RetryInfo(retry_delay=Duration(seconds=retry_after_seconds)).SerializeToString()

    async def _abort(self, context: _Context, code: grpc.StatusCode, message: str) -> NoReturn:
        retry = ((_RETRY_INFO_KEY, self._retry_info),) if code == grpc.StatusCode.UNAVAILABLE else ()
        await context.abort(code, message, trailing_metadata=retry)

    async def export(self, body: bytes, context: _Context) -> bytes:
        """One export: the serialized ``ExportTraceServiceRequest`` in, the serialized response out."""
        headers = {key.lower(): value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
        try:
            principal = authenticate(self.keys, headers)
        except HTTPException as exc:
            code = grpc.StatusCode.UNAUTHENTICATED if exc.status_code == 401 else grpc.StatusCode.PERMISSION_DENIED
            await self._abort(context, code, str(exc.detail))
        if principal.role not in _SENDING_ROLES:
            await self._abort(context, grpc.StatusCode.PERMISSION_DENIED, "this key may not send traces")
        if not self.receiver.store.has_room():  # before spending CPU on a body that cannot be queued
            await self._abort(context, grpc.StatusCode.UNAVAILABLE, "ingest queue is full")
        outcome = await self.receiver.export(body, PROTOBUF, "", principal.tenant)
        if outcome.kind != "stored":
            await self._abort(context, _CODES[outcome.kind], outcome.message)
        return encode_response(PROTOBUF, outcome.rejected, outcome.message)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


@asynccontextmanager
async def _serving(app: FastAPI) -> AsyncIterator[None]:
    settings = app.state.settings
    setattr(app.state, GRPC_PORT_STATE, 0)
    if not settings.grpc_port:
        yield
        return
    service = TraceExportService(app.state.receiver, getattr(app.state, "api_keys", None), settings.retry_after_seconds)
    server = aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.so_reuseport", 0),  # a port another process holds is an error, not a shared port
        ]
    )
    handler = grpc.method_handlers_generic_handler(
        _SERVICE.full_name, {_EXPORT: grpc.unary_unary_rpc_method_handler(service.export)}
    )
    server.add_generic_rpc_handlers((handler,))
    address = _address(settings.host, settings.grpc_port)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"OTLP/gRPC: cannot listen on {address} (is the port taken?)") from exc
    await server.start()
    setattr(app.state, GRPC_PORT_STATE, port)
    logger.info("OTLP/gRPC receiver on %s", address)
    try:
        yield
    finally:
        await server.stop(_STOP_GRACE_S)


def with_grpc_receiver(
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """``lifespan`` with the gRPC server inside it: serving once all of the app's pieces have started
    (the store, the usage index …), as uvicorn serves HTTP, and stopped (its exports in flight
    answered) before they stop."""

    @asynccontextmanager
    async def outer(app: FastAPI) -> AsyncIterator[None]:
        async with lifespan(app), _serving(app):
            yield

    return outer
