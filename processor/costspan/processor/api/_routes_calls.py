"""``POST /api/usage/calls`` (log a call without OpenTelemetry) and ``GET /api/usage/export``."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Protocol

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from costspan.pricing import Usage
from costspan.processor.api._auth import read_scope, require_ingest
from costspan.processor.api._binding import named_tenant, write_tenant
from costspan.processor.api._common import Window, pricer_of
from costspan.processor.api._index import DAY_S
from costspan.processor.api._keys import Principal
from costspan.processor.api._schemas import Identifier, Name, TenantId, TokenCount
from costspan.processor.store._batch import prepare
from costspan.processor.store._compact import EXPORT_COLUMNS, export_row, parquet_path
from costspan.processor.store._corrections import MARKER, is_correction, latest_corrections
from costspan.processor.store._history import History, export_text
from costspan.processor.store._ledger import Ledger, Position
from costspan.processor.store._records import API_SOURCE, CallRecord, TokenCounts, outcome_of, record_from_json
from costspan.processor.store._store import QueueFullError, Store
from costspan.processor.store._validate import EARLIEST_START_NS, FUTURE_SLACK_S, MAX_ID_LENGTH, MAX_LATENCY_S

__all__ = ["EXPORT_COLUMNS", "CallIn", "router", "store_call"]

router = APIRouter(tags=["calls"])


#: The Phase 17 seed's ``LLMCall`` names this body also takes (see ``POST /api/llm-calls``).
LLM_CALL_NAMES: Final = {
    "tokens_prompt": "prompt_tokens",
    "tokens_completion": "completion_tokens",
    "workspace_id": "tenant_id",
    "execution_id": "workflow_id",
}


class CallIn(BaseModel):
    """One LLM call, as a service that cannot emit OpenTelemetry reports it.

    Also takes the Phase 17 seed's names (``tokens_prompt``, ``tokens_completion``, ``workspace_id``,
    ``execution_id``, ``tokens_total``); one field named both ways must agree.
    """

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _seed_names(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not (LLM_CALL_NAMES.keys() | {"tokens_total"}) & data.keys():
            return data
        data = dict(data)
        for seed, ours in LLM_CALL_NAMES.items():
            if seed in data:
                value = data.pop(seed)
                if ours in data and data[ours] != value:
                    raise ValueError(f"{seed} and {ours} disagree: send one of them")
                data[ours] = value
        if "tokens_total" in data:
            total = data.pop("tokens_total")
            prompt, completion = data.get("prompt_tokens"), data.get("completion_tokens")
            if not (type(prompt) is type(completion) is type(total) is int and total == prompt + completion):
                raise ValueError("tokens_total must equal the prompt and completion tokens' sum")
        return data

    provider: Name
    model: Name
    endpoint: str = Field("", max_length=500, description="e.g. /v1/chat/completions (not stored)")
    prompt_tokens: TokenCount
    completion_tokens: TokenCount
    cached_tokens: TokenCount = Field(0, description="of prompt_tokens, read from cache")
    latency_ms: float = Field(0.0, ge=0, le=MAX_LATENCY_S * 1000, allow_inf_nan=False)
    operation_type: Name = "chat"
    cache_hit: bool = Field(
        False, description="prompt served from the provider's cache: without cached_tokens, all of it"
    )
    user_id: Identifier = ""
    session_id: Identifier = ""
    workflow_id: Identifier = ""
    project_id: Identifier = ""
    tenant_id: TenantId = Field("", description="required for admin keys; tenant-bound keys imply it")
    service: Identifier = "api"
    success: bool = True
    error_message: str = Field("", max_length=1000, description="stored as the error type's first 100 characters")
    timestamp: datetime | None = Field(
        None, description="when the call started (default: now): from 2000-01-01 to a day after the server's clock"
    )
    call_id: str = Field("", max_length=200, description="idempotency key: the same call_id is stored once")
    reservation_id: str = Field(
        "",
        max_length=MAX_ID_LENGTH,
        description="the reservation POST /v1/budgets/check answered for this call: the call settles exactly it",
    )


class _Reservations(Protocol):
    """What this route asks the server's budget book (``app.state.budget_book``, when it has one)."""

    def foreign(self, reservation_id: str, tenant: str | None) -> bool: ...


def _refuse_foreign_reservation(request: Request, reservation_id: str, tenant: str) -> None:
    """404 (the answer an unknown id would get from the settle route) when the call names a
    reservation made for another tenant: the call would settle it. Nothing is stored then."""
    book: _Reservations | None = getattr(request.app.state, "budget_book", None)
    if reservation_id and book is not None and book.foreign(reservation_id, tenant or None):
        raise HTTPException(404, "no open reservation with this id for this call's tenant")


def _ids(tenant: str, call_id: str) -> tuple[str, str]:
    if call_id:
        digest = hashlib.sha256(f"{tenant}\x00{call_id}".encode()).hexdigest()
        return digest[:32], digest[32:48]
    return secrets.token_hex(16), secrets.token_hex(8)


