"""A tenant's spend so far in a UTC month, for the volume tiers of its pricing terms.

The store's day rollups already hold every stored call's cost (repricing corrections included) by
tenant and UTC day, so the month to date is a sum of at most 31 of them — read under the store's lock,
kept per (tenant, month) until the next commit or correction changes the rollups. Only tenants whose
terms have volume tiers are ever asked about. A call is priced with the spend stored before it was
priced: calls priced together (one export, or exports in flight at once) share the same figure.
"""

from __future__ import annotations

import threading
import time
from calendar import monthrange
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final, Protocol

from costspan.processor.store._store import Store

__all__ = ["MonthSpend", "SnapshotSpend", "month_of"]

_ZERO: Final = Decimal(0)
_DAY: Final = 86400
_MAX_CACHED: Final = 10_000


class _Tiers(Protocol):
    def has_volume_tiers(self, tenant: str | None) -> bool: ...

    def volume_tiered_tenants(self) -> tuple[str, ...]: ...


def month_of(at: float) -> tuple[int, int]:
    """The UTC month ``at`` (Unix seconds) falls in: its first second and the first of the next month."""
    t = datetime.fromtimestamp(at, UTC)
    first = datetime(t.year, t.month, 1, tzinfo=UTC)
    return int(first.timestamp()), int(first.timestamp()) + monthrange(t.year, t.month)[1] * _DAY


class MonthSpend:
    """``spent(tenant, at)``: what ``tenant``'s stored calls that started in ``at``'s UTC month cost."""

    def __init__(self, store: Store, pricer: _Tiers) -> None:
        self._store = store
        self._pricer = pricer
        self._lock = threading.Lock()
        #: (tenant, month start) → (rollups version, spent)
        self._cache: dict[tuple[str, int], tuple[tuple[int, int], Decimal]] = {}
        self._snapshot: tuple[tuple[object, ...], dict[tuple[str, int], Decimal] | None] = ((), None)

    def tiered(self, tenant: str) -> bool:
        """Whether ``tenant``'s price depends on its month to date (its terms have volume tiers)."""
        return self._pricer.has_volume_tiers(tenant)

    def spent(self, tenant: str, at: float) -> Decimal:
        start, end = month_of(at)
        key = (tenant, start)
        store = self._store
        with store.lock:  # the version and the sum are read together: a commit changes both under it
            version = (store.rollups.records, store.counters.get("repriced_records", 0))
            with self._lock:
                cached = self._cache.get(key)
            if cached is not None and cached[0] == version:
                return cached[1]
            days = store.rollups.buckets["day"]
            total = _ZERO
            for day in range(start, end, _DAY):
                by_dims = days.get(day)
                if by_dims:
                    for dims, sums in by_dims.items():
                        if dims[0] == tenant:
                            total += sums.cost
        with self._lock:
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[key] = (version, total)
        return total

    def snapshot(self, now: float | None = None) -> dict[tuple[str, int], Decimal] | None:
        """Every tiered tenant's spend in this UTC month and the one before, for ingest workers (which
        price in other processes); None when no tenant has volume tiers. Recomputed only after the
        rollups changed."""
        tenants = self._pricer.volume_tiered_tenants()
        if not tenants:
            return None
        at = time.time() if now is None else now
        this_month = month_of(at)[0]
        months = (this_month, month_of(this_month - 1)[0])
        store = self._store
        key = (store.rollups.records, store.counters.get("repriced_records", 0), tenants, months)
        if self._snapshot[0] == key:
            return self._snapshot[1]
        out = {(t, m): self.spent(t, m) for t in tenants for m in months}
        self._snapshot = (key, out)
        return out


class SnapshotSpend:
    """A :class:`MonthSpend` snapshot, as an ingest worker sees it: a month it does not hold (a call
    older than last month) reads as no spend, so no volume tier."""

    def __init__(self, pricer: _Tiers, spend: dict[tuple[str, int], Decimal]) -> None:
        self._pricer = pricer
        self._spend = spend

    def tiered(self, tenant: str) -> bool:
        return self._pricer.has_volume_tiers(tenant)

    def spent(self, tenant: str, at: float) -> Decimal:
        return self._spend.get((tenant, month_of(at)[0]), _ZERO)
