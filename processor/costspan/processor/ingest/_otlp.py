"""OTLP/HTTP trace bodies: decompression with a size limit, protobuf and JSON decoding, responses."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Iterator
from typing import Any, Final

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError
from google.rpc.status_pb2 import Status as RpcStatus
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from costspan.processor.ingest._normalize import WANTED_KEYS, AttrValue, SpanView

__all__ = [
    "JSON",
    "PROTOBUF",
    "BadRequestError",
    "BodyTooLargeError",
    "decode_for_ingest",
    "decode_request",
    "decompress",
    "encode_error",
    "encode_response",
    "iter_span_views",
]

PROTOBUF: Final = "application/x-protobuf"
JSON: Final = "application/json"
_STATUS_ERROR: Final = Status.STATUS_CODE_ERROR
#: How deep OTLP JSON may nest (an attribute's array or key-value list in another, ...): protobuf's own default.
_MAX_JSON_DEPTH: Final = 100
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
    parts: list[bytes] = []
    size = 0
    rest = body
    while True:  # a gzip body may hold several members (as `cat a.gz b.gz`): every one is read, as gzip does
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(rest, limit - size + 1)
            if size + len(out) > limit or inflater.unconsumed_tail:
                raise BodyTooLargeError(f"decompressed body is above the limit of {limit} bytes")
            out += inflater.flush()
        except zlib.error as exc:
            raise BadRequestError(f"body is not valid {encoding}: {exc}") from None
        size += len(out)
        if size > limit:
            raise BodyTooLargeError(f"decompressed body is above the limit of {limit} bytes")
        if not inflater.eof:
            raise BadRequestError(f"body is truncated {encoding}")
        parts.append(out)
        rest = inflater.unused_data
        if not rest:
            return parts[0] if len(parts) == 1 else b"".join(parts)
        if encoding != "gzip":
            raise BadRequestError(f"body has {len(rest)} byte(s) after the end of its {encoding} stream")


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
        data = json.loads(body, parse_constant=_no_constant)
    except RecursionError:
        raise BadRequestError("body is not valid OTLP JSON: nested too deeply") from None
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
        json_format.ParseDict(data, request, ignore_unknown_fields=True, max_recursion_depth=_MAX_JSON_DEPTH)
    except RecursionError:
        raise BadRequestError("body is not valid OTLP JSON: nested too deeply") from None
    except (json_format.ParseError, ValueError, TypeError) as exc:
        message = str(exc)
        if len(message) > 300:  # protobuf names every level of a deep error: the reader needs the start
            message = message[:300] + "..."
        raise BadRequestError(f"body is not an OTLP ExportTraceServiceRequest: {message}") from None
    return request


def _no_constant(name: str) -> Any:
    """JSON has no NaN or Infinity (OTLP JSON writes them as strings): a bare one refuses the body."""
    raise BadRequestError(f"body is not valid JSON: {name} is not a JSON value")


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


def _ingest_request_class() -> Any:
    """``ExportTraceServiceRequest`` with ``Span.attributes`` read as ``repeated bytes``: each ``KeyValue`` raw.

    The same wire format (a ``KeyValue`` is one length-delimited field), parsed several times faster,
    and the attributes then cost one ``bytes`` each instead of a ``KeyValue`` and an ``AnyValue``
    wrapper: :func:`_wanted` reads only the keys the normalizer wants and decodes only their values.
    Built in a private descriptor pool from the generated modules' own descriptors.
    """
    pool = descriptor_pool.DescriptorPool()
    for module in (common_pb2, resource_pb2, trace_pb2, trace_service_pb2):
        file = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(file)
        del file.service[:]
        if module is trace_pb2:
            span = next(m for m in file.message_type if m.name == "Span")
            field = next(f for f in span.field if f.name == "attributes")
            field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
            field.ClearField("type_name")
        pool.Add(file)
    name = ExportTraceServiceRequest.DESCRIPTOR.full_name
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


_IngestRequest: Final = _ingest_request_class()


def decode_for_ingest(body: bytes, content_type: str) -> Any:
    """Decode a decompressed body for :func:`iter_span_views` (span attributes left raw until read).

    Raises :class:`BadRequestError` as :func:`decode_request` does. Span attributes the normalizer
    does not read are not decoded at all, so only a malformed attribute it reads refuses the body.
    """
    if content_type == PROTOBUF:
        try:
            return _IngestRequest.FromString(body)
        except DecodeError as exc:
            raise BadRequestError(f"body is not a valid protobuf ExportTraceServiceRequest: {exc}") from None
    return _IngestRequest.FromString(decode_request(body, content_type).SerializeToString())


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


#: A ``KeyValue`` starts ``0x0a <length> <key>`` (field 1; keys under 128 bytes): that prefix → the key if
#: wanted, or ``""`` for a key seen not to be (learned as spans come; bounded by forgetting them).
_WANTED_PREFIXES: Final = {b"\x0a" + bytes((len(k.encode()),)) + k.encode(): k for k in WANTED_KEYS}
_PREFIXES: dict[bytes, str] = dict(_WANTED_PREFIXES)
_PREFIXES_LIMIT: Final = 4096
#: A wanted attribute's ``KeyValue`` bytes → its value (bounded by clearing).
_VALUES: dict[bytes, AttrValue] = {}
_VALUES_LIMIT: Final = 8192
_DOUBLE: Final = struct.Struct("<d")
_INT64: Final = 1 << 63


def _decode_value(tail: bytes) -> AttrValue | None:
    """The scalar of ``tail`` (``0x12 <length> <AnyValue with one field>``), or ``None`` for any other shape."""
    size = len(tail)
    if size < 4 or tail[0] != 0x12 or tail[1] != size - 2 or size > 129:  # one length byte, the AnyValue after it
        return None
    kind = tail[2]
    if kind == 0x0A:  # string_value
        if tail[3] != size - 4:
            return None
        try:
            return tail[4:].decode()
        except UnicodeDecodeError:
            return None
    if kind == 0x18:  # int_value: one varint to the end
        last = tail[-1]
        if last >= 0x80:
            return None
        if size == 4:  # under 128
            return last
        if size == 5:  # 128 to 16,383 tokens
            return (tail[3] & 0x7F | last << 7) if tail[3] >= 0x80 else None
        if size == 6:  # 16,384 to 2,097,151 tokens
            if tail[3] >= 0x80 and tail[4] >= 0x80:
                return tail[3] & 0x7F | (tail[4] & 0x7F) << 7 | last << 14
            return None
        return _varint_to_end(tail)
    if kind == 0x10:  # bool_value
        return _varint_to_end(tail) if size > 4 else tail[3] != 0 if tail[3] < 0x80 else None
    if kind == 0x21 and size == 11:  # double_value
        return _DOUBLE.unpack_from(tail, 3)[0]  # type: ignore[no-any-return]
    return None


def _varint_to_end(tail: bytes) -> AttrValue | None:
    """The varint from ``tail[3]`` to the end as an int64 (a bool for ``bool_value``); ``None`` if it is not one."""
    value = 0
    shift = 0
    size = len(tail)
    for i in range(3, size):
        byte = tail[i]
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            if i != size - 1 or value >> 64:  # more after it, or beyond 64 bits: protobuf decides
                return None
            if tail[2] == 0x10:
                return value != 0
            return value - (_INT64 << 1) if value >= _INT64 else value
    return None


def _slow_kv(kv: bytes, out: dict[str, AttrValue]) -> None:
    """One raw ``KeyValue`` decoded by protobuf into ``out`` if wanted: what the fast reading does not take."""
    try:
        parsed = KeyValue.FromString(kv)
    except DecodeError as exc:
        raise BadRequestError(f"body is not a valid protobuf ExportTraceServiceRequest: {exc}") from None
    key = parsed.key
    if key in WANTED_KEYS:
        value = _any_value(parsed.value)
        if value is not None:
            out[key] = value


def _new_value(kv: bytes, key: str, out: dict[str, AttrValue]) -> None:
    """A wanted attribute whose encoding was not seen lately: decoded (and remembered), or left to protobuf."""
    value = _decode_value(kv[kv[1] + 2 :])
    if value is None:
        _slow_kv(kv, out)
        return
    if len(_VALUES) >= _VALUES_LIMIT:
        _VALUES.clear()
    _VALUES[kv] = out[key] = value


def _new_key(kv: bytes, out: dict[str, AttrValue]) -> None:
    """An attribute whose key was not seen yet: a key not wanted is remembered as such; the rest is protobuf's."""
    if kv[0] != 0x0A or kv[1] >= 0x80:
        _slow_kv(kv, out)
        return
    prefix = kv[: kv[1] + 2]
    key = _WANTED_PREFIXES.get(prefix)
    if key is not None:  # wanted after all: the learned keys were being forgotten by another thread
        _new_value(kv, key, out)
        return
    if len(_PREFIXES) >= _PREFIXES_LIMIT:
        _PREFIXES.clear()
        _PREFIXES.update(_WANTED_PREFIXES)
    _PREFIXES[prefix] = ""


