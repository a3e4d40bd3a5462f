"""Reprice the past: recompute stored calls' cost from their usage with the current catalog.

:func:`reprice` reads the ledger twice within the window (first the corrections already made, so
each call is compared with its current cost; then the calls), prices each call's stored usage at its
start time, and hands every call whose cost changed to ``apply`` as a
:class:`~costspan.processor.store._corrections.Correction` (the store appends it beside the original
and every total follows). Idempotent: a call already at the catalog's price is left alone, so a
second run with the same catalog changes nothing. A call the catalog cannot price keeps its cost.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, TextIO

from costspan.pricing import Pricer, Usage
from costspan.processor.ingest._volume import month_of
from costspan.processor.store._corrections import Correction, is_correction, latest_corrections
from costspan.processor.store._ledger import Ledger, LedgerLine
from costspan.processor.store._records import CallRecord, record_from_json

__all__ = ["Progress", "RepriceResult", "Window", "parse_time", "reprice"]

_ZERO: Final = Decimal(0)
#: Corrections handed to ``apply`` at a time.
_BATCH: Final = 2000
_RELATIVE = re.compile(r"^(\d+)([dhm])$")


def parse_time(text: str, *, now: float | None = None) -> float:
    """Unix seconds of ``text``: an ISO date (``2026-11-01``, UTC midnight), an ISO date-time (UTC
    unless it names its offset) or a duration back from now (``7d``, ``12h``, ``30m``). ValueError."""
    value = text.strip()
    relative = _RELATIVE.match(value)
    if relative:
        unit = {"d": "days", "h": "hours", "m": "minutes"}[relative.group(2)]
        base = datetime.fromtimestamp(time.time() if now is None else now, UTC)
        return (base - timedelta(**{unit: int(relative.group(1))})).timestamp()
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a date (2026-11-01), a date-time or a duration (7d, 12h)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@dataclass(frozen=True, slots=True)
class Window:
    """Which calls to reprice: started in ``[since, until)`` (Unix seconds), of ``tenant`` if given."""

    since: float
    until: float
    tenant: str | None = None

    def __post_init__(self) -> None:
        if self.until <= self.since:
            raise ValueError("--until must be after --since")

    def holds(self, line: LedgerLine) -> bool:
        return int(self.since * 1e9) <= line.start_ns < int(self.until * 1e9)


@dataclass(slots=True)
class RepriceResult:
    """What a run found (and, unless ``dry_run``, changed)."""

    catalog_version: str
    dry_run: bool
    calls: int = 0  # calls in the window
    changed: int = 0  # calls whose cost changed
    newly_priced: int = 0  # of those, calls that were unpriced
    unpriced: int = 0  # calls the catalog cannot price (kept as they are)
    old_total: Decimal = _ZERO  # the changed calls' cost before
    new_total: Decimal = _ZERO  # and after
    by_tenant: dict[str, list[Decimal]] = field(default_factory=dict)  # tenant -> [old, new]

    def to_json(self) -> dict[str, Any]:
        return {
            "catalog_version": self.catalog_version,
            "dry_run": self.dry_run,
            "calls": self.calls,
            "changed": self.changed,
            "newly_priced": self.newly_priced,
            "unpriced": self.unpriced,
            "old_total": format(self.old_total, "f"),
            "new_total": format(self.new_total, "f"),
            "by_tenant": {t: {"old": format(o, "f"), "new": format(n, "f")} for t, (o, n) in self.by_tenant.items()},
        }


class Progress:
    """A plain-text progress bar on ``stream`` (redrawn at most 10 times a second), only on a TTY."""

    def __init__(self, stream: TextIO, total: int, *, width: int = 30) -> None:
        self.stream = stream
        self.total = total
        self.width = width
        self.shown = stream.isatty() and total > 0
        self._last = 0.0

    def update(self, done: int, changed: int, *, force: bool = False) -> None:
        if not self.shown:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        filled = self.width * done // self.total
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(
            f"\rrepricing [{bar}] {100 * done // self.total:3d}% {done}/{self.total} calls, {changed} changed"
        )
        self.stream.flush()

    def finish(self, done: int, changed: int) -> None:
        if self.shown:
            self.update(done, changed, force=True)
            self.stream.write("\n")
            self.stream.flush()


def _repriced(record: CallRecord, pricer: Pricer, month_to_date: Decimal | None = None) -> CallRecord | None:
    """``record`` priced anew from its usage at its start time (and its tenant's spend before it in its
    month, for volume tiers); None when the catalog cannot price it."""
    t = record.tokens
    try:
        usage = Usage.of_tokens(t.input, t.output, t.cache_read, t.cache_write, t.cache_write_1h, t.reasoning)
        breakdown = pricer.price_call(
            record.model,
            usage,
            provider=record.provider,
            at=record.start_ns / 1e9,
            tenant=record.tenant or None,
            month_to_date_usd=month_to_date,
        )
    except Exception:  # invalid stored usage, or a pricing failure: keep the call as it is
        return None
    if breakdown.total is None:
        return None
    return record._replace(
        cost_status="estimated" if record.tokens_estimated else "priced",
        unpriced_reason="",
        cost_total=breakdown.total,
        cost_input=breakdown.input,
        cost_output=breakdown.output,
        cost_cache_read=breakdown.cache_read,
        cost_cache_write=breakdown.cache_write,
        cost_other=breakdown.other,
        pricing_version=breakdown.catalog_version,
    )


def _lines(ledger: Ledger, window: Window) -> Iterator[LedgerLine]:
    """The window's lines; with a tenant, only lines that hold its JSON string (checked after parsing)."""
    needle = json.dumps(window.tenant, ensure_ascii=False).encode() if window.tenant else b""
    for line in ledger.read():
        if window.holds(line) and needle in line.payload:
            yield line


