"""OTLP/HTTP trace bodies: decompression with a size limit, protobuf and JSON decoding, responses."""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Iterator
from typing import Any, Final

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from costspan.processor.normalize import WANTED_KEYS, AttrValue, SpanView

__all__ = [
    "JSON",
    "PROTOBUF",
    "BadRequestError",
    "BodyTooLargeError",
    "decode_request",
    "decompress",
    "encode_error",
    "encode_response",
    "iter_span_views",
]

PROTOBUF: Final = "application/x-protobuf"
JSON: Final = "application/json"
_STATUS_ERROR: Final = Status.STATUS_CODE_ERROR
#: The AnyValue members read (arrays, key-value lists and bytes are not).
_SCALAR_KINDS: Final = frozenset({"string_value", "int_value", "double_value", "bool_value"})
_ID_FIELDS: Final = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


class BadRequestError(ValueError):
    """The body cannot be decoded; the message says why (answered 400)."""


class BodyTooLargeError(ValueError):
    """The body is above the limit, before or after decompression (answered 413)."""


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` decoded per ``Content-Encoding``, refusing more than ``limit`` bytes of output."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        if len(body) > limit:
            raise BodyTooLargeError(f"body of {len(body)} bytes is above the limit of {limit}")
        return body
    if encoding not in ("gzip", "deflate"):
        raise BadRequestError(f"unsupported Content-Encoding {encoding!r}")
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
        if len(out) > limit or inflater.unconsumed_tail:
            raise BodyTooLargeError(f"decompressed body is above the limit of {limit} bytes")
        out += inflater.flush()
    except zlib.error as exc:
        raise BadRequestError(f"body is not valid {encoding}: {exc}") from None
    if len(out) > limit:
        raise BodyTooLargeError(f"decompressed body is above the limit of {limit} bytes")
    if not inflater.eof:
        raise BadRequestError(f"body is truncated {encoding}")
    return out


def _hex_to_b64(value: object, field: str) -> object:
    if not isinstance(value, str):
        return value
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise BadRequestError(f"{field} is not hex: {value[:40]!r}") from None
    return base64.b64encode(raw).decode("ascii")


def _fix_ids(obj: dict[str, Any]) -> None:
    for field in _ID_FIELDS:
        if field in obj:
            obj[field] = _hex_to_b64(obj[field], field)


def _json_to_proto(body: bytes) -> ExportTraceServiceRequest:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequestError(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequestError("body must be a JSON object")
    try:
        for rs in data.get("resourceSpans", data.get("resource_spans", [])) or []:
            for ss in rs.get("scopeSpans", rs.get("scope_spans", [])) or []:
                for span in ss.get("spans", []) or []:
                    _fix_ids(span)
                    for link in span.get("links", []) or []:
                        _fix_ids(link)
    except (AttributeError, TypeError):
        raise BadRequestError("body does not have the OTLP trace shape") from None
    request = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(data, request, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError) as exc:
        raise BadRequestError(f"body is not an OTLP ExportTraceServiceRequest: {exc}") from None
    return request


def decode_request(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    """Decode a decompressed body; raises :class:`BadRequestError` with the reason."""
    if content_type == PROTOBUF:
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise BadRequestError(f"body is not a valid protobuf ExportTraceServiceRequest: {exc}") from None
        return request
    if content_type == JSON:
        return _json_to_proto(body)
    raise BadRequestError(f"unsupported Content-Type {content_type!r}")


def _any_value(value: AnyValue) -> AttrValue | None:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bool_value":
        return value.bool_value
    return None


def _wanted(
    kvs: Any, wanted: frozenset[str] = WANTED_KEYS, scalars: frozenset[str] = _SCALAR_KINDS
) -> dict[str, AttrValue]:
    out: dict[str, AttrValue] = {}
    for kv in kvs:
        key = kv.key
        if key in wanted:
            value = kv.value
            kind = value.WhichOneof("value")
            if kind in scalars:
                out[key] = getattr(value, kind)
    return out


def _resource_attrs(kvs: Any) -> dict[str, AttrValue]:
    out: dict[str, AttrValue] = {}
    kv: KeyValue
    for kv in kvs:
        value = _any_value(kv.value)
        if value is not None:
            out[kv.key] = value
    return out


def iter_span_views(request: ExportTraceServiceRequest) -> Iterator[SpanView | str]:
    """Each span as a :class:`SpanView`, or a rejection reason for a span with invalid ids."""
    for rs in request.resource_spans:
        resource = _resource_attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            scope = ss.scope.name
            for span in ss.spans:
                attrs = _wanted(span.attributes)
                trace_id = span.trace_id
                span_id = span.span_id
                if len(trace_id) != 16 or len(span_id) != 8:
                    yield "span with an invalid trace or span id"
                    continue
                yield SpanView(
                    trace_id.hex(),
                    span_id.hex(),
                    span.parent_span_id.hex(),
                    span.start_time_unix_nano,
                    span.end_time_unix_nano,
                    attrs,
                    resource,
                    scope,
                    span.status.code == _STATUS_ERROR,
                )


def encode_response(content_type: str, rejected: int = 0, message: str = "") -> bytes:
    """An ExportTraceServiceResponse in ``content_type``, with partial success when spans were rejected."""
    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    if content_type == JSON:
        if not rejected:
            return b"{}"
        return json.dumps({"partialSuccess": {"rejectedSpans": str(rejected), "errorMessage": message}}).encode()
    return response.SerializeToString()


def encode_error(content_type: str, code: int, message: str) -> bytes:
    """A ``google.rpc.Status`` body (the OTLP/HTTP error shape) in ``content_type``."""
    if content_type == JSON:
        return json.dumps({"code": code, "message": message}).encode()
    # google.rpc.Status { int32 code = 1; string message = 2; } encoded by hand (no typed module for it)
    text = message.encode()
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
