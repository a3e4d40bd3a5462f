"""Spend leases: the owner's pools (grant, renew, expiry) and shards drawing on them, in one process."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest

from costspan.processor.budgets import BudgetBook, Call
from costspan.processor.budgets._leases import Grant, LeaseBook, LeaseTerms
from costspan.processor.budgets._lessee import LeaseAsk, LeaseUnavailableError, Lessee, leased, local_grant
from costspan.processor.budgets._model import parse_budget

D = Decimal
KEY, START = "global", 1_000.0


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_first_grant_is_the_fraction_of_what_remains_and_renewal_replaces_the_lease() -> None:
    book = LeaseBook(LeaseTerms(), clock=Clock())
    g = book.grant(KEY, START, D(100), "a", D(0))
    assert g == Grant(D("10.0"), D("10.0"), D("90.0"), 30.0)
    again = book.grant(KEY, START, D(100), "a", D(4))  # renewal: the old lease returns to the pool first
    assert again.allowance == D("13.6") and again.granted == D("9.6")


def test_shards_share_the_pool_and_grants_are_bounded_by_min_and_max_share() -> None:
    book = LeaseBook(LeaseTerms(fraction=D("0.5"), min_share=D("0.05"), max_share=D("0.2")), clock=Clock())
    assert book.grant(KEY, START, D(100), "a", D(0)).allowance == D(20)  # 50 capped at max 20
    assert book.grant(KEY, START, D(100), "b", D(0)).allowance == D(20)
    assert book.grant(KEY, START, D(100), "c", D(50)).allowance == D(55)  # remaining 10 → max(5, 5)
    assert book.grant(KEY, START, D(100), "d", D(0)).granted == D(5)  # min share, and all that is left
    assert book.grant(KEY, START, D(100), "e", D(0)).granted == D(0)  # 20+20+55+5 = 100: nothing left
    # a small want is honoured
    assert book.grant(KEY, START, D(100), "a", D(1), want=D("0.5")).allowance == D("1.5")


def test_expired_leases_return_to_the_pool_and_reports_are_cumulative() -> None:
    clock = Clock()
    book = LeaseBook(LeaseTerms(fraction=D(1), max_share=D(1), ttl_seconds=10), clock=clock)
    assert book.grant(KEY, START, D(100), "a", D(0)).allowance == D(100)
    assert book.grant(KEY, START, D(100), "b", D(0)).granted == 0
    clock.t += 11  # a's lease lapsed: only its reported spend (0) stays committed
    assert book.grant(KEY, START, D(100), "b", D(0)).allowance == D(100)
    clock.t += 11
    book.grant(KEY, START, D(100), "a", D(30))
    book.grant(KEY, START, D(100), "a", D(10))  # a late, smaller report never lowers what was reported
    view = book.view(KEY, START)
    assert view is not None and view["reported"] == "30"


def test_a_lease_the_owner_does_not_know_is_adopted_not_granted_twice() -> None:
    book = LeaseBook(LeaseTerms(fraction=D(1), max_share=D(1)), clock=Clock())
    book.grant(KEY, START, D(100), "a", D(0), holding=D(80), holding_ttl=5)  # e.g. the owner restarted
    assert book.grant(KEY, START, D(100), "b", D(0)).allowance <= D(20)


def test_give_back_and_period_isolation() -> None:
    book = LeaseBook(LeaseTerms(fraction=D(1), max_share=D(1)), clock=Clock())
    book.grant(KEY, START, D(100), "a", D(0))
    book.give_back(KEY, START, "a", D(25))
    assert book.grant(KEY, START, D(100), "b", D(0)).allowance == D(75)
    assert book.grant(KEY, START + 86_400, D(100), "b", D(0)).allowance == D(100)  # the next period is a new pool
    assert book.outstanding() == {KEY: D(175)}


def test_bad_terms_and_input_are_refused() -> None:
    with pytest.raises(ValueError, match="lease_fraction"):
        LeaseTerms(fraction=D(0))
    with pytest.raises(ValueError, match="not be negative"):
        LeaseBook().grant(KEY, START, D(1), "a", D(-1))


def test_which_budgets_are_leased() -> None:
    def b(scope: dict[str, str], mode: str = "hard", period: str = "day") -> bool:
        return leased(parse_budget({"scope": scope, "period": period, "limit": "1", "mode": mode}))

    assert b({}) and b({"tenant": "*"}) and b({"model": "gpt-4o"})
    # one tenant's (and a workspace's project's) budget too: its spans and checks may be on any shard
    assert b({"tenant": "acme"}) and b({"tenant": "acme", "project": "p"})
    assert not b({}, mode="soft") and not b({}, period="per_request") and not b({"tenant": "acme"}, mode="soft")


# --- shards drawing on one owner ------------------------------------------------------------------------
GLOBAL = {"id": "g", "period": "day", "limit": "200", "unit": "requests"}


def shard(name: str, owner: LeaseBook, *, remote: bool = False, down: str = "closed") -> tuple[BudgetBook, Lessee]:
    book = BudgetBook()
    book.put_budget(GLOBAL)

    def ask_remote(url: str, ask: LeaseAsk) -> Grant:
        if remote:
            raise LeaseUnavailableError("connection refused")
        budget = book.get_budget(ask.budget_id)
        assert budget is not None
        return local_grant(owner, budget, ask)

    lessee = Lessee(
        book,
        shard=name,
        owner_of=lambda key: "http://owner",
        is_self=lambda url: False,
        owner_book=owner,
        ask_remote=ask_remote,
        owner_down=down,  # type: ignore[arg-type]
        interval=0.002,
    )
    return book, lessee


def test_many_concurrent_shards_never_spend_beyond_the_limit() -> None:
    owner = LeaseBook(LeaseTerms(fraction=D("0.2"), min_share=D("0.01"), max_share=D("0.1")))
    shards = [shard(f"s{i}", owner) for i in range(6)]
    admitted = [0] * len(shards)

    for book, _ in shards:  # the first check loads the model catalog: not part of the race
        book.check(Call(tenant="warm-up", model="m"))
    deadline = time.monotonic() + 6

    def work(i: int) -> None:
        book = shards[i][0]
        while time.monotonic() < deadline and sum(admitted) < 200:  # until the pool is drawn down
            decision = book.check(Call(tenant=f"t{i}", model="m"))
            if decision.allowed:
                admitted[i] += 1
                assert decision.reservation_id is not None
                book.settle(decision.reservation_id, D(0), requests=1)
            else:
                time.sleep(0.001)

    for _, lessee in shards:
        lessee.start()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(shards))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for _, lessee in shards:
        lessee.stop()
    assert sum(admitted) <= 200
    assert sum(admitted) >= 190  # the pool is drawn down almost entirely (min share 2 requests)
    assert all(n > 0 for n in admitted)


def test_a_new_counter_has_no_room_until_its_lease_arrives() -> None:
    owner = LeaseBook()
    book, lessee = shard("a", owner)
    lessee.attach()
    refused = book.check(Call(tenant="t", model="m"))
    assert not refused.allowed
    lessee.tick()
    assert book.check(Call(tenant="t", model="m")).allowed
    assert lessee.held()["g"]["allowance"] == "20"


def test_owner_down_closed_refuses_and_says_why() -> None:
    book, lessee = shard("a", LeaseBook(), remote=True)
    lessee.attach()
    lessee.tick()
    decision = book.check(Call(tenant="t", model="m"))
    assert not decision.allowed and decision.block is not None
    assert "lease owner http://owner is unavailable: connection refused" in decision.block.message()
    assert "lease_owner_down=closed" in decision.block.message()
    assert lessee.renew_failures_total == 1


def test_owner_down_open_allows_against_the_local_limit_and_counts_it() -> None:
    book, lessee = shard("a", LeaseBook(), remote=True, down="open")
    lessee.attach()
    lessee.tick()
    assert book.check(Call(tenant="t", model="m")).allowed
    assert lessee.open_total == 1


def test_a_lease_is_drawn_on_while_the_owner_is_down_then_lapses_closed() -> None:
    owner = LeaseBook(LeaseTerms(ttl_seconds=30))
    clock = Clock()
    book, lessee = shard("a", owner)
    lessee._clock = clock
    lessee.attach()
    lessee.tick()  # 20 requests leased
    lessee._ask_remote = lambda url, ask: (_ for _ in ()).throw(LeaseUnavailableError("timed out"))
    allowed = sum(book.check(Call(tenant="t", model="m")).allowed for _ in range(25))
    lessee.tick()
    assert allowed == 20  # the lease, and not one call more
    spent = book.check(Call(tenant="t", model="m"))
    assert spent.block is not None and "lease owner http://owner is unavailable: timed out" in spent.block.message()
    clock.t += 31
    lessee.tick()
    refused = book.check(Call(tenant="t", model="m"))
    assert refused.block is not None and "lease owner" in refused.block.message()


def test_stopping_gives_the_unspent_lease_back() -> None:
    owner = LeaseBook()
    book, lessee = shard("a", owner)
    lessee.attach()
    lessee.tick()
    assert book.check(Call(tenant="t", model="m")).allowed
    assert owner.outstanding() == {"g": D(20)}
    lessee.stop()
    assert owner.outstanding() == {"g": D(0)}
    view = owner.view("g", book._state.counters["g"].start)
    assert view is not None and view["reported"] == "1"


def test_lease_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from costspan.processor.serve._settings import Settings

    for name in ("COSTSPAN_PEERS", "COSTSPAN_NODE_URL", "COSTSPAN_PEERS_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert Settings().lease_owner_down == "closed" and Settings().lease_ttl_seconds == 30
    with pytest.raises(ValidationError, match="lease_min_share must not exceed lease_max_share"):
        Settings(lease_min_share=D("0.5"), lease_max_share=D("0.2"))
    with pytest.raises(ValidationError, match="lease_owner_down"):
        Settings(lease_owner_down="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="lease_fraction"):
        Settings(lease_fraction=D(0))


def test_the_check_stops_drawing_on_a_lease_at_its_ttl_even_if_the_lessee_thread_is_stuck() -> None:
    """The lessee's thread may be waiting on an owner that hangs (up to the peer timeout, per counter):
    the lease still lapses at its TTL, in the check itself, so the owner's re-grant of it is not
    spent twice (the overspend bound in docs/scale-out.md)."""
    clock = Clock()
    owner = LeaseBook(LeaseTerms(ttl_seconds=30), clock=clock)
    book = BudgetBook(clock=clock)
    book.put_budget(GLOBAL)
    lessee = Lessee(
        book,
        shard="a",
        owner_of=lambda key: "http://owner",
        is_self=lambda url: False,
        owner_book=owner,
        ask_remote=lambda url, ask: local_grant(owner, book.get_budget(ask.budget_id), ask),  # type: ignore[arg-type]
        clock=clock,
    )
    lessee.attach()
    lessee.tick()  # 20 requests leased for 30 s
    assert sum(book.check(Call(tenant="t", model="m")).allowed for _ in range(5)) == 5
    clock.t += 29.9
    assert book.check(Call(tenant="t", model="m")).allowed  # still live
    clock.t += 0.2  # past the TTL; the lessee has not looked again
    refused = book.check(Call(tenant="t", model="m"))
    assert refused.block is not None and "lease expired" in refused.block.message()
    lessee.tick()  # the owner answers again: a new lease, room again
    assert book.check(Call(tenant="t", model="m")).allowed


def test_open_mode_does_not_lapse_in_the_check() -> None:
    clock = Clock()
    owner = LeaseBook(LeaseTerms(ttl_seconds=30), clock=clock)
    book = BudgetBook(clock=clock)
    book.put_budget(GLOBAL)
    lessee = Lessee(
        book,
        shard="a",
        owner_of=lambda key: "http://owner",
        is_self=lambda url: False,
        owner_book=owner,
        ask_remote=lambda url, ask: local_grant(owner, book.get_budget(ask.budget_id), ask),  # type: ignore[arg-type]
        owner_down="open",
        clock=clock,
    )
    lessee.attach()
    lessee.tick()
    clock.t += 31
    assert book.check(Call(tenant="t", model="m")).allowed  # open: the lessee decides when it looks


def test_stopping_with_a_hanging_owner_costs_one_timeout_not_one_per_counter() -> None:
    owner = LeaseBook()
    book = BudgetBook()
    book.put_budget({"id": "each", "scope": {"tenant": "*"}, "period": "day", "limit": "200", "unit": "requests"})
    asks: list[LeaseAsk] = []

    def ask_remote(url: str, ask: LeaseAsk) -> Grant:
        asks.append(ask)
        if ask.release:
            time.sleep(0.2)  # the owner hangs until the peer timeout
            raise LeaseUnavailableError("timed out")
        budget = book.get_budget(ask.budget_id)
        assert budget is not None
        return local_grant(owner, budget, ask)

    lessee = Lessee(
        book,
        shard="a",
        owner_of=lambda key: "http://owner",
        is_self=lambda url: False,
        owner_book=owner,
        ask_remote=ask_remote,
    )
    lessee.attach()
    for n in range(10):  # ten counters, one per tenant, each with a lease
        book.check(Call(tenant=f"t{n}", model="m"))
    lessee.tick()
    assert len(lessee.held()) == 10
    t0 = time.monotonic()
    lessee.stop()
    assert time.monotonic() - t0 < 1.0
    assert sum(a.release for a in asks) == 1
    lessee.stop()  # safe twice
    assert sum(a.release for a in asks) == 1


def test_an_ask_after_the_client_is_closed_is_an_unavailable_owner_not_a_crash() -> None:
    """At shutdown the lease thread may still be in a round when the HTTP client is closed."""
    from costspan.processor.budgets._lease_api import http_owner_client

    ask, close = http_owner_client("peer-key", 0.5)
    close()
    close()  # safe twice
    with pytest.raises(LeaseUnavailableError, match="stopping"):
        ask("http://127.0.0.1:9", LeaseAsk("g", "g", START, "a", D(0)))


# --- one tenant's budget: its checks on one shard, its spans on another -------------------------------------
ONE = {"id": "acme-day", "scope": {"tenant": "acme"}, "period": "day", "limit": "50", "unit": "requests"}


def _one_tenant_shard(name: str, owner: LeaseBook, clock: Clock) -> tuple[BudgetBook, Lessee]:
    book = BudgetBook(clock=clock, reservation_ttl=60)
    book.put_budget(ONE)
    lessee = Lessee(
        book,
        shard=name,
        owner_of=lambda key: "http://owner",
        is_self=lambda url: False,
        owner_book=owner,
        ask_remote=lambda url, ask: local_grant(owner, book.get_budget(ask.budget_id), ask),  # type: ignore[arg-type]
        clock=clock,
    )
    lessee.attach()
    return book, lessee


def test_a_one_tenant_counter_opens_ahead_and_has_no_room_until_its_lease_arrives() -> None:
    clock = Clock()
    book, lessee = _one_tenant_shard("a", LeaseBook(clock=clock), clock)
    assert not book.check(Call(tenant="acme", model="m")).allowed  # no lease yet
    assert book.check(Call(tenant="globex", model="m")).allowed  # another tenant: the budget does not apply
    lessee.tick()
    assert lessee.held()["acme-day"]["allowance"] == "5"  # the counter is the budget's id
    assert sum(book.check(Call(tenant="acme", model="m")).allowed for _ in range(8)) == 5


def test_a_one_tenant_limit_holds_when_its_checks_and_its_spend_are_on_different_shards() -> None:
    """The tenant's pre-call checks reach shard b (its COSTSPAN_ENDPOINT); its spans reach shard a (the
    Collector's ring), which records them: b's reservations wait for their TTL, a reports the spend in
    its asks. Over many reservation TTLs the shards together admit no more than the limit."""
    clock = Clock()
    owner = LeaseBook(LeaseTerms(ttl_seconds=30), clock=clock)
    (a, a_lessee), (b, b_lessee) = _one_tenant_shard("a", owner, clock), _one_tenant_shard("b", owner, clock)
    admitted = 0
    for _ in range(400):  # 2000 s: the reservations expire many times over
        a_lessee.tick()
        b_lessee.tick()
        for _ in range(3):
            decision = b.check(Call(tenant="acme", model="m"))
            if decision.allowed:
                admitted += 1
                a.record(Call(tenant="acme", model="m"), D(0), requests=1)  # the span, on the other shard
        clock.t += 5
    a.expire()
    b.expire()
    (a_row,) = a.status("acme-day")
    (b_row,) = b.status("acme-day")
    assert admitted <= 50, admitted
    assert admitted >= 45  # the pool is drawn down (a few requests may stay leased out)
    assert a_row.spent == admitted and b_row.spent == 0  # all spend sits on a; b only checked


def test_a_hanging_owner_costs_one_timeout_a_round_not_one_per_counter() -> None:
    """Every workspace's budget is leased: a round over many counters asks an owner that does not answer
    once, and the other counters of that owner are refused for the same reason without waiting."""
    from costspan.processor.budgets._lessee import OwnerUnreachableError

    book = BudgetBook()
    for n in range(10):
        book.put_budget({**ONE, "id": f"ws-t{n}-daily", "scope": {"tenant": f"t{n}"}})
    asks: list[LeaseAsk] = []

    def hangs(url: str, ask: LeaseAsk) -> Grant:
        asks.append(ask)
        time.sleep(0.2)  # the peer timeout
        raise OwnerUnreachableError("ReadTimeout: timed out")

    lessee = Lessee(
        book,
        shard="a",
        owner_of=lambda key: "http://owner",
        is_self=lambda url: False,
        owner_book=LeaseBook(),
        ask_remote=hangs,
    )
    lessee.attach()
    t0 = time.monotonic()
    lessee.tick()
    assert time.monotonic() - t0 < 1.0 and len(asks) == 1
    assert lessee.renew_failures_total == 10
    refused = book.check(Call(tenant="t7", model="m"))
    assert (
        refused.block is not None and "lease owner http://owner is unavailable: ReadTimeout" in refused.block.message()
    )


def test_an_owner_that_answers_with_an_error_is_still_asked_for_the_other_counters() -> None:
    """A 404 (the owner lacks one budget's definition) is about that budget, not the owner."""
    owner = LeaseBook()
    book = BudgetBook()
    for n in range(3):
        book.put_budget({**ONE, "id": f"b{n}", "scope": {"tenant": f"t{n}"}})

    def ask_remote(url: str, ask: LeaseAsk) -> Grant:
        if ask.budget_id == "b0":
            raise LeaseUnavailableError("answered 404 unknown budget 'b0'")
        budget = book.get_budget(ask.budget_id)
        assert budget is not None
        return local_grant(owner, budget, ask)

    lessee = Lessee(
        book,
        shard="a",
        owner_of=lambda key: "http://owner",
        is_self=lambda url: False,
        owner_book=owner,
        ask_remote=ask_remote,
    )
    lessee.attach()
    lessee.tick()
    assert sorted(lessee.held()) == ["b0", "b1", "b2"]
    assert lessee.held()["b1"]["allowance"] == "5" and lessee.held()["b0"]["allowance"] == "0"
