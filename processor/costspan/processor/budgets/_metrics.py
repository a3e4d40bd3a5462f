"""Prometheus exposition of budgets: limit, spend, utilization, alerts, blocks, webhook and e-mail outcomes.

A custom collector: every scrape yields fresh families from the book's status. Labels are the
budget id and, for ``*`` scopes, the tenant — never workflow, user or request ids (cardinality).
A scrape never fails: an error is logged and the scrape answers with what it has.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from costspan.processor.budgets._alerts import WebhookNotifier
from costspan.processor.budgets._book import BudgetBook
from costspan.processor.budgets._email import EmailNotifier
from costspan.processor.budgets._model import Unit

__all__ = ["BudgetCollector"]

logger = logging.getLogger(__name__)

_LABELS = ["budget", "tenant", "period"]


class BudgetCollector(Collector):
    """``registry.register(BudgetCollector(book, notifier))``."""

    def __init__(
        self, book: BudgetBook, notifier: WebhookNotifier | None = None, emails: EmailNotifier | None = None
    ) -> None:
        self._book = book
        self._notifier = notifier
        self._emails = emails
        self.errors = 0

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: families depend on the data

    def collect(self) -> Iterator[Metric]:
        try:
            families = list(self._collect())
        except Exception:
            self.errors += 1
            logger.exception("collecting budget metrics failed")
            families = []
        yield from families
        yield from self._counters()

    def _collect(self) -> Iterator[Metric]:
        limit = GaugeMetricFamily("costspan_budget_limit_usd", "Limit of each USD budget.", labels=_LABELS)
        spent = GaugeMetricFamily("costspan_budget_spent_usd", "Spend in the current period.", labels=_LABELS)
        reserved = GaugeMetricFamily(
            "costspan_budget_reserved_usd", "Estimates held for calls in flight.", labels=_LABELS
        )
        ratio = GaugeMetricFamily(
            "costspan_budget_utilization_ratio", "Spent / limit (1 = exhausted), any unit.", labels=_LABELS
        )
        for row in self._book.status():
            labels = [row.budget.id, row.scope.get("tenant", ""), row.budget.period.value]
            ratio.add_metric(labels, float(row.utilization))
            if row.budget.unit is Unit.USD:
                limit.add_metric(labels, float(row.budget.limit))
                spent.add_metric(labels, float(row.spent))
                reserved.add_metric(labels, float(row.reserved))
        yield from (limit, spent, reserved, ratio)

    def _counters(self) -> Iterator[Metric]:
        book = self._book
        alerts = CounterMetricFamily(
            "costspan_budget_alerts", "Budget alerts raised.", labels=["budget", "threshold", "type"]
        )
        for (kind, budget_id, threshold), count in sorted(book.alert_counts.items()):
            alerts.add_metric([budget_id, threshold, kind], count)
        yield alerts
        blocked = CounterMetricFamily("costspan_budget_blocked", "Calls a budget refused.", labels=["budget"])
        for budget_id, count in sorted(book.blocked_by.items()):
            blocked.add_metric([budget_id], count)
        yield blocked
        rewritten = CounterMetricFamily(
            "costspan_budget_rewritten", "Calls an adaptive budget degraded.", labels=["budget"]
        )
        for budget_id, count in sorted(book.rewritten_by.items()):
            rewritten.add_metric([budget_id], count)
        yield rewritten
        yield CounterMetricFamily(
            "costspan_budget_reservations_expired", "Reservations never settled.", value=book.expired_total
        )
        if self._notifier is not None:
            hook = CounterMetricFamily(
                "costspan_budget_webhook_failures", "Alert deliveries given up, or dropped.", labels=["reason"]
            )
            hook.add_metric(["retries_exhausted"], self._notifier.failures)
            hook.add_metric(["queue_full"], self._notifier.dropped)
            yield hook
        if self._emails is not None:
            emails = self._emails
            yield CounterMetricFamily("costspan_alert_emails_sent", "Budget alert e-mails sent.", value=emails.sent)
            failed = CounterMetricFamily(
                "costspan_alert_emails_failures", "Budget alert e-mails given up, or dropped.", labels=["reason"]
            )
            failed.add_metric(["send_failed"], emails.failures)
            failed.add_metric(["queue_full"], emails.dropped)
            yield failed
