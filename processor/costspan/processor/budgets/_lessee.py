"""A shard's side of spend leases: keep a lease for every enforcing budget counter and cap the check by it.

Only with peers. Every budget that can refuse a call over a period is leased, whatever its scope
(global, ``tenant: "*"``, one tenant, a workspace's or project's): a tenant's spans and its pre-call
checks may each land on any shard (the Collector routes spans by a hash ring of its own, a re-balance
moves tenants, and the apps' ``COSTSPAN_ENDPOINT`` may name any shard), so no shard alone sees a
tenant's whole spend. A leased counter (see :func:`leased`) opens with no room; a background thread asks
the budget's owner (``peers.owner("budget:" + id)``; the owner may be this instance) for a lease,
sets the counter's cap to the granted allowance, and asks again when the room left falls below half
of the last slice, at half the lease's TTL, or when the period rolls. Every ask reports the shard's
spend in the period so far. The book's check is unchanged: it reads the capped room, so it never
waits on the network.

Owner unreachable with the lease gone (exhausted or past its TTL): ``closed`` refuses the calls the
lease does not cover, naming the reason; ``open`` lifts the cap (the limit is then held against this
instance's own spend only), logs it and counts it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

from costspan.processor.budgets._leases import Grant, LeaseBook
from costspan.processor.budgets._model import Budget, Mode, Period, Unit

if TYPE_CHECKING:
    from costspan.processor.budgets._book import BudgetBook

__all__ = [
    "LeaseAsk",
    "LeaseUnavailableError",
    "Lessee",
    "OwnerClient",
    "OwnerDown",
    "OwnerUnreachableError",
    "budget_owner_key",
    "leased",
    "local_grant",
]

logger = logging.getLogger(__name__)

OwnerDown = Literal["closed", "open"]
ZERO = Decimal(0)


def leased(budget: Budget) -> bool:
    """Whether a budget is drawn on by leases (with peers): it can refuse (hard or adaptive) and it has a
    period. Its scope does not matter: a one-tenant budget's spend and checks may be on any shard too."""
    return budget.mode is not Mode.SOFT and budget.period is not Period.PER_REQUEST


def budget_owner_key(budget_id: str) -> str:
    """The key whose owner (``Peers.owner``) holds a leased budget's pools."""
    return "budget:" + budget_id


class LeaseUnavailableError(Exception):
    """The owner could not be asked or did not answer with a lease (the message says why)."""


class OwnerUnreachableError(LeaseUnavailableError):
    """The owner did not answer at all (refused, timed out): no other ask to it is sent in the same round."""


@dataclass(frozen=True, slots=True)
class LeaseAsk:
    """What a shard sends its budget's owner."""

    budget_id: str
    key: str
    start: float
    shard: str
    spent: Decimal
    holding: Decimal | None = None
    holding_ttl: float = 0.0
    release: bool = False


#: Asks the owner at a base URL for a lease; raises :class:`LeaseUnavailableError`.
OwnerClient = Callable[[str, LeaseAsk], Grant]


@dataclass(slots=True)
class _Lease:
    start: float
    allowance: Decimal
    slice: Decimal
    expires: float  # on this instance's monotonic clock, counted from before the ask was sent
    renew_at: float
    retry_at: float = 0.0


