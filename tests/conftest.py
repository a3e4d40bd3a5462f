"""Fixtures for every test."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_default_grpc_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """Servers built in tests (and ``costspan serve`` subprocesses, which inherit the environment) do not
    listen on the fixed OTLP/gRPC port 4317 unless a test asks for a port: tests run side by side."""
    monkeypatch.setenv("COSTSPAN_GRPC_PORT", "0")