def build_record(call: CallIn, tenant: str, request: Request) -> CallRecord:
    start_s = call.timestamp.timestamp() if call.timestamp is not None else time.time()
    if not EARLIEST_START_NS <= start_s * 1e9 <= (time.time() + FUTURE_SLACK_S) * 1e9:
        raise HTTPException(422, "timestamp must be from 2000-01-01 to a day after the server's clock")
    if call.cached_tokens > call.prompt_tokens:
        raise HTTPException(422, "cached_tokens cannot exceed prompt_tokens")
    cached = call.cached_tokens or (call.prompt_tokens if call.cache_hit else 0)
    tokens = TokenCounts(call.prompt_tokens, call.completion_tokens, cached)
    try:
        usage = Usage(input_tokens=tokens.input, output_tokens=tokens.output, cache_read_tokens=tokens.cache_read)
    except ValueError as exc:  # beyond what pricing takes for one call
        raise HTTPException(422, str(exc)) from None
    # a tenant with volume tiers: priced with its month to date, as a span would be (ingest/_volume.py)
    normalizer = getattr(request.app.state, "normalizer", None)
    volume = normalizer.volume if normalizer is not None else None
    month_to_date = volume.spent(tenant, start_s) if volume is not None and tenant and volume.tiered(tenant) else None
    breakdown = pricer_of(request).price_call(
        call.model, usage, provider=call.provider, at=start_s, tenant=tenant or None, month_to_date_usd=month_to_date
    )
    priced = breakdown.status == "priced" and breakdown.total is not None
    trace_id, span_id = _ids(tenant, call.call_id)
    start_ns = int(start_s * 1e9)
    error = "" if call.success else (call.error_message[:100] or "error")
    record = CallRecord(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id="",
        start_ns=start_ns,
        end_ns=start_ns + int(call.latency_ms * 1e6),
        service=call.service,
        tenant=tenant,
        workflow=call.workflow_id,
        user=call.user_id,
        session=call.session_id,
        provider=call.provider.lower(),
        model=call.model,
        operation=call.operation_type,
        source=API_SOURCE,
        tokens=tokens,
        tokens_estimated=False,
        cost_status="priced" if priced else "unpriced",
        unpriced_reason="" if priced else (breakdown.reason or "unpriced"),
        cost_total=None,
        cost_input=None,
        cost_output=None,
        cost_cache_read=None,
        cost_cache_write=None,
        cost_other=None,
        pricing_version=breakdown.catalog_version,
        error_type=error,
        project=call.project_id,
        reservation_id=call.reservation_id,
    )
    record = record._replace(outcome=outcome_of(record))  # error, or degraded when unpriced, else ok
    if not priced:
        return record
    return record._replace(
        cost_total=breakdown.total,
        cost_input=breakdown.input,
        cost_output=breakdown.output,
        cost_cache_read=breakdown.cache_read,
        cost_cache_write=breakdown.cache_write,
        cost_other=breakdown.other,
    )


@router.post(
    "/api/usage/calls",
    status_code=201,
    responses={404: {"description": "reservation_id names an open reservation of another tenant"}},
)
async def log_call(
    request: Request, call: CallIn, principal: Annotated[Principal, Depends(require_ingest)]
) -> dict[str, Any]:
    """Price and store one call (deduplicated by ``call_id``); answered once it is in the ledger."""
    done = await store_call(request, call, principal)
    if isinstance(done, str):  # cost tracking is off
        return {"id": "", "stored": False, "duplicate": False, "tenant_id": done, "cost_status": "untracked"}
    record, stored = done
    return {
        "id": record.trace_id + record.span_id,
        "stored": stored,
        "duplicate": not stored,
        "tenant_id": record.tenant,
        "cost_status": record.cost_status,
        "outcome": record.outcome,
        "cost_usd": None if record.cost_total is None else format(record.cost_total, "f"),
    }


async def store_call(request: Request, call: CallIn, principal: Principal) -> tuple[CallRecord, bool] | str:
    """Check the key's tenant, price ``call`` and store it; (the record, False when it was a duplicate),
    or, when cost tracking is off, the call's tenant alone (neither priced nor stored).

    Every route that records calls goes through here: one binding check, one pricing path, one store.
    """
    named = named_tenant(request, call.tenant_id)
    tenant = write_tenant(principal, named, refusal="this key may only log calls for its own tenant")
    tenant = tenant or request.app.state.settings.default_tenant
    _refuse_foreign_reservation(request, call.reservation_id, tenant)
    if not getattr(request.app.state, "cost_tracking", True):  # off: answered, neither priced nor stored
        request.app.state.store.count("untracked_calls")
        return tenant
    record = build_record(call, tenant, request)
    store: Store = request.app.state.store
    try:
        future = store.submit(prepare([record]))
    except QueueFullError as exc:
        raise HTTPException(503, str(exc), {"Retry-After": "1"}) from None
    result = await asyncio.wrap_future(future)
    return record, bool(result.stored)


