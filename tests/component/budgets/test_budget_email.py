"""Budget alert e-mails against a real SMTP server (aiosmtpd) on 127.0.0.1: plain, STARTTLS with a
self-signed certificate made for the test, login; once per threshold per period; a server that is down
is a counted failure and nothing else."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from prometheus_client import CollectorRegistry

from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.budgets import BudgetBook, Call
from costspan.processor.budgets._email import EmailNotifier, SmtpSettings
from costspan.processor.serve._server import build_server_app
from costspan.processor.serve._settings import Settings
from costspan.processor.store._store import Store
from tests.component.budgets.conftest import FakeClock

ACME = Call(tenant="acme", provider="openai", model="gpt-4o")


class Inbox:
    """An aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: object, session: Session, envelope: Envelope) -> str:  # noqa: N802 (aiosmtpd's name)
        raw = envelope.original_content or b""
        parsed = message_from_bytes(raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        with self._lock:
            self.messages.append((list(envelope.rcpt_tos), parsed))
        return "250 OK"

    def wait_for(self, n: int, timeout: float = 10) -> list[tuple[list[str], EmailMessage]]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return list(self.messages)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _smtp_server(inbox: Inbox, **kwargs: Any) -> Controller:
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port(), **kwargs)
    controller.start()
    return controller


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    box = Inbox()
    controller = _smtp_server(box)
    yield box, controller.port
    controller.stop()


def _recipients(book: BudgetBook) -> Any:
    def of(budget_id: str) -> tuple[str, ...]:
        budget = book.get_budget(budget_id)
        return () if budget is None else budget.alert_emails

    return of


def test_each_threshold_is_mailed_once_per_period(inbox: tuple[Inbox, int], clock: FakeClock) -> None:
    box, port = inbox
    book = BudgetBook(clock=clock)
    emails = EmailNotifier(SmtpSettings(host="127.0.0.1", port=port, sender="costspan@alerts.test"), _recipients(book))
    book.alert_sinks.append(emails)
    book.put_budget(
        {
            "id": "acme-month",
            "scope": {"tenant": "acme"},
            "period": "month",
            "limit": "100",
            "thresholds": [80, 100],
            "alert_emails": ["finops@example.com", "cto@example.org"],
        }
    )
    book.put_budget({"id": "quiet", "period": "month", "limit": "1"})  # no alert_emails: no e-mail
    book.record(ACME, Decimal("85"))
    book.record(ACME, Decimal("1"))  # still past 80: nothing new
    assert emails.flush(10)
    ((to, msg),) = box.wait_for(1)
    assert to == ["finops@example.com", "cto@example.org"]
    assert msg["Subject"] == "[costspan] budget acme-month reached 80%: 85 USD of 100 USD"
    assert msg["From"] == "costspan@alerts.test"
    body = msg.get_content()
    for line in ("Spent:     85 USD", "Limit:     100 USD", "Threshold: 80%", "tenant=acme", "month from 2026-03-01"):
        assert line in body
    book.record(ACME, Decimal("20"))  # 106: the 100 % threshold
    assert emails.flush(10)
    assert [m["Subject"] for _, m in box.wait_for(2)] == [
        "[costspan] budget acme-month reached 80%: 85 USD of 100 USD",
        "[costspan] budget acme-month reached 100%: 106 USD of 100 USD",
    ]
    book.record(ACME, Decimal("50"))
    clock.advance(25 * 86400)  # April: a new period, the thresholds fire again
    book.record(ACME, Decimal("90"))
    assert emails.flush(10)
    subjects = [m["Subject"] for _, m in box.wait_for(3)]
    assert subjects[2:] == ["[costspan] budget acme-month reached 80%: 90 USD of 100 USD"]
    time.sleep(0.1)
    assert len(box.messages) == 3
    assert (emails.sent, emails.failures, emails.dropped) == (3, 0, 0)
    emails.shutdown()
    emails.shutdown()


def test_smtp_down_is_a_counted_failure_and_nothing_else_breaks(clock: FakeClock) -> None:
    book = BudgetBook(clock=clock)
    slept: list[float] = []
    emails = EmailNotifier(
        SmtpSettings(host="127.0.0.1", port=_free_port(), timeout=2), _recipients(book), sleep=slept.append
    )
    book.alert_sinks.append(emails)
    book.put_budget(
        {"id": "b", "period": "day", "limit": "10", "thresholds": [50], "alert_emails": ["ops@example.com"]}
    )
    started = time.monotonic()
    book.record(ACME, Decimal(6))  # the alert fires; the caller does not wait on the mail server
    assert time.monotonic() - started < 0.5
    assert emails.flush(10)
    assert (emails.sent, emails.failures) == (0, 1)
    assert slept == [1.0]  # one retry, after a pause
    assert [a.threshold for a in book.alerts] == [50]
    assert book.check(ACME).allowed
    emails.shutdown()


