"""Webhook delivery against a real receiver on 127.0.0.1: retries, idempotency keys, counted failures."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from costspan.processor.budgets import Alert, BudgetBook, Call, SpikeDetector, WebhookNotifier
from tests.component.budgets.conftest import FakeClock


class Receiver:
    """Answers 500 to the first ``fail_first`` requests, then 200; records everything."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.attempts: list[tuple[str, dict[str, Any]]] = []
        self.accepted: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = self.headers["Idempotency-Key"]
                with receiver._lock:
                    receiver.attempts.append((key, body))
                    ok = len(receiver.attempts) > receiver.fail_first
                    if ok:
                        receiver.accepted.append((key, body))
                self.send_response(200 if ok else 500)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    r = Receiver(getattr(request, "param", 2))
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.mark.parametrize("receiver", [2], indirect=True)
def test_fails_twice_then_accepts_exactly_one_delivery_per_threshold(receiver: Receiver, book: BudgetBook) -> None:
    notifier = WebhookNotifier(receiver.url, backoff=0.01, retries=5)
    book.alert_sinks.append(notifier)
    book.put_budget({"id": "acme-day", "scope": {"tenant": "acme"}, "period": "day", "limit": "10"})
    acme = Call(tenant="acme", provider="openai", model="gpt-4o")
    book.record(acme, Decimal("6"))
    book.record(acme, Decimal("2"))
    book.record(acme, Decimal("1"))  # 9.0: 50, 75 and 90
    assert notifier.flush(10)
    notifier.shutdown()
    notifier.shutdown()
    assert [body["threshold"] for _, body in receiver.accepted] == [50, 75, 90]
    keys = [key for key, _ in receiver.accepted]
    assert keys == [
        "acme-day:2026-03-10T00:00:00+00:00:50",
        "acme-day:2026-03-10T00:00:00+00:00:75",
        "acme-day:2026-03-10T00:00:00+00:00:90",
    ]
    assert [k for k, _ in receiver.attempts] == [keys[0]] * 3 + keys[1:]  # retries keep the same key
    _, body = receiver.accepted[0]
    assert body == {
        "type": "threshold",
        "budget": "acme-day",
        "scope": {"tenant": "acme"},
        "threshold": 50,
        "spent": "6",
        "limit": "10",
        "unit": "usd",
        "period": "day",
        "period_start": "2026-03-10T00:00:00+00:00",
        "resets_at": "2026-03-11T00:00:00+00:00",
        "at": "2026-03-10T12:00:00+00:00",
        "idempotency_key": keys[0],
    }
    assert [(d.delivered, d.attempts, d.status) for d in notifier.deliveries] == [
        (True, 3, 200),
        (True, 1, 200),
        (True, 1, 200),
    ]
    assert notifier.failures == 0


@pytest.mark.parametrize("receiver", [1000], indirect=True)
def test_failures_are_counted_and_listed(receiver: Receiver, book: BudgetBook) -> None:
    notifier = WebhookNotifier(receiver.url, backoff=0.001, retries=2)
    book.alert_sinks.append(notifier)
    book.put_budget({"id": "g", "period": "day", "limit": "1", "thresholds": [50]})
    book.record(Call(), Decimal("0.6"))
    assert notifier.flush(10)
    assert notifier.failures == 1
    (d,) = notifier.deliveries
    assert (d.delivered, d.attempts, d.status, d.error) == (False, 3, 500, "HTTP 500")
    assert len(receiver.attempts) == 3
    notifier.shutdown()


def test_an_unreachable_webhook_never_blocks_the_book(book: BudgetBook) -> None:
    notifier = WebhookNotifier("http://127.0.0.1:9/hook", backoff=0, retries=0, timeout=0.5, max_queue=1)
    book.alert_sinks.append(notifier)
    book.put_budget({"id": "g", "period": "day", "limit": "1"})
    book.record(Call(), Decimal("5"))  # four alerts into a queue of one
    assert notifier.flush(10)
    assert notifier.failures + notifier.dropped == 4
    notifier.shutdown()


def test_bad_webhook_settings_fail_fast() -> None:
    with pytest.raises(ValueError, match="http"):
        WebhookNotifier("ftp://x")
    with pytest.raises(ValueError, match="max_queue"):
        WebhookNotifier("http://127.0.0.1:9/", max_queue=0)