def _records(
    ledger_dir: Any,
    first_ns: int,
    end_ns: int,
    tenant: str | None,
    user: str | None,
    project: str | None = None,
    segments: tuple[int, int] | None = None,
) -> Iterator[CallRecord]:
    """The records in the window and scope, from the JSON lines (of ``segments``, first and last, only)."""
    # a record naming the tenant (or user, or project) holds its JSON string: skip the others unparsed
    named = tenant if tenant is not None else user if user is not None else project
    needle = json.dumps(named, ensure_ascii=False).encode() if named else b""
    ledger = Ledger(ledger_dir, fsync="never")
    corrected: dict[str, CallRecord] = {}
    if (ledger.directory / MARKER).exists():  # repriced calls show their current cost and pricing version
        corrected = latest_corrections(
            line for line in ledger.read() if first_ns <= line.start_ns < end_ns and needle in line.payload
        )
    start = Position(segments[0], 0) if segments is not None else None
    for line in ledger.read(start):
        if segments is not None and line.end.segment > segments[1]:
            break
        if not first_ns <= line.start_ns < end_ns or needle not in line.payload or is_correction(line.payload):
            continue
        try:
            r = corrected.get(line.key) or record_from_json(line.payload)
        except (ValueError, TypeError):  # unreadable, or out of range (written by an older version): skipped
            continue
        if (
            (tenant is None or r.tenant == tenant)
            and (user is None or r.user == user)
            and (project is None or r.project == project)
        ):
            yield r


def _csv_rows(records: Iterator[CallRecord]) -> Iterator[str]:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for n, r in enumerate(records, 1):
        writer.writerow(export_row(r))
        if n % 1000 == 0:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


def _json_rows(records: Iterator[CallRecord]) -> Iterator[str]:
    """JSON objects joined by commas, in chunks (no brackets, no comma around a chunk)."""
    chunk: list[str] = []
    for r in records:
        chunk.append(json.dumps(dict(zip(EXPORT_COLUMNS, export_row(r), strict=True)), separators=(",", ":")))
        if len(chunk) >= 1000:
            yield ",".join(chunk)
            chunk = []
    yield ",".join(chunk)


def _runs(ledger_dir: Path, history: History) -> list[tuple[bool, tuple[int, int]]]:
    """The ledger's segments as runs of (read from Parquet?, (first, last segment)), in ledger order.
    Once any call was repriced every segment is read from its JSON lines (they hold the corrections)."""
    segments = Ledger(ledger_dir, fsync="never").segments()
    compacted = set() if (ledger_dir / MARKER).exists() else history.compacted()
    runs: list[tuple[bool, tuple[int, int]]] = []
    for segment in segments:
        parquet = segment in compacted
        if runs and runs[-1][0] == parquet and runs[-1][1][1] == segment - 1:
            runs[-1] = (parquet, (runs[-1][1][0], segment))
        else:
            runs.append((parquet, (segment, segment)))
    return runs


def _export_body(
    fmt: Literal["csv", "json"],
    ledger_dir: Path,
    history: History,
    first_ns: int,
    end_ns: int,
    scope: tuple[str | None, str | None, str | None],
) -> Iterator[str]:
    """The whole export: closed segments compacted to Parquet through DuckDB, the others (the open
    one, those not compacted yet) from their JSON lines, in ledger order."""
    yield ",".join(EXPORT_COLUMNS) + "\n" if fmt == "csv" else "["
    wrote = False
    for parquet, (first, last) in _runs(ledger_dir, history):
        if parquet:
            files = [parquet_path(history.directory, s) for s in range(first, last + 1)]
            chunks = export_text(files, fmt, first_ns, end_ns, *scope)
        else:
            records = _records(ledger_dir, first_ns, end_ns, *scope, segments=(first, last))
            chunks = _csv_rows(records) if fmt == "csv" else _json_rows(records)
        for chunk in chunks:
            if not chunk:
                continue
            if fmt == "json":
                yield "," + chunk if wrote else chunk
                wrote = True
            else:
                yield chunk
    if fmt == "json":
        yield "]"


@router.get(
    "/api/usage/export",
    responses={
        200: {
            "description": "`format=csv`: CSV with a header row; `format=json`: a JSON array of calls",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    },
)
def export(
    request: Request,
    format: Literal["csv", "json"] = "csv",
    from_: Annotated[date | None, Query(alias="from", description="first UTC day (default: 30 days ago)")] = None,
    to: Annotated[date | None, Query(description="last UTC day, inclusive (default: today)")] = None,
    tenant: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    user: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    project: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
) -> StreamingResponse:
    """Stream ledger records (CSV or a JSON array) read from disk as they are sent, never buffered whole."""
    scope = read_scope(request, tenant)
    default = Window.last_days(30)
    first = from_ or datetime.fromtimestamp(default.first, UTC).date()
    last = to or datetime.fromtimestamp(default.last, UTC).date()
    window = Window.between(first, last)
    store: Store = request.app.state.store
    body = _export_body(
        format,
        store.ledger.directory,
        store.history,
        window.first * 10**9,
        (window.last + DAY_S) * 10**9,
        (scope, user, project),
    )
    name = f"costspan-usage-{first}-{last}.{format}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    media = "text/csv; charset=utf-8" if format == "csv" else "application/json"
    return StreamingResponse(body, media_type=media, headers=headers)