def _wanted(
    kvs: Any, prefixes: dict[bytes, str] = _PREFIXES, values: dict[bytes, AttrValue] = _VALUES
) -> dict[str, AttrValue]:
    """The scalar attributes the normalizer reads, from raw ``KeyValue`` bytes (the last of a repeated key).

    The common encoding (key first, then the value, each once) is read by hand; anything else is
    decoded by protobuf. The key of an attribute not wanted is only compared, its value never read
    (nor checked: a malformed or non-UTF-8 one no longer refuses the body, and a ``KeyValue`` whose
    key field is written twice, which no encoder does, is read by its first key when that is unwanted).
    """
    out: dict[str, AttrValue] = {}
    try:
        for kv in kvs:
            key = prefixes.get(kv[: kv[1] + 2])
            if key:
                value = values.get(kv)
                if value is None:
                    _new_value(kv, key, out)
                else:
                    out[key] = value
            elif key is None:
                _new_key(kv, out)
    except IndexError:  # a KeyValue of under two bytes: every attribute of the span decoded by protobuf
        out = {}
        for kv in kvs:
            _slow_kv(kv, out)
    return out


def _resource_attrs(kvs: Any) -> dict[str, AttrValue]:
    out: dict[str, AttrValue] = {}
    kv: KeyValue
    for kv in kvs:
        value = _any_value(kv.value)
        if value is not None:
            out[kv.key] = value
    return out


def iter_span_views(request: Any) -> Iterator[SpanView | str]:
    """Each span of a :func:`decode_for_ingest` request (or an ``ExportTraceServiceRequest``) as a
    :class:`SpanView`, or a rejection reason for a span with invalid ids."""
    if isinstance(request, ExportTraceServiceRequest):
        request = _IngestRequest.FromString(request.SerializeToString())
    new = tuple.__new__  # the named tuple's own __new__ is one more Python frame per span
    wanted = _wanted
    for rs in request.resource_spans:
        resource = _resource_attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            scope = ss.scope.name
            for span in ss.spans:
                attrs = wanted(span.attributes)
                trace_id = span.trace_id
                span_id = span.span_id
                if len(trace_id) != 16 or len(span_id) != 8:
                    yield "span with an invalid trace or span id"
                    continue
                yield new(
                    SpanView,
                    (
                        trace_id.hex(),
                        span_id.hex(),
                        span.parent_span_id.hex(),
                        span.start_time_unix_nano,
                        span.end_time_unix_nano,
                        attrs,
                        resource,
                        scope,
                        span.status.code == _STATUS_ERROR,
                    ),
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
    return RpcStatus(code=code, message=message).SerializeToString()
