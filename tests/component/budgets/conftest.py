"""Fixtures for the budget tests: an injectable clock and books over it."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from costspan.pricing import Pricer, default_pricer
from costspan.processor.budgets import BudgetBook, CostEstimator


class FakeClock:
    """Epoch seconds that only move when told to."""

    def __init__(self, start: datetime | float) -> None:
        self.t = start.timestamp() if isinstance(start, datetime) else float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.t

    def set(self, when: datetime) -> None:
        self.t = when.timestamp()

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.t += seconds


@pytest.fixture(scope="session")
def pricer() -> Pricer:
    return default_pricer()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 3, 10, 12, 0, tzinfo=UTC))


@pytest.fixture
def book(clock: FakeClock, pricer: Pricer) -> BudgetBook:
    return BudgetBook(clock=clock, estimator=CostEstimator(pricer, clock=clock))
