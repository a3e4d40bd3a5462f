"""What a test or the demo tells the fake provider: the usage to report, how to misbehave, what it received."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Behavior", "FakeUsage", "RecordedRequest"]


@dataclass(frozen=True)
class FakeUsage:
    """Inclusive counts: input includes cache reads and writes, output includes reasoning."""

    input: int = 100
    output: int = 20
    cache_read: int = 0
    cache_write: int = 0
    cache_write_1h: int = 0
    reasoning: int = 0


@dataclass(frozen=True)
class Behavior:
    """How to answer one request. The default is a normal answer."""

    status: int = 200
    delay: float = 0.0  # before the response headers (for timeouts)
    chunk_delay: float = 0.0  # between streamed events
    cut_after: int | None = None  # streamed events sent before the connection is dropped
    encoding: str | None = None  # "gzip" | "br" | "deflate"
    usage: FakeUsage | None = None
    omit_usage: bool = False  # answer without any usage (a provider that reports none)
    response_model: str | None = None
    error_event: bool = False  # a mid-stream provider error event (Anthropic/OpenAI style)
    chunks: int | None = None  # stream this many small text chunks instead of the default six
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None