def test_a_full_queue_drops_and_counts(clock: FakeClock) -> None:
    book = BudgetBook(clock=clock)
    gate = threading.Event()

    def held(_: float) -> None:
        gate.wait(10)

    emails = EmailNotifier(
        SmtpSettings(host="127.0.0.1", port=_free_port(), timeout=1),
        _recipients(book),
        max_queue=1,
        retries=1,
        sleep=held,
    )
    book.alert_sinks.append(emails)
    book.put_budget(
        {"id": "b", "period": "day", "limit": "10", "thresholds": [10, 20, 30, 40], "alert_emails": ["o@example.com"]}
    )
    book.record(ACME, Decimal(1))  # 10 %: taken by the worker, which then waits in its retry pause
    deadline = time.monotonic() + 5
    while emails._queue.unfinished_tasks and emails._queue.qsize() and time.monotonic() < deadline:
        time.sleep(0.01)
    book.record(ACME, Decimal(1))  # 20 %: queued
    book.record(ACME, Decimal(1))  # 30 %: the queue is full
    assert emails.dropped >= 1
    gate.set()
    emails.shutdown()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a self-signed certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_starttls_with_login_over_a_verified_self_signed_certificate(
    certificate: tuple[Path, Path], clock: FakeClock
) -> None:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    logins: list[tuple[bytes, bytes]] = []

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        logins.append((data.login, data.password))
        return AuthResult(success=data.login == b"alerts" and data.password == b"s3cret")

    box = Inbox()
    controller = _smtp_server(box, tls_context=context, require_starttls=True, authenticator=authenticate)
    try:
        book = BudgetBook(clock=clock)
        smtp = SmtpSettings(
            host="127.0.0.1",
            port=controller.port,
            tls="starttls",
            username="alerts",
            password="s3cret",
            ca_file=str(cert),
        )
        emails = EmailNotifier(smtp, _recipients(book))
        book.alert_sinks.append(emails)
        book.put_budget(
            {"id": "b", "period": "day", "limit": "10", "thresholds": [50], "alert_emails": ["ops@example.com"]}
        )
        book.record(ACME, Decimal(6))
        assert emails.flush(10)
        ((to, msg),) = box.wait_for(1)
        assert to == ["ops@example.com"] and "reached 50%" in msg["Subject"]
        assert logins == [(b"alerts", b"s3cret")]
        # without the CA the certificate is not trusted: a failure, counted, no mail
        plain = SmtpSettings(host="127.0.0.1", port=controller.port, tls="starttls")
        untrusted = EmailNotifier(plain, _recipients(book), sleep=lambda _: None)
        book.alert_sinks.append(untrusted)
        book.put_budget(
            {"id": "c", "period": "day", "limit": "1", "thresholds": [50], "alert_emails": ["ops@example.com"]}
        )
        book.record(ACME, Decimal(1))
        assert untrusted.flush(10)
        assert (untrusted.sent, untrusted.failures) == (0, 1)
        emails.shutdown()
        untrusted.shutdown()
    finally:
        controller.stop()


def test_implicit_tls(certificate: tuple[Path, Path], clock: FakeClock) -> None:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    box = Inbox()
    controller = _smtp_server(box, ssl_context=context)
    try:
        book = BudgetBook(clock=clock)
        smtp = SmtpSettings(host="127.0.0.1", port=controller.port, tls="tls", ca_file=str(cert))
        emails = EmailNotifier(smtp, _recipients(book))
        book.alert_sinks.append(emails)
        book.put_budget(
            {"id": "b", "period": "day", "limit": "10", "thresholds": [50], "alert_emails": ["ops@example.com"]}
        )
        book.record(ACME, Decimal(6))
        assert emails.flush(10)
        ((to, msg),) = box.wait_for(1)
        assert to == ["ops@example.com"] and "reached 50%" in msg["Subject"]
        assert (emails.sent, emails.failures) == (1, 0)
        emails.shutdown()
    finally:
        controller.stop()


def test_serve_settings_wire_email_alerts_and_metrics(inbox: tuple[Inbox, int], tmp_path: Path) -> None:
    box, port = inbox
    settings = Settings(
        data_dir=tmp_path,
        port=0,
        grpc_port=0,
        snapshot_interval_seconds=3600,
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_from="costspan@alerts.test",
    )
    registry = CollectorRegistry(auto_describe=False)
    app = build_server_app(settings, Store(settings.store_config()), insecure_no_auth=True, registry=registry)
    with ServerThread(app) as server:
        body = {"monthly_budget_usd": 10, "alert_threshold_percent": 50, "alert_emails": ["finops@example.com"]}
        httpx.post(f"{server.url}/api/workspaces/acme/budget", json=body, timeout=10).raise_for_status()
        app.state.budget_book.record(ACME, Decimal(6))
        ((to, msg),) = box.wait_for(1)
        assert to == ["finops@example.com"]
        assert msg["Subject"].startswith("[costspan] budget ws-acme-monthly reached 50%: 6 USD of 10 USD")
        deadline = time.monotonic() + 5
        while registry.get_sample_value("costspan_alert_emails_sent_total") != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert "costspan_alert_emails_sent_total 1.0" in metrics
    assert 'costspan_alert_emails_failures_total{reason="send_failed"} 0.0' in metrics


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({"smtp_tls": "ssl"}, "smtp_tls"),
        ({"smtp_port": 0}, "smtp_port"),
        ({"smtp_from": "not an address"}, "smtp_from"),
        ({"smtp_password": "x"}, "smtp_username"),
    ],
)
def test_bad_smtp_settings_stop_start_up(bad: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Settings(smtp_host="127.0.0.1", **bad)


def test_alert_emails_survive_a_restart(tmp_path: Path, clock: FakeClock) -> None:
    spec = {"id": "b", "period": "day", "limit": "10", "alert_emails": ["ops@example.com", "cfo@example.com"]}
    book = BudgetBook(clock=clock, data_dir=tmp_path, fsync="never")
    book.put_budget(spec)
    book.close()
    reopened = BudgetBook(clock=clock, data_dir=tmp_path, fsync="never")  # from the journal
    replayed = reopened.get_budget("b")
    assert replayed is not None and replayed.alert_emails == ("ops@example.com", "cfo@example.com")
    reopened.snapshot()
    reopened.close()
    again = BudgetBook(clock=clock, data_dir=tmp_path, fsync="never")  # from the snapshot
    budget = again.get_budget("b")
    assert budget is not None and budget.alert_emails == ("ops@example.com", "cfo@example.com")
    again.close()
