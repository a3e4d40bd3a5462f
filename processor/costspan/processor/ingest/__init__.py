"""Ingest: an OTLP body (or an SDK span) to priced call records ready for the store.

``_otlp`` decodes and decompresses OTLP/HTTP bodies, ``_normalize`` turns one GenAI span (whatever
instrumentation emitted it) into one priced :class:`~costspan.processor.store.CallRecord`,
``_worker`` runs both for a whole body (in the server or in a worker process), ``_forward`` sends the
enriched spans onward.
"""

from costspan.processor.ingest._forward import Forwarder, enrich
from costspan.processor.ingest._normalize import WANTED_KEYS, AttrValue, Normalizer, SpanView
from costspan.processor.ingest._otlp import (
    JSON,
    PROTOBUF,
    BadRequestError,
    BodyTooLargeError,
    decode_for_ingest,
    decode_request,
    decompress,
    encode_error,
    encode_response,
    iter_span_views,
)
from costspan.processor.ingest._worker import BodyResult, init_worker, process_body, process_in_worker

__all__ = [
    "JSON",
    "PROTOBUF",
    "WANTED_KEYS",
    "AttrValue",
    "BadRequestError",
    "BodyResult",
    "BodyTooLargeError",
    "Forwarder",
    "Normalizer",
    "SpanView",
    "decode_for_ingest",
    "decode_request",
    "decompress",
    "encode_error",
    "encode_response",
    "enrich",
    "init_worker",
    "iter_span_views",
    "process_body",
    "process_in_worker",
]
