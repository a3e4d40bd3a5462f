"""Budget alerts: what fired, webhook delivery on a background thread, and the cost-spike rule."""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from costspan.processor.budgets._model import money
from costspan.processor.budgets._periods import as_datetime
from costspan.processor.budgets._state import Counter

__all__ = ["Alert", "AlertBoard", "Delivery", "SpikeDetector", "WebhookNotifier", "spikes", "threshold_alert"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Alert:
    """A threshold crossed (``kind="threshold"``) or a spend spike (``kind="cost_spike"``)."""

    kind: str
    budget_id: str
    scope: dict[str, str]
    threshold: int | None
    spent: Decimal
    limit: Decimal | None
    unit: str
    period: str
    period_start: datetime | None
    resets_at: datetime | None
    at: datetime
    idempotency_key: str
    details: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "budget": self.budget_id,
            "scope": self.scope,
            "threshold": self.threshold,
            "spent": money(self.spent),
            "limit": None if self.limit is None else str(self.limit),
            "unit": self.unit,
            "period": self.period,
            "period_start": self.period_start.isoformat() if self.period_start else None,
            "resets_at": self.resets_at.isoformat() if self.resets_at else None,
            "at": self.at.isoformat(),
            "idempotency_key": self.idempotency_key,
            **({"details": self.details} if self.details else {}),
        }


@dataclass(frozen=True, slots=True)
class Delivery:
    idempotency_key: str
    kind: str
    budget_id: str
    delivered: bool
    attempts: int
    status: int | None
    error: str
    at: datetime


class WebhookNotifier:
    """POSTs alerts as JSON to a URL from a background thread, with retries and exponential backoff.

    The queue is bounded (drops are counted); each alert carries an ``Idempotency-Key`` header equal
    to its key, the same on every retry. Outcomes are kept in :attr:`deliveries` (bounded) and failures
    counted in :attr:`failures`. Uses ``urllib`` so costspan's own httpx instrumentation never sees it.
    """

    def __init__(
        self,
        url: str,
        *,
        max_queue: int = 1000,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        timeout: float = 5.0,
        history: int = 1000,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook URL must be http(s), got {url[:40]!r}")
        if max_queue < 1 or retries < 0 or backoff < 0 or timeout <= 0:
            raise ValueError("max_queue >= 1, retries >= 0, backoff >= 0 and timeout > 0 are required")
        self._url = url
        self._retries = retries
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._timeout = timeout
        self._sleep = sleep
        self._queue: queue.Queue[Alert | None] = queue.Queue(max_queue)
        self.deliveries: deque[Delivery] = deque(maxlen=history)
        self.failures = 0
        self.dropped = 0
        self._count_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="costspan-budget-webhook", daemon=True)
        self._thread.start()

    def __call__(self, alert: Alert) -> None:
        try:
            if self._closed:
                raise queue.Full
            self._queue.put_nowait(alert)
        except queue.Full:
            with self._count_lock:
                self.dropped += 1
            logger.warning("budget webhook closed or its queue full: dropping an alert")

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued alert has been delivered or given up on."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self._queue.unfinished_tasks

    def shutdown(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout``), then stop. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.flush(timeout)
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            alert = self._queue.get()
            try:
                if alert is None:
                    return
                self._deliver(alert)
            except Exception:
                logger.exception("budget webhook worker error")
            finally:
                self._queue.task_done()

    def _deliver(self, alert: Alert) -> None:
        body = json.dumps(alert.to_json()).encode()
        status: int | None = None
        error = ""
        for attempt in range(1, self._retries + 2):
            request = urllib.request.Request(
                self._url,
                data=body,
                method="POST",
                headers={"Content-Type": "application/json", "Idempotency-Key": alert.idempotency_key},
            )
            try:
                with urllib.request.urlopen(request, timeout=self._timeout) as response:
                    status = response.status
                self.deliveries.append(
                    Delivery(alert.idempotency_key, alert.kind, alert.budget_id, True, attempt, status, "", _now())
                )
                return
            except urllib.error.HTTPError as exc:
                status, error = exc.code, f"HTTP {exc.code}"
                exc.close()
            except (OSError, ValueError) as exc:
                status, error = None, type(exc).__name__
            if attempt <= self._retries:
                self._sleep(min(self._max_backoff, self._backoff * 2 ** (attempt - 1)))
        self.failures += 1
        logger.warning("budget webhook gave up on alert %s after %d attempts (%s)", alert.kind, attempt, error)
        self.deliveries.append(
            Delivery(alert.idempotency_key, alert.kind, alert.budget_id, False, attempt, status, error, _now())
        )


def _now() -> datetime:
    return datetime.now(UTC)


_ZERO: Final = Decimal(0)