class Lessee:
    """Keeps this instance's leases; ``start()`` runs it on a daemon thread, ``stop()`` gives them back."""

    def __init__(
        self,
        book: BudgetBook,
        *,
        shard: str,
        owner_of: Callable[[str], str],
        is_self: Callable[[str], bool],
        owner_book: LeaseBook,
        ask_remote: OwnerClient,
        owner_down: OwnerDown = "closed",
        interval: float = 0.1,
        retry_seconds: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if owner_down not in ("closed", "open"):
            raise ValueError("lease_owner_down must be 'closed' or 'open'")
        self._book = book
        self._shard = shard
        self._owner_of = owner_of
        self._is_self = is_self
        self._owner_book = owner_book
        self._ask_remote = ask_remote
        self.owner_down: OwnerDown = owner_down
        self._interval = interval
        self._retry = retry_seconds
        self._clock = clock
        self._leases: dict[str, _Lease] = {}
        #: owners that did not answer in the current round, with why (None: not in a round)
        self._unreachable: dict[str, str] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.renew_failures_total = 0
        self.open_total = 0  # times a counter was opened because its owner was down
        self.granted_total = 0

    # --- lifecycle --------------------------------------------------------------------------------------
    def attach(self) -> None:
        """Make the book's leased counters (those open now and every one opened later) wait for a lease."""
        book = self._book
        with book._lock:
            book._state.leased = leased
            for counter in book._state.counters.values():
                if leased(counter.budget) and not counter.leased:
                    counter.leased, counter.cap = True, ZERO
                    counter.refresh()

    def start(self) -> None:
        self.attach()
        self._thread = threading.Thread(target=self._run, name="costspan-lessee", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop renewing and give the unspent leases back (best effort). Safe twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        # an owner that does not take one give-back is not asked again, and the give-backs end at
        # ``timeout``: a hanging owner costs at most one peer timeout, not one per counter
        down: set[str] = set()
        deadline = time.monotonic() + timeout
        for key, budget, start, spent, reserved in self._counters():
            lease = self._leases.pop(key, None)
            owner = self._owner_of(budget_owner_key(budget.id))
            if lease is None or lease.start != start or owner in down or time.monotonic() >= deadline:
                continue
            # calls still in flight may yet spend what they reserved: that part is not given back
            ask = LeaseAsk(budget.id, key, start, self._shard, spent + reserved, release=True)
            try:
                self._ask(budget, ask)
            except LeaseUnavailableError:
                down.add(owner)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.tick()
            except Exception:  # never let the thread die: log it, count it, carry on
                logger.exception("spend lease renewal failed")
                self.renew_failures_total += 1

    # --- one round ----------------------------------------------------------------------------------------
    def _counters(self) -> list[tuple[str, Budget, float, Decimal, Decimal]]:
        """(key, budget, period start, spent, reserved) of every leased counter, read under the book's lock.

        A budget without a ``*`` in its scope (global, one tenant, a workspace's) has one counter, opened
        (or rolled) here, so its lease is asked for before its first call; a ``*`` budget's counters
        (``tenant: "*"``) open with each scope value's first call.
        """
        book = self._book
        with book._lock:
            state, now = book._state, book.now()
            for budget in list(state.budgets.values()):
                if not budget.each_dimensions and leased(budget):
                    counter = state.counters.get(budget.id)
                    if counter is None or counter.end <= now:
                        book._log.roll(budget, budget.id, (), now)
                        book._matches.forget()
            return [
                (c.key, c.budget, c.start, c.spent, c.reserved)
                for c in book._state.counters.values()
                if c.leased and leased(c.budget)
            ]

    def tick(self) -> None:
        """Ask for every lease that is missing, running low, half-way through its TTL or of a past period."""
        now = self._clock()
        # an owner that does not answer is asked once per round: with many leased counters (one per
        # tenant's budget) a hanging owner costs one peer timeout a round, not one per counter
        self._unreachable = {}
        try:
            self._round(now)
        finally:
            self._unreachable = None

    def _round(self, now: float) -> None:
        for key, budget, start, spent, reserved in self._counters():
            lease = self._leases.get(key)
            if lease is not None and lease.start == start:
                if lease.expires <= now and lease.slice > 0:
                    lease.slice = ZERO  # lapsed: nothing left to draw on until the owner answers
                    self._lapse(key, start, budget, spent, "the lease expired before the owner renewed it")
                if now < lease.retry_at:
                    continue
                low = lease.allowance - spent - reserved < lease.slice / 2
                if now < lease.renew_at and not (low and lease.slice > 0):
                    continue
            self._renew(key, budget, start, spent, lease if lease is not None and lease.start == start else None)
        known = {key for key, *_ in self._counters()}
        for key in [k for k in self._leases if k not in known]:
            del self._leases[key]

    def _renew(self, key: str, budget: Budget, start: float, spent: Decimal, lease: _Lease | None) -> None:
        sent = self._clock()
        holding = None if lease is None else lease.allowance
        holding_ttl = 0.0 if lease is None else max(0.0, lease.expires - sent)
        # the report is the spend only, never what reservations hold: the owner keeps the highest report
        # and grants above it, and a reservation that ends unspent here (its call was charged on the
        # shard its span reached, which reports it) would make that room again and again
        ask = LeaseAsk(budget.id, key, start, self._shard, spent, holding, holding_ttl)
        try:
            grant = self._ask(budget, ask)
        except LeaseUnavailableError as exc:
            self.renew_failures_total += 1
            if lease is not None:
                lease.retry_at = sent + self._retry
                if lease.expires > sent and (self.owner_down == "closed" or lease.allowance > spent):
                    # draw on what is left of the lease meanwhile; a refusal beyond it says why
                    owner = self._owner_of(budget_owner_key(budget.id))
                    self._set_note(key, start, f"its lease owner {owner} is unavailable: {exc}; the lease is spent")
                    return
            else:
                self._leases[key] = _Lease(start, spent, ZERO, sent, sent, sent + self._retry)
            self._lapse(key, start, budget, spent, str(exc))
            return
        if grant.granted > 0:
            self.granted_total += 1
        stalled = lease is not None and grant.allowance <= lease.allowance  # no more than before: ask less often
        self._leases[key] = _Lease(
            start,
            grant.allowance,
            grant.granted,
            sent + grant.ttl,
            sent + grant.ttl / 2,
            sent + min(1.0, grant.ttl / 2) if stalled or grant.granted <= 0 else 0.0,
        )
        note = (
            ""
            if grant.granted > 0
            else "this instance's lease is spent and the rest of the limit is held by other instances"
        )
        self._set_cap(key, start, grant.allowance, note)
        if self.owner_down == "closed":  # the check itself stops drawing on it once its TTL has passed
            book = self._book
            book.lease_due(key, start, book.now() + (sent + grant.ttl - self._clock()))

    def _lapse(self, key: str, start: float, budget: Budget, spent: Decimal, why: str) -> None:
        """No lease to draw on: closed refuses beyond what was spent, open lifts the cap."""
        owner = self._owner_of(budget_owner_key(budget.id))
        if self.owner_down == "open":
            book = self._book
            with book._lock:
                counter = book._state.counters.get(key)
                if counter is None or counter.start != start or counter.cap is None:
                    return
                counter.cap, counter.lease_note = None, ""
                counter.refresh()
            self.open_total += 1
            logger.warning(
                "budget %s: lease owner %s unavailable (%s); allowing calls (lease_owner_down=open)",
                budget.id,
                owner,
                why,
            )
            return
        note = f"its lease owner {owner} is unavailable: {why}; refused (lease_owner_down=closed)"
        self._set_cap(key, start, spent, note, lower_only=True)

    def _set_note(self, key: str, start: float, note: str) -> None:
        book = self._book
        with book._lock:
            counter = book._state.counters.get(key)
            if counter is not None and counter.start == start:
                counter.lease_note = note

    def _set_cap(self, key: str, start: float, cap: Decimal, note: str, *, lower_only: bool = False) -> None:
        book = self._book
        with book._lock:
            counter = book._state.counters.get(key)
            if counter is None or counter.start != start:
                return
            if lower_only and counter.cap is not None and counter.cap < cap:
                cap = counter.cap
            counter.cap, counter.lease_note = cap, note
            counter.refresh()

    def _ask(self, budget: Budget, ask: LeaseAsk) -> Grant:
        owner = self._owner_of(budget_owner_key(budget.id))
        if self._is_self(owner):
            return local_grant(self._owner_book, budget, ask)
        unreachable = self._unreachable
        if unreachable is not None and owner in unreachable:
            raise OwnerUnreachableError(unreachable[owner])
        try:
            return self._ask_remote(owner, ask)
        except OwnerUnreachableError as exc:
            if unreachable is not None:
                unreachable[owner] = str(exc)
            raise

    # --- reading ------------------------------------------------------------------------------------------
    def held(self) -> dict[str, dict[str, str | float]]:
        """This instance's leases: key → allowance and seconds left (for status and tests)."""
        now = self._clock()
        return {
            key: {"start": lease.start, "allowance": str(lease.allowance), "expires_in": round(lease.expires - now, 3)}
            for key, lease in list(self._leases.items())
        }

    def unspent(self) -> Decimal:
        """The unspent part of this instance's live USD leases (a metric)."""
        now = self._clock()
        total = ZERO
        for key, budget, start, spent, _ in self._counters():
            lease = self._leases.get(key)
            if lease is not None and lease.start == start and lease.expires > now and budget.unit.value == "usd":
                total += max(ZERO, lease.allowance - spent)
        return total


def local_grant(owner_book: LeaseBook, budget: Budget, ask: LeaseAsk) -> Grant:
    """Answer an ask with this instance's lease book (the owner's side of the route, or a local ask)."""
    if ask.release:
        owner_book.give_back(ask.key, ask.start, ask.shard, ask.spent)
        return Grant(ask.spent, ZERO, ZERO, 0.0)
    return owner_book.grant(
        ask.key,
        ask.start,
        budget.limit,
        ask.shard,
        ask.spent,
        whole=budget.unit is not Unit.USD,
        holding=ask.holding,
        holding_ttl=ask.holding_ttl,
    )
