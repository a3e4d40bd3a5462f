"""The owner's side of spend leases: how much of a budget's period each instance may spend.

With peers, every enforcing budget (hard or adaptive, with a period; global, ``tenant: "*"`` or one
tenant's) may be spent on every instance of a deployment. One instance owns it (docs/scale-out.md)
and keeps, for each counter and period, a *pool*: per instance, the spend it last reported
(cumulative for the period, so a repeated or late report is harmless) and the *allowance* of its
lease (the most it may spend in the period) with the lease's expiry. An instance asks for a lease;
the owner answers with a new allowance:

    committed = sum over the other instances of (allowance if its lease is live else reported)
    remaining = limit - committed - reported(asker)
    slice     = min(want, clamp(lease_fraction * remaining, lease_min_share * limit,
                    lease_max_share * limit), remaining)            (0 when remaining <= 0)
    allowance = reported(asker) + slice

So at every grant ``sum of live allowances + reported spend of the rest <= limit``. An expired lease
returns its unspent part to the pool; what its instance spent after its last report (at most its
allowance minus that report) is the only spend the owner cannot see: that is the overspend bound.

Pure logic (an injected monotonic clock, no I/O); thread-safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

__all__ = ["Grant", "LeaseBook", "LeaseTerms"]

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class LeaseTerms:
    """How big a lease is and how long it lives (settings ``lease_*``)."""

    fraction: Decimal = Decimal("0.1")
    min_share: Decimal = Decimal("0.01")
    max_share: Decimal = Decimal("0.25")
    ttl_seconds: float = 30.0

    def __post_init__(self) -> None:
        if not (0 < self.fraction <= 1 and 0 <= self.min_share <= self.max_share <= 1 and self.ttl_seconds > 0):
            raise ValueError(
                "lease terms need 0 < lease_fraction <= 1, 0 <= lease_min_share <= lease_max_share <= 1"
                " and lease_ttl_seconds > 0"
            )


@dataclass(frozen=True, slots=True)
class Grant:
    """The owner's answer: the asker may spend up to ``allowance`` in the period, for ``ttl`` seconds."""

    allowance: Decimal
    granted: Decimal  # the slice this answer added beyond the asker's reported spend
    remaining: Decimal  # what the pool holds after this grant (may be negative: spend beyond the limit)
    ttl: float


@dataclass(slots=True)
class _Held:
    reported: Decimal
    allowance: Decimal
    expires: float


@dataclass(slots=True)
class _Pool:
    limit: Decimal
    shards: dict[str, _Held]
    touched: float


class LeaseBook:
    """Pools of every leased counter and period this instance owns."""

    def __init__(self, terms: LeaseTerms | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.terms = terms or LeaseTerms()
        self._clock = clock
        self._lock = threading.Lock()
        self._pools: dict[tuple[str, float], _Pool] = {}
        self._next_prune = 0.0
        self.granted_total = 0  # grants with a slice > 0
        self.refused_total = 0  # asks answered with nothing left

    def grant(
        self,
        key: str,
        start: float,
        limit: Decimal,
        shard: str,
        spent: Decimal,
        *,
        whole: bool = False,
        want: Decimal | None = None,
        holding: Decimal | None = None,
        holding_ttl: float = 0.0,
    ) -> Grant:
        """Renew ``shard``'s lease on counter ``key`` for the period starting at ``start``.

        ``spent``: what the shard has spent in the period (cumulative). ``want``: the most it asks for
        beyond that (None: the owner's share). ``whole``: the budget counts tokens or requests, so a
        slice is a whole number (rounded up to at least one, never beyond the remaining).
        ``holding``/``holding_ttl``: the allowance and remaining
        life of the lease the shard holds, adopted when the owner has no record of it (the owner
        restarted or just became the owner) so that it is not granted twice.
        """
        if spent < 0 or (want is not None and want < 0):
            raise ValueError("spent and want must not be negative")
        now = self._clock()
        terms = self.terms
        with self._lock:
            self._prune(now)
            pool = self._pools.get((key, start))
            if pool is None:
                pool = self._pools[(key, start)] = _Pool(limit, {}, now)
            pool.limit, pool.touched = limit, now
            held = pool.shards.get(shard)
            if held is None:
                held = pool.shards[shard] = _Held(spent, spent, -1.0)
                if holding is not None and holding_ttl > 0:  # a lease this owner does not know of
                    held.allowance, held.expires = holding, now + min(holding_ttl, terms.ttl_seconds)
            held.reported = max(held.reported, spent)
            committed = sum(
                (max(h.allowance, h.reported) if h.expires > now else h.reported)
                for name, h in pool.shards.items()
                if name != shard
            )
            remaining = limit - committed - held.reported
            if remaining <= 0:
                size = ZERO
            else:
                size = min(max(terms.fraction * remaining, terms.min_share * limit), terms.max_share * limit)
                size = min(size, remaining) if want is None else min(size, remaining, want)
                if whole:
                    size = min(size.to_integral_value(ROUND_CEILING), remaining.to_integral_value(ROUND_FLOOR))
            held.allowance, held.expires = held.reported + size, now + terms.ttl_seconds
            if size > 0:
                self.granted_total += 1
            else:
                self.refused_total += 1
            return Grant(held.allowance, size, remaining - size, terms.ttl_seconds)

    def give_back(self, key: str, start: float, shard: str, spent: Decimal) -> None:
        """The shard stops (or no longer needs its lease): its unspent part returns to the pool now."""
        with self._lock:
            pool = self._pools.get((key, start))
            held = None if pool is None else pool.shards.get(shard)
            if held is not None:
                held.reported = max(held.reported, spent)
                held.allowance, held.expires = held.reported, -1.0

    def outstanding(self) -> dict[str, Decimal]:
        """Per counter key: the unspent part of the live leases (summed over its open periods)."""
        now = self._clock()
        out: dict[str, Decimal] = {}
        with self._lock:
            for (key, _), pool in self._pools.items():
                live = sum((h.allowance - h.reported for h in pool.shards.values() if h.expires > now), ZERO)
                out[key] = out.get(key, ZERO) + max(live, ZERO)
        return out

    def view(self, key: str, start: float) -> dict[str, object] | None:
        """One pool as JSON-ready data (for the lease route and tests); None if unknown."""
        now = self._clock()
        with self._lock:
            pool = self._pools.get((key, start))
            if pool is None:
                return None
            shards = {
                name: {
                    "reported": str(h.reported),
                    "allowance": str(h.allowance),
                    "expires_in": max(0.0, round(h.expires - now, 3)),
                }
                for name, h in sorted(pool.shards.items())
            }
            reported = sum((h.reported for h in pool.shards.values()), ZERO)
            return {"key": key, "start": start, "limit": str(pool.limit), "reported": str(reported), "shards": shards}

    def _prune(self, now: float) -> None:
        """Forget pools untouched for 20 TTLs (every live lease is renewed far more often than that)."""
        idle = 20 * self.terms.ttl_seconds
        if now < self._next_prune:
            return
        self._next_prune = now + self.terms.ttl_seconds
        stale = [k for k, p in self._pools.items() if now - p.touched > idle]
        for k in stale:
            del self._pools[k]
