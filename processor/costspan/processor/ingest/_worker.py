"""One OTLP body to one prepared batch: decompress, decode, normalize, price, encode, aggregate.

Runs inline in the receiver or, with ``ingest_workers > 0``, in a pool of worker processes so that
ingest uses more than one core (the store's writer stays single, in the server process). A worker
process builds its own normalizer over the default pricer once, in :func:`init_worker` — the one
piece of per-process state, as a process pool's initializer requires.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from costspan.processor.ingest._normalize import Normalizer
from costspan.processor.ingest._otlp import (
    BadRequestError,
    BodyTooLargeError,
    decode_for_ingest,
    decompress,
    iter_span_views,
)
from costspan.processor.store._batch import PreparedBatch, prepare
from costspan.processor.store._records import CallRecord

__all__ = ["BodyResult", "init_worker", "process_body", "process_in_worker"]

logger = logging.getLogger(__name__)


class BodyResult(NamedTuple):
    status: int  # 200, or 400 / 413 for a body refused as a whole
    message: str
    rejected: int  # spans refused individually (partial success)
    batch: PreparedBatch | None
    normalize_errors: int


def process_body(
    normalizer: Normalizer, body: bytes, content_type: str, encoding: str, limit: int, *, keep_records: bool = True
) -> BodyResult:
    """Never raises for bad input: a refused body is a 400/413 result with the reason."""
    try:
        raw = decompress(body, encoding, limit)
        request = decode_for_ingest(raw, content_type)
        records: list[CallRecord] = []
        rejected = 0
        errors = 0
        message = ""
        normalize = normalizer.normalize
        append = records.append
        for view in iter_span_views(request):
            if isinstance(view, str):
                rejected += 1
                message = view
                continue
            try:
                record = normalize(view)
            except Exception as exc:  # one bad span must not fail the batch
                rejected += 1
                errors += 1
                message = "span could not be normalized"
                logger.warning("normalizing a span failed: %s", type(exc).__name__)
                continue
            if record is not None:
                append(record)
    except BodyTooLargeError as exc:
        return BodyResult(413, str(exc), 0, None, 0)
    except BadRequestError as exc:
        return BodyResult(400, str(exc), 0, None, 0)
    return BodyResult(200, message, rejected, prepare(records, keep_records=keep_records), errors)


_worker_normalizer: Normalizer | None = None
#: The server's pricing generation (a shared ``multiprocessing.Value``) and the one this worker priced with.
_worker_generation: Any = None
_worker_seen = 0


def init_worker(default_tenant: str, generation: Any = None) -> None:
    """Process-pool initializer: build this worker's normalizer over the default pricer.

    ``generation``: a shared integer the server bumps when it reloads the catalog; the worker then
    reloads its own before pricing the next body."""
    global _worker_normalizer, _worker_generation  # noqa: PLW0603 - per-process state of a pool worker
    from costspan.pricing import default_pricer

    _worker_normalizer = Normalizer(default_pricer(), default_tenant=default_tenant)
    _worker_generation = generation


def _follow_reload() -> None:
    global _worker_seen  # noqa: PLW0603 - per-process state of a pool worker
    current = int(_worker_generation.value)
    if current != _worker_seen:
        from costspan.pricing import CatalogError, default_pricer

        _worker_seen = current
        try:
            default_pricer().reload()
        except CatalogError:  # the server refused the same file; keep pricing with the old catalog
            logger.warning("ingest worker: catalog not reloaded")


def process_in_worker(body: bytes, content_type: str, encoding: str, limit: int) -> BodyResult:
    if _worker_normalizer is None:
        raise RuntimeError("ingest worker was not initialized")
    if _worker_generation is not None:
        _follow_reload()
    return process_body(_worker_normalizer, body, content_type, encoding, limit, keep_records=False)