class SpikeDetector:
    """Flags an hour whose spend is far above the recent hourly baseline of the same tenant or service.

    Rule: with ``h`` the current clock hour (UTC) and ``baseline`` the mean hourly spend over the
    previous ``baseline_hours`` hours — only hours since the key was first seen, hours without spend
    counting as zero, and at least ``min_history_hours`` of them — a ``cost_spike`` alert fires once
    per key and hour when ``spend(h) >= factor * baseline`` and ``spend(h) >= min_spend_usd``.
    """

    def __init__(
        self,
        *,
        factor: Decimal = Decimal(3),
        baseline_hours: int = 24,
        min_history_hours: int = 3,
        min_spend_usd: Decimal = Decimal(1),
        max_keys: int = 10_000,
    ) -> None:
        if factor <= 1 or baseline_hours < 1 or min_history_hours < 1 or min_spend_usd < 0:
            raise ValueError("factor > 1, baseline_hours >= 1, min_history_hours >= 1 and min_spend_usd >= 0")
        self.factor = factor
        self.baseline_hours = baseline_hours
        self.min_history_hours = min_history_hours
        self.min_spend = min_spend_usd
        self._max_keys = max_keys
        self._hours: dict[str, dict[int, Decimal]] = {}
        self._first: dict[str, int] = {}
        self._fired: set[tuple[str, int]] = set()
        #: key -> (hour, mean spend of the hours before it); None while there is too little history
        self._baselines: dict[str, tuple[int, Decimal | None]] = {}

    def observe(self, key: str, at: float, usd: Decimal) -> Alert | None:
        """Add spend for ``key`` (``"tenant=acme"``) at epoch ``at``; an alert if the hour now spikes."""
        hour = int(at // 3600)
        buckets = self._hours.get(key)
        if buckets is None:
            if len(self._hours) >= self._max_keys:
                return None
            buckets = self._hours[key] = {}
            self._first[key] = hour
        previous = buckets.get(hour)
        if previous is None:  # a new hour for this key: forget the hours the baseline no longer uses
            for old in [h for h in buckets if h < hour - self.baseline_hours]:
                del buckets[old]
            current = buckets[hour] = usd
        else:
            current = buckets[hour] = previous + usd
        memo = self._baselines.get(key)
        if memo is not None and memo[0] != hour:  # another hour's baseline, or one a late call changed
            memo = None
            del self._baselines[key]
        # the cheap tests first: this runs for every stored call, under the tenant and the service
        if current < self.min_spend or (key, hour) in self._fired:
            return None
        if memo is not None:
            baseline = memo[1]
        else:
            history = [buckets.get(h, _ZERO) for h in range(max(self._first[key], hour - self.baseline_hours), hour)]
            baseline = sum(history, _ZERO) / len(history) if len(history) >= self.min_history_hours else None
            self._baselines[key] = (hour, baseline)
        if baseline is None or current < self.factor * baseline:
            return None
        self._fired = {f for f in self._fired if f[1] >= hour - 1}
        self._fired.add((key, hour))
        dim, _, value = key.partition("=")
        start = datetime.fromtimestamp(hour * 3600, UTC)
        return Alert(
            kind="cost_spike",
            budget_id="",
            scope={dim: value},
            threshold=None,
            spent=current,
            limit=None,
            unit="usd",
            period="hour",
            period_start=start,
            resets_at=datetime.fromtimestamp((hour + 1) * 3600, UTC),
            at=_now(),
            idempotency_key=f"cost_spike:{key}:{start.isoformat()}",
            details={"baseline_hourly_usd": str(baseline.quantize(Decimal("0.000001"))), "factor": str(self.factor)},
        )


def threshold_alert(counter: Counter, threshold: int, now: float) -> Alert:
    """The alert for a counter crossing ``threshold`` percent; keyed by budget instance, period, threshold."""
    budget = counter.budget
    start = as_datetime(counter.start) if counter.start > 0 else None
    return Alert(
        kind="threshold",
        budget_id=budget.id,
        scope=counter.scope(),
        threshold=threshold,
        spent=counter.spent,
        limit=budget.limit,
        unit=budget.unit.value,
        period=budget.period.value,
        period_start=start,
        resets_at=as_datetime(counter.end),
        at=datetime.fromtimestamp(now, UTC),
        idempotency_key=f"{counter.key}:{start.isoformat() if start else 'total'}:{threshold}",
    )


def spikes(detector: SpikeDetector | None, dims: tuple[str | None, ...], usd: Decimal | None, at: float) -> list[Alert]:
    """Feed a call's spend to the detector under its tenant and its service; the spikes it raises."""
    if detector is None or not usd:
        return []
    found = []
    for dim, value in (("tenant", dims[0]), ("service", dims[1])):  # SCOPE_DIMENSIONS order
        if value:
            alert = detector.observe(f"{dim}={value}", at, usd)
            if alert is not None:
                found.append(alert)
    return found


class AlertBoard:
    """A book's alerts: the spike rule that spend feeds, and what happens to a raised alert — kept
    (the last 1,000), counted, and handed to every sink.

    Sinks run on the caller's thread, outside the budget lock; a sink's error is logged, not raised.
    """

    def __init__(
        self, sinks: Iterable[Callable[[Alert], None]] = (), spike_detector: SpikeDetector | None = None
    ) -> None:
        self.sinks: list[Callable[[Alert], None]] = list(sinks)
        self.recent: deque[Alert] = deque(maxlen=1000)
        #: (type, budget id, threshold) → alerts raised
        self.counts: dict[tuple[str, str, str], int] = {}
        #: the cost-spike rule (None: off); replaceable at any time
        self.spike_detector = spike_detector

    def spikes(self, dims: tuple[str | None, ...], usd: Decimal | None, at: float) -> list[Alert]:
        """Feed a call's spend to the spike rule (under the book's lock); the spikes it raises."""
        return spikes(self.spike_detector, dims, usd, at)

    def emit(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            self.recent.append(alert)
            key = (alert.kind, alert.budget_id, "" if alert.threshold is None else str(alert.threshold))
            self.counts[key] = self.counts.get(key, 0) + 1
            logger.info("budget alert %s for %s (threshold %s)", alert.kind, alert.budget_id, alert.threshold)
            for sink in list(self.sinks):
                try:
                    sink(alert)
                except Exception:
                    logger.exception("budget alert sink failed")
