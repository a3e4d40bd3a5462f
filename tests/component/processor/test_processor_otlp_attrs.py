"""Span attributes read from their raw bytes on ingest agree with protobuf's own decoding of them."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from costspan.pricing import default_pricer
from costspan.processor.ingest import _otlp as otlp
from costspan.processor.ingest._normalize import WANTED_KEYS, AttrValue, Normalizer, SpanView
from costspan.processor.ingest._otlp import JSON, PROTOBUF, BadRequestError, decode_for_ingest, iter_span_views

_KEYS = [*sorted(WANTED_KEYS), "server.port", "gen_ai.response.id", "", "x" * 130, "gen_ai.usage.input_tokenz"]


def _reference(kvs: list[bytes]) -> dict[str, AttrValue]:
    """What the ingest path read before: every ``KeyValue`` decoded by protobuf, the wanted scalars kept."""
    out: dict[str, AttrValue] = {}
    for raw in kvs:
        kv = KeyValue.FromString(raw)
        if kv.key in WANTED_KEYS:
            kind = kv.value.WhichOneof("value")
            if kind in ("string_value", "int_value", "double_value", "bool_value"):
                out[kv.key] = getattr(kv.value, kind)
    return out


@st.composite
def any_values(draw: st.DrawFn) -> AnyValue:
    value = AnyValue()
    kind = draw(st.sampled_from(["string", "int", "bool", "double", "array", "kvlist", "bytes", "none"]))
    if kind == "string":
        value.string_value = draw(st.text(max_size=150))
    elif kind == "int":
        value.int_value = draw(st.one_of(st.integers(0, 3_000_000), st.integers(-(2**63), 2**63 - 1)))
    elif kind == "bool":
        value.bool_value = draw(st.booleans())
    elif kind == "double":
        value.double_value = draw(st.floats(allow_nan=False))
    elif kind == "array":
        value.array_value.values.add().int_value = draw(st.integers(min_value=0, max_value=9))
    elif kind == "kvlist":
        value.kvlist_value.values.add(key="a").value.string_value = "b"
    elif kind == "bytes":
        value.bytes_value = draw(st.binary(max_size=4))
    return value


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


@st.composite
def raw_key_values(draw: st.DrawFn) -> bytes:
    """A serialized ``KeyValue``, usually as every encoder writes it, sometimes as no encoder does."""
    key = draw(st.sampled_from(_KEYS)).encode()
    value = draw(any_values()).SerializeToString()
    shape = draw(st.sampled_from(["canonical"] * 6 + ["value first", "key twice", "value twice", "long int"]))
    if shape == "value first":
        return _field(2, value) + _field(1, key)
    if shape == "key twice":  # the last key counts (a first key not wanted: see the test below)
        return _field(1, b"gen_ai.system") + _field(1, key) + _field(2, value)
    if shape == "value twice":
        return _field(1, key) + _field(2, b"\x18\x05") + _field(2, value)
    if shape == "long int":  # an int varint in more bytes than needed (protobuf reads it)
        return _field(1, key) + _field(2, b"\x18\x85\x80\x00")
    return _field(1, key) + (_field(2, value) if value else b"")


@settings(max_examples=400, deadline=None)
@given(st.lists(raw_key_values(), max_size=12))
def test_raw_attributes_read_as_protobuf_decodes_them(kvs: list[bytes]) -> None:
    assert otlp._wanted(kvs) == _reference(kvs)
    assert otlp._wanted(kvs) == _reference(kvs)  # again, from the learned keys and remembered values


def test_odd_encodings_are_decoded_by_protobuf() -> None:
    model = _field(1, b"gen_ai.request.model")
    cases = [
        _field(2, _field(1, b"gpt-4o")) + model,  # value first
        model + _field(2, b"\x18\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"),  # -1 as int64
        model + _field(2, b"\x18\x80\x00"),  # 0 in more bytes than needed
        model + _field(2, b"\x18\x80\x80\x00"),
        model + _field(2, b"\x18\xff\xff\x7f"),  # 2,097,151
        model + _field(2, b"\x18\x80\x80\x80\x01"),  # 2,097,152
        model + _field(2, b"\x18\x80"),  # a varint cut short
        model + _field(2, b"\x18\x80\x80"),
        model + _field(2, b"\x21" + struct.pack("<d", 2.5)),
        model + _field(2, b"\x10\x02"),  # any non-zero bool is true
        model + _field(2, b""),  # no value
        model + _field(2, _field(1, b"a" * 200)),  # a long string (two length bytes)
        model,
        b"",
    ]
    for raw in cases:
        try:
            expected = _reference([raw])
        except DecodeError:  # malformed: the body is refused
            with pytest.raises(BadRequestError):
                otlp._wanted([raw])
        else:
            assert otlp._wanted([raw]) == expected, raw


def test_a_malformed_wanted_attribute_refuses_the_body_an_unread_one_does_not() -> None:
    bad_text = _field(1, b"gen_ai.request.model") + _field(2, _field(1, b"\xff"))
    with pytest.raises(BadRequestError):
        otlp._wanted([bad_text])
    with pytest.raises(BadRequestError):
        otlp._wanted([_field(1, b"gen_ai.request.model") + b"\x12\x05\x0a"])  # truncated
    # an attribute the normalizer never reads is never decoded, so it cannot refuse the body
    assert otlp._wanted([_field(1, b"gen_ai.prompt") + _field(2, _field(1, b"\xff"))]) == {}


def test_learned_keys_forgotten_meanwhile_never_turn_a_wanted_key_into_an_unwanted_one() -> None:
    raw = _field(1, b"gen_ai.request.model") + _field(2, _field(1, b"gpt-4o"))
    prefix = raw[: raw[1] + 2]
    otlp._PREFIXES.pop(prefix)  # as if another thread were between forgetting and restoring the keys
    try:
        assert otlp._wanted([raw]) == {"gen_ai.request.model": "gpt-4o"}
        assert prefix not in otlp._PREFIXES
    finally:
        otlp._PREFIXES[prefix] = "gen_ai.request.model"


def test_a_key_written_twice_is_read_by_its_first_spelling_when_that_is_not_wanted() -> None:
    # No encoder writes a KeyValue's key twice; the fast reading skips one by its first key unread.
    raw = _field(1, b"server.address") + _field(1, b"gen_ai.request.model") + _field(2, _field(1, b"gpt-4o"))
    assert _reference([raw]) == {"gen_ai.request.model": "gpt-4o"}
    assert otlp._wanted([raw]) == {}


def _request() -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "svc"
    rs.resource.attributes.add(key="costspan.tenant.id").value.string_value = "acme"
    ss = rs.scope_spans.add()
    ss.scope.name = "scope"
    for i in range(3):
        span = ss.spans.add(name="chat", trace_id=bytes([i + 1]) * 16, span_id=bytes([i + 1]) * 8)
        span.parent_span_id = b"\x09" * 8 if i else b""
        span.start_time_unix_nano = 1_764_000_000_000_000_000
        span.end_time_unix_nano = 1_764_000_001_000_000_000 + i
        if i == 1:
            span.status.code = Status.STATUS_CODE_ERROR
        attributes: dict[str, Any] = {
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 100 + i,
            "gen_ai.usage.output_tokens": 20,
            "gen_ai.response.time_to_first_chunk": 0.5,
            "costspan.tokens.estimated": i == 2,
            "gen_ai.input.messages": "[...]",
        }
        for key, value in attributes.items():
            any_value = span.attributes.add(key=key).value
            if isinstance(value, bool):
                any_value.bool_value = value
            elif isinstance(value, int):
                any_value.int_value = value
            elif isinstance(value, float):
                any_value.double_value = value
            else:
                any_value.string_value = value
    return request


def test_protobuf_json_and_a_decoded_request_give_the_same_views() -> None:
    request = _request()
    from_protobuf = list(iter_span_views(decode_for_ingest(request.SerializeToString(), PROTOBUF)))
    data = json_format.MessageToDict(request)
    for span in data["resourceSpans"][0]["scopeSpans"][0]["spans"]:  # OTLP/JSON ids are hex, not base64
        for field in ("traceId", "spanId", "parentSpanId"):
            if field in span:
                span[field] = base64.b64decode(span[field]).hex()
    body = json.dumps(data).encode()
    assert list(iter_span_views(decode_for_ingest(body, JSON))) == from_protobuf
    assert list(iter_span_views(request)) == from_protobuf
    first = from_protobuf[0]
    assert isinstance(first, SpanView)
    assert first.attributes == {
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 100,
        "gen_ai.usage.output_tokens": 20,
        "gen_ai.response.time_to_first_chunk": 0.5,
        "costspan.tokens.estimated": False,
    }
    assert [v.status_error for v in from_protobuf if isinstance(v, SpanView)] == [False, True, False]
    assert first.resource == {"service.name": "svc", "costspan.tenant.id": "acme"}
    with pytest.raises(BadRequestError):
        decode_for_ingest(b"\xff\xff\xff\x0f garbage", PROTOBUF)
    with pytest.raises(BadRequestError):
        decode_for_ingest(b"{}", "text/plain")


_RARE_USAGE = {
    "gen_ai.usage.cache_write.input_tokens": st.integers(min_value=-3, max_value=400),
    "gen_ai.usage.cache_creation.input_tokens": st.integers(min_value=0, max_value=400),
    "gen_ai.usage.cache_creation_input_tokens": st.sampled_from(["", "7", 7.0, True]),
    "anthropic.usage.cache_creation.ephemeral_5m_input_tokens": st.integers(min_value=0, max_value=300),
    "anthropic.usage.cache_creation.ephemeral_1h_input_tokens": st.integers(min_value=0, max_value=300),
    "gen_ai.usage.reasoning.output_tokens": st.integers(min_value=-1, max_value=300),
}


@settings(max_examples=300, deadline=None)
@given(
    counts=st.fixed_dictionaries(
        {},
        optional={
            "gen_ai.usage.input_tokens": st.integers(min_value=0, max_value=5000),
            "gen_ai.usage.output_tokens": st.integers(min_value=0, max_value=500),
            "gen_ai.usage.cache_read.input_tokens": st.integers(min_value=0, max_value=900),
            "gen_ai.usage.cache_read_input_tokens": st.integers(min_value=0, max_value=900),
            "gen_ai.usage.prompt_tokens": st.sampled_from([7, "12", 3.0]),
            "llm.usage.total_tokens": st.integers(min_value=0, max_value=6000),
        },
    ),
    rare=st.fixed_dictionaries({}, optional=_RARE_USAGE),
    provider=st.sampled_from(["openai", "anthropic"]),
)
def test_the_rarer_usage_keys_read_as_written_out_in_full(
    counts: dict[str, Any], rare: dict[str, Any], provider: str
) -> None:
    attrs = {**counts, **rare}
    counts_, usage, reason = Normalizer(default_pricer()).tokens(attrs, provider)
    assert counts_ == _tokens_written_out(attrs, provider)
    assert (usage is None) == bool(reason)


def _tokens_written_out(attrs: dict[str, Any], provider: str) -> tuple[int, ...]:
    """The token reading with every spelling looked up, none skipped (the rule the fast reading must keep)."""

    def first(*keys: str) -> int | None:
        for key in keys:
            value = attrs.get(key)
            if value is None or (isinstance(value, str) and not value.strip()):
                continue  # absent, or an empty string: the next spelling
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str) and value.strip().isascii() and value.strip().lstrip("-").isdecimal():
                return int(value)
            return -1  # present and not a count (a bool, a fraction, "NaN"): refused downstream
        return None

    input_tokens = first("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.usage.prompt_tokens")
    output_tokens = first("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.usage.completion_tokens")
    total = first("llm.usage.total_tokens")
    if input_tokens is None and output_tokens is not None and total is not None:
        input_tokens = total - output_tokens
    if output_tokens is None and input_tokens is not None and total is not None:
        output_tokens = total - input_tokens
    cache_read = first("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens") or 0
    cache_write = first(
        "gen_ai.usage.cache_write.input_tokens",
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
    )
    write_1h = first("anthropic.usage.cache_creation.ephemeral_1h_input_tokens") or 0
    if cache_write is None:
        five_minutes = first("anthropic.usage.cache_creation.ephemeral_5m_input_tokens") or 0
        cache_write = five_minutes + write_1h
    input_tokens = input_tokens or 0
    if cache_read + cache_write > input_tokens and provider == "anthropic":
        input_tokens += cache_read + cache_write
    reasoning = first("gen_ai.usage.reasoning.output_tokens") or 0
    return (input_tokens, output_tokens or 0, cache_read, cache_write, write_1h, reasoning)
