"""Budget alerts by e-mail: each threshold alert of a budget with ``alert_emails``, over SMTP.

The book fires a threshold alert once per budget counter, period and threshold (the same alerts the
webhook gets); :class:`EmailNotifier` is one more sink of them. It only queues — the queue is bounded
and what does not fit is counted as dropped — and one background thread sends with the standard
library's ``smtplib``, so neither the event loop nor ingest ever waits on a mail server. A send that
fails (after a retry) is counted and logged without the message, the addresses or the password.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import queue
import smtplib
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from typing import Final, Literal

from costspan.processor.budgets._alerts import Alert
from costspan.processor.budgets._model import money

__all__ = ["EmailNotifier", "SmtpSettings", "alert_message"]

logger = logging.getLogger(__name__)

TlsMode = Literal["none", "starttls", "tls"]
_TLS_MODES: Final = ("none", "starttls", "tls")
_HELO: Final = "localhost"


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """Where and how to send: ``tls`` ``none`` (plain), ``starttls`` (upgrade, refused if the server
    cannot) or ``tls`` (implicit TLS, usually port 465). ``ca_file``: trust this CA (a private one)
    instead of the system's; certificates and host names are always verified."""

    host: str
    port: int = 25
    tls: TlsMode = "none"
    username: str = ""
    password: str = field(default="", repr=False)
    sender: str = "costspan@localhost"
    timeout: float = 10.0
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("an SMTP host is required")
        if not 0 < self.port < 65536:
            raise ValueError(f"SMTP port must be 1..65535, got {self.port}")
        if self.tls not in _TLS_MODES:
            raise ValueError(f"smtp_tls must be one of {', '.join(_TLS_MODES)}, got {self.tls!r}")
        if self.timeout <= 0:
            raise ValueError("the SMTP timeout must be positive")
        if self.password and not self.username:
            raise ValueError("an SMTP password needs a username")

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)


def alert_message(alert: Alert, sender: str, recipients: Sequence[str]) -> EmailMessage:
    """The e-mail for a threshold alert: the subject names the budget, the threshold and spent of limit."""
    unit = "USD" if alert.unit == "usd" else alert.unit
    limit = "no limit" if alert.limit is None else f"{money(alert.limit)} {unit}"
    spent = f"{money(alert.spent)} {unit}"
    scope = ", ".join(f"{k}={v}" for k, v in alert.scope.items()) or "all calls"
    msg = EmailMessage()
    msg["Subject"] = f"[costspan] budget {alert.budget_id} reached {alert.threshold}%: {spent} of {limit}"
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = formatdate(alert.at.timestamp())
    digest = hashlib.sha256(alert.idempotency_key.encode()).hexdigest()[:32]
    msg["Message-ID"] = f"<{digest}@costspan>"  # the same alert is the same message
    lines = [
        f"Budget {alert.budget_id} ({scope}) has reached {alert.threshold}% of its {alert.period} limit.",
        "",
        f"Spent:     {spent}",
        f"Limit:     {limit}",
        f"Threshold: {alert.threshold}%",
        f"Period:    {alert.period}"
        + (f" from {alert.period_start.isoformat()}" if alert.period_start else "")
        + (f", resets {alert.resets_at.isoformat()}" if alert.resets_at else ""),
        "",
        f"Alert: {alert.idempotency_key}",
    ]
    msg.set_content("\n".join(lines) + "\n")
    return msg


class EmailNotifier:
    """Sends each threshold alert of a budget with ``alert_emails`` to those addresses.

    ``recipients(budget_id)`` gives a budget's addresses (none: no e-mail). :attr:`sent`,
    :attr:`failures` (given up after ``retries`` more attempts) and :attr:`dropped` (queue full or
    closed) are counted; ``connect`` replaces how a connection is made (tests).
    """

    def __init__(
        self,
        smtp: SmtpSettings,
        recipients: Callable[[str], Sequence[str]],
        *,
        max_queue: int = 1000,
        retries: int = 1,
        backoff: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_queue < 1 or retries < 0 or backoff < 0:
            raise ValueError("max_queue >= 1, retries >= 0 and backoff >= 0 are required")
        self.smtp = smtp
        self._recipients = recipients
        self._retries = retries
        self._backoff = backoff
        self._sleep = sleep
        self._queue: queue.Queue[tuple[Alert, tuple[str, ...]] | None] = queue.Queue(max_queue)
        self._seen: deque[str] = deque(maxlen=10_000)  # idempotency keys queued: one message each
        self._lock = threading.Lock()
        self.sent = 0
        self.failures = 0
        self.dropped = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="costspan-budget-email", daemon=True)
        self._thread.start()

    def __call__(self, alert: Alert) -> None:
        """Queue the alert's e-mail (never blocks, never raises)."""
        if alert.kind != "threshold" or not alert.budget_id:
            return
        to = tuple(self._recipients(alert.budget_id))
        if not to:
            return
        with self._lock:
            if alert.idempotency_key in self._seen:
                return
            try:
                if self._closed:
                    raise queue.Full
                self._queue.put_nowait((alert, to))
            except queue.Full:
                self.dropped += 1
                logger.warning("budget e-mail closed or its queue full: dropping an alert")
                return
            self._seen.append(alert.idempotency_key)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued e-mail was sent or given up on."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self._queue.unfinished_tasks

    def shutdown(self, timeout: float = 10.0) -> None:
        """Send what is queued (up to ``timeout``), then stop. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.flush(timeout)
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._deliver(*item)
            except Exception:
                logger.exception("budget e-mail worker error")
            finally:
                self._queue.task_done()

    def _deliver(self, alert: Alert, to: tuple[str, ...]) -> None:
        message = alert_message(alert, self.smtp.sender, to)
        error = ""
        for attempt in range(1, self._retries + 2):
            try:
                self._send(message, to)
            except (OSError, smtplib.SMTPException) as exc:  # refused, timed out, TLS or login failed
                error = type(exc).__name__
                if attempt <= self._retries:
                    self._sleep(self._backoff * 2 ** (attempt - 1))
                continue
            with self._lock:
                self.sent += 1
            return
        with self._lock:
            self.failures += 1
        logger.warning("budget e-mail for %s gave up after %d attempts (%s)", alert.budget_id, attempt, error)

    def _send(self, message: EmailMessage, to: tuple[str, ...]) -> None:
        s = self.smtp
        client: smtplib.SMTP
        if s.tls == "tls":
            client = smtplib.SMTP_SSL(s.host, s.port, local_hostname=_HELO, timeout=s.timeout, context=s.ssl_context())
        else:  # a fixed HELO name: smtplib's default looks the machine's name up in DNS on every send
            client = smtplib.SMTP(s.host, s.port, local_hostname=_HELO, timeout=s.timeout)
        with client:
            if s.tls == "starttls":
                client.starttls(context=s.ssl_context())  # raises if the server does not offer it
            if s.username:
                client.login(s.username, s.password)
            client.send_message(message, from_addr=s.sender, to_addrs=list(to))