def test_cost_spike_fires_once_per_hour_above_the_baseline(clock: FakeClock) -> None:
    sink: list[Alert] = []
    book = BudgetBook(clock=clock, alert_sinks=[sink.append], spike_detector=SpikeDetector(factor=Decimal(3)))
    acme = Call(tenant="acme", service="chat")
    for _ in range(5):  # five hours of $1
        book.record(acme, Decimal(1))
        clock.advance(3600)
    assert sink == []  # a steady $1 an hour is the baseline, not a spike
    book.record(acme, Decimal("2.9"))
    assert sink == []  # 2.9 < 3 x 1
    book.record(acme, Decimal("0.2"))
    assert [(a.kind, a.scope, a.spent) for a in sink] == [
        ("cost_spike", {"tenant": "acme"}, Decimal("3.1")),
        ("cost_spike", {"service": "chat"}, Decimal("3.1")),
    ]
    assert sink[0].details == {"baseline_hourly_usd": "1.000000", "factor": "3"}
    assert sink[0].idempotency_key == "cost_spike:tenant=acme:2026-03-10T17:00:00+00:00"
    book.record(acme, Decimal(5))
    assert len(sink) == 2  # once per key and hour


def test_spike_rule_is_configurable() -> None:
    with pytest.raises(ValueError, match="factor"):
        SpikeDetector(factor=Decimal(1))
    eager = SpikeDetector(factor=Decimal(2), min_history_hours=1, min_spend_usd=Decimal(0))
    assert eager.observe("tenant=a", 0, Decimal(1)) is None  # no history yet
    alert = eager.observe("tenant=a", 3600, Decimal(2))
    assert alert is not None and alert.spent == 2
    quiet = SpikeDetector(factor=Decimal(100), min_history_hours=1, min_spend_usd=Decimal(0))
    assert quiet.observe("tenant=a", 0, Decimal(1)) is None
    assert quiet.observe("tenant=a", 3600, Decimal(2)) is None  # 2 < 100 x 1


def test_spike_rule_sees_late_calls_in_the_baseline() -> None:
    """The baseline is remembered per hour; a late call for an earlier hour must change it."""
    detector = SpikeDetector(factor=Decimal(3), min_history_hours=2, min_spend_usd=Decimal(0))
    for hour in range(3):
        assert detector.observe("tenant=a", hour * 3600, Decimal(1)) is None
    assert detector.observe("tenant=a", 3 * 3600, Decimal("2.5")) is None  # baseline 1: 2.5 < 3
    assert detector.observe("tenant=a", 1 * 3600, Decimal(3)) is None  # late: hour 1 now holds 4
    # baseline (1 + 4 + 1) / 3 = 2, so 5.5 < 6 is no spike; with the stale baseline of 1 it would be
    assert detector.observe("tenant=a", 3 * 3600, Decimal(3)) is None
    alert = detector.observe("tenant=a", 3 * 3600, Decimal("0.5"))  # 6 >= 3 x 2
    assert alert is not None and alert.spent == 6 and alert.details["baseline_hourly_usd"] == "2.000000"


def test_spike_rule_matches_its_definition_on_random_spend() -> None:
    """Random spend with late calls against the rule written out plainly (as in docs/budgets.md)."""
    rng = random.Random(7)
    detector = SpikeDetector(factor=Decimal(2), baseline_hours=6, min_history_hours=2, min_spend_usd=Decimal(1))
    spend: dict[int, Decimal] = {}
    first: int | None = None
    fired: set[int] = set()
    now = 0
    for _ in range(3000):
        now += rng.randrange(0, 900)
        late = rng.random() < 0.1
        hour = (now // 3600) - (rng.randrange(1, 4) if late else 0)
        usd = Decimal(rng.randrange(0, 300)) / 100
        first = hour if first is None else first
        if hour not in spend:  # the rule keeps only the hours its baseline can use
            spend = {h: v for h, v in spend.items() if h >= hour - 6}
        spend[hour] = spend.get(hour, Decimal(0)) + usd
        history = [spend.get(h, Decimal(0)) for h in range(max(first, hour - 6), hour)]
        expected = (
            hour not in fired
            and len(history) >= 2
            and spend[hour] >= 1
            and spend[hour] >= 2 * (sum(history, Decimal(0)) / len(history))
        )
        alert = detector.observe("tenant=a", hour * 3600 + 1, usd)
        assert (alert is not None) == expected
        if expected:  # fired hours are remembered for the hour after them
            fired = {h for h in fired if h >= hour - 1} | {hour}
