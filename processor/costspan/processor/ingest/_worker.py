"""One OTLP body to one prepared batch: decompress, decode, normalize, price, encode, aggregate.

Runs inline in the receiver or, with ``ingest_workers > 0``, in a pool of worker processes so that
ingest uses more than one core (the store's writer stays single, in the server process). A worker
process builds its own normalizer over the default pricer once, in :func:`init_worker` — the one
piece of per-process state, as a process pool's initializer requires.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from decimal import Decimal
from typing import Any, NamedTuple

from costspan.processor.ingest._normalize import Normalizer
from costspan.processor.ingest._otlp import (
    BadRequestError,
    BodyTooLargeError,
    decode_for_ingest,
    decompress,
    iter_span_views,
)
from costspan.processor.ingest._volume import SnapshotSpend
from costspan.processor.store._batch import PreparedBatch, prepare
from costspan.processor.store._records import CallRecord
from costspan.processor.store._validate import MAX_ID_LENGTH, screen

__all__ = ["BodyResult", "foreign_tenant_message", "init_worker", "process_body", "process_in_worker"]

logger = logging.getLogger(__name__)


class BodyResult(NamedTuple):
    status: int  # 200, or 400 / 413 for a body refused as a whole
    message: str
    rejected: int  # spans refused individually (partial success)
    batch: PreparedBatch | None
    normalize_errors: int
    rejected_tenant: int = 0  # of ``rejected``: spans naming a tenant the sending key may not write
    #: ``(reason, count)`` of the spans refused or changed by the edge's rules (store/_validate.py)
    screened: tuple[tuple[str, int], ...] = ()


def foreign_tenant_message(tenant: str, count: int) -> str:
    """The partial-success message for ``count`` spans refused because they name another tenant."""
    return f"{count} span(s) name a tenant other than {tenant!r}, the only tenant this key may send"


def process_body(
    normalizer: Normalizer,
    body: bytes,
    content_type: str,
    encoding: str,
    limit: int,
    *,
    keep_records: bool = True,
    tenant: str = "",
) -> BodyResult:
    """Never raises for bad input: a refused body is a 400/413 result with the reason.

    ``tenant``: the tenant the sending key is bound to (``""``: any tenant, the normalizer's default
    for spans that name none).
    """
    foreign = 0
    try:
        raw = decompress(body, encoding, limit)
        request = decode_for_ingest(raw, content_type)
        records: list[CallRecord] = []
        rejected = 0
        errors = 0
        message = ""
        if tenant:
            normalizer = normalizer.with_default_tenant(tenant)
        normalize = normalizer.normalize
        append = records.append
        limit_length = normalizer.max_value_length
        screened: Counter[str] = Counter()
        now_ns = time.time_ns()
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
            if record is None:
                continue
            record, reason, refusal = screen(record, now_ns, limit_length)
            if reason:
                screened[reason] += 1
            if record is None:
                rejected += 1
                message = refusal
                continue
            if tenant and record.tenant != tenant:  # one compare, and only for a bound key
                foreign += 1
                continue
            append(record)
    except BodyTooLargeError as exc:
        return BodyResult(413, str(exc), 0, None, 0)
    except BadRequestError as exc:
        return BodyResult(400, str(exc), 0, None, 0)
    if foreign:
        rejected += foreign
        refused = foreign_tenant_message(tenant, foreign)
        message = f"{message}; {refused}" if message else refused
    batch = prepare(records, keep_records=keep_records)
    return BodyResult(200, message, rejected, batch, errors, foreign, tuple(screened.items()))


_worker_normalizer: Normalizer | None = None
#: The server's pricing generation (a shared ``multiprocessing.Value``) and the one this worker priced with.
_worker_generation: Any = None
_worker_seen = 0


def init_worker(default_tenant: str, max_value_length: int = MAX_ID_LENGTH, generation: Any = None) -> None:
    """Process-pool initializer: build this worker's normalizer over the default pricer.

    ``generation``: a shared integer the server bumps when it reloads the catalog; the worker then
    reloads its own before pricing the next body."""
    global _worker_normalizer, _worker_generation  # noqa: PLW0603 - per-process state of a pool worker
    from costspan.pricing import default_pricer

    _worker_normalizer = Normalizer(default_pricer(), default_tenant=default_tenant, max_value_length=max_value_length)
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


def process_in_worker(
    body: bytes,
    content_type: str,
    encoding: str,
    limit: int,
    tenant: str = "",
    month_spend: dict[tuple[str, int], Decimal] | None = None,
) -> BodyResult:
    """``month_spend``: the server's :meth:`MonthSpend.snapshot` (tiered tenants' month to date)."""
    if _worker_normalizer is None:
        raise RuntimeError("ingest worker was not initialized")
    if _worker_generation is not None:
        _follow_reload()
    normalizer = _worker_normalizer
    if month_spend is not None:
        from costspan.pricing import default_pricer

        normalizer = normalizer.with_volume(SnapshotSpend(default_pricer(), month_spend))
    return process_body(normalizer, body, content_type, encoding, limit, keep_records=False, tenant=tenant)