def reprice(
    ledger_dir: Path,
    pricer: Pricer,
    window: Window,
    apply: Callable[[list[Correction]], object] | None,
    *,
    progress: TextIO | None = None,
) -> RepriceResult:
    """Reprice the calls of ``window`` with ``pricer``; ``apply`` stores each batch of corrections
    (None: a dry run, nothing is written). ``progress``: where the progress bar goes (if a TTY)."""
    ledger = Ledger(ledger_dir, fsync="never")
    result = RepriceResult(pricer.catalog_version, dry_run=apply is None)
    total = 0
    corrections: dict[str, CallRecord] = {}
    # Volume tiers: a call is priced with its tenant's spend before it (in ledger order, as it was
    # stored) in its UTC month, so the calls of the window's first month before the window are read too.
    tiers = any(o.volume_tiers for o in pricer.tenant_overrides.values())
    read = Window(month_of(window.since)[0], window.until, window.tenant) if tiers else window
    month_spend: dict[tuple[str, int], Decimal] = {}
    if ledger_dir.exists():  # first pass: the corrections made before (each call's current cost), and a count

        def counted() -> Iterator[LedgerLine]:
            nonlocal total
            for line in _lines(ledger, read):
                if is_correction(line.payload):
                    yield line
                elif window.holds(line):
                    total += 1

        corrections = latest_corrections(counted())
    bar = Progress(progress, total) if progress is not None else None
    done_keys: set[str] = set()  # a call stored twice (a torn commit's leftover) is repriced once
    pending: list[Correction] = []
    ran_at = time.time()
    for line in _lines(ledger, read) if ledger_dir.exists() else iter(()):
        if is_correction(line.payload) or line.key in done_keys:
            continue
        try:
            stored = record_from_json(line.payload)
        except (ValueError, KeyError, TypeError):
            continue
        if window.tenant is not None and stored.tenant != window.tenant:
            continue
        done_keys.add(line.key)
        current = corrections.get(line.key, stored)
        month = (current.tenant, month_of(current.start_ns / 1e9)[0])
        if not window.holds(line):  # before the window, in its first month: only its spend counts
            month_spend[month] = month_spend.get(month, _ZERO) + (current.cost_total or _ZERO)
            continue
        result.calls += 1
        spent = month_spend.get(month, _ZERO) if tiers and pricer.has_volume_tiers(current.tenant) else None
        new = _repriced(current, pricer, spent)
        if tiers:
            cost = current.cost_total if new is None else new.cost_total
            month_spend[month] = month_spend.get(month, _ZERO) + (cost or _ZERO)
        if new is None:
            result.unpriced += 1 if current.cost_total is None else 0
        elif new.cost_total != current.cost_total:
            result.changed += 1
            old_cost = current.cost_total or _ZERO
            new_cost = new.cost_total or _ZERO
            result.newly_priced += 1 if current.cost_total is None else 0
            result.old_total += old_cost
            result.new_total += new_cost
            totals = result.by_tenant.setdefault(current.tenant, [_ZERO, _ZERO])
            totals[0] += old_cost
            totals[1] += new_cost
            if apply is not None:
                pending.append(Correction(current, new, ran_at))
                if len(pending) >= _BATCH:
                    apply(pending)
                    pending = []
        if bar is not None:
            bar.update(result.calls, result.changed)
    if apply is not None and pending:
        apply(pending)
    if bar is not None:
        bar.finish(result.calls, result.changed)
    return result
