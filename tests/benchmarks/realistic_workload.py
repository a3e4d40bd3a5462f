"""The realistic call stream of ``bench_realistic``: OTLP protobuf exports of GenAI spans.

Shape: 50 tenants (mildly skewed sizes), 2,000 users (40 per tenant), 300 workflows (6 per tenant),
20 models over 6 providers, sessions of 5-15 calls (~10: N/10 distinct session ids) by one user of
one tenant in one workflow, a fifth of a session's calls on another model. Session starts are
uniform over the last 30 days at any second (so at any minute of any hour), the calls of a session
a few seconds to a minute apart; every call has a random 128-bit trace id and a random 64-bit span
id. ``order="random"`` sends sessions in random time order (every export touches the whole month,
as a backfill or many late exporters would); ``order="time"`` sends them oldest first.
"""

from __future__ import annotations

import random
import threading
import time
from bisect import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

__all__ = ["MODELS", "SHAPE", "Stream", "Workload"]

TENANTS, USERS_PER_TENANT, WORKFLOWS_PER_TENANT, DAYS = 50, 40, 6, 30
#: (provider as OTel names it, model, operation, share of sessions)
MODELS: tuple[tuple[str, str, str, int], ...] = (
    ("openai", "gpt-4o", "chat", 8),
    ("openai", "gpt-4o-mini", "chat", 14),
    ("openai", "gpt-4.1", "chat", 5),
    ("openai", "gpt-4.1-mini", "chat", 8),
    ("openai", "gpt-5-mini", "chat", 6),
    ("openai", "o3", "chat", 2),
    ("openai", "text-embedding-3-small", "embeddings", 8),
    ("anthropic", "claude-sonnet-4-5", "chat", 9),
    ("anthropic", "claude-haiku-4-5", "chat", 6),
    ("anthropic", "claude-opus-4-1", "chat", 1),
    ("anthropic", "claude-3-5-haiku-latest", "chat", 2),
    ("gcp.gemini", "gemini-2.5-pro", "chat", 3),
    ("gcp.gemini", "gemini-2.5-flash", "chat", 6),
    ("gcp.gemini", "gemini-2.0-flash", "chat", 3),
    ("mistral_ai", "mistral-large-latest", "chat", 2),
    ("mistral_ai", "mistral-small-latest", "chat", 3),
    ("groq", "llama-3.3-70b-versatile", "chat", 3),
    ("groq", "llama-3.1-8b-instant", "chat", 3),
    ("deepseek", "deepseek-chat", "chat", 4),
    ("deepseek", "deepseek-reasoner", "chat", 1),
)
#: (input tokens, output tokens, weight)
TOKENS = ((300, 60, 25), (1200, 250, 35), (4000, 600, 25), (15000, 1500, 12), (60000, 3000, 3))
SERVICES = ("checkout", "search", "support", "agent")
SHAPE = (
    f"{TENANTS} tenants, {TENANTS * USERS_PER_TENANT:,} users, {TENANTS * WORKFLOWS_PER_TENANT} workflows, "
    f"{len(MODELS)} models over {len({m[0] for m in MODELS})} providers, sessions of 5-15 calls (~N/10 ids), "
    f"starts uniform over the last {DAYS} days at any minute, random trace/span ids"
)


@dataclass(frozen=True, slots=True)
class Workload:
    calls: int
    seed: int = 16
    order: str = "random"  # or "time"
    batch: int = 512


def _kv(key: str, text: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=text))


class Stream:
    """Thread-safe source of serialized exports; ``next_body()`` is ``None`` once the calls are sent.

    Attribute values that repeat (tenant, user, workflow, model) are prebuilt messages copied into
    each span; only the ids, times, session and token counts are set per call.
    """

    def __init__(self, workload: Workload, now: float | None = None) -> None:
        self.workload = workload
        self._rng = random.Random(workload.seed)
        self._lock = threading.Lock()
        self._now_ns = int((time.time() if now is None else now) * 1e9)
        self._span_ns = DAYS * 86400 * 10**9 - 3600 * 10**9  # the newest session starts an hour ago
        self._sessions = max(1, workload.calls // 10)
        self._session = 0
        self._pending: list[tuple[int, int, int]] = []  # (session, start_ns, calls) not yet emitted
        self.emitted = 0
        self.limit = workload.calls  # emit up to here (the benchmark raises it step by step)
        self.sessions_started = 0
        self._left = 0  # calls of the current session still to emit (a session may span two exports)
        self._at = 0
        self._model = 0
        self._dims: tuple[KeyValue, ...] = ()
        self._tenant_w = list(accumulate(1 / (t + 1) ** 0.5 for t in range(TENANTS)))
        self._model_w = list(accumulate(m[3] for m in MODELS))
        self._token_w = list(accumulate(t[2] for t in TOKENS))
        self._tenants = [_kv("costspan.tenant.id", f"tenant-{t:03d}") for t in range(TENANTS)]
        self._users = [
            [_kv("costspan.user.id", f"user-{t:03d}-{u:02d}") for u in range(USERS_PER_TENANT)] for t in range(TENANTS)
        ]
        self._workflows = [
            [_kv("costspan.workflow.id", f"wf-{t:03d}-{w}") for w in range(WORKFLOWS_PER_TENANT)]
            for t in range(TENANTS)
        ]
        self._projects = [_kv("costspan.project.id", f"proj-{t:03d}-{p}") for t in range(TENANTS) for p in range(2)]
        self._models = [
            [
                _kv("gen_ai.operation.name", op),
                _kv("gen_ai.provider.name", provider),
                _kv("gen_ai.request.model", model),
                _kv("gen_ai.response.model", model),
            ]
            for provider, model, op, _ in MODELS
        ]

    def _session_start(self, k: int) -> int:
        if self.workload.order == "time":
            return self._now_ns - self._span_ns + int((k + self._rng.random()) * self._span_ns / self._sessions)
        return self._now_ns - self._span_ns + self._rng.randrange(self._span_ns)

    def next_body(self) -> tuple[bytes, int] | None:
        """The next export and how many calls it holds (``None``: ``limit`` calls were emitted)."""
        with self._lock:
            count = min(self.workload.batch, self.limit - self.emitted)
            if count <= 0:
                return None
            body = self._build(count)
            self.emitted += count
            return body, count

    def _build(self, count: int) -> bytes:
        rng = self._rng
        request = ExportTraceServiceRequest()
        rs = request.resource_spans.add()
        rs.resource.attributes.append(_kv("service.name", SERVICES[self.emitted // self.workload.batch % 4]))
        rs.resource.attributes.append(_kv("telemetry.sdk.language", "python"))
        scope = rs.scope_spans.add()
        scope.scope.name = "opentelemetry.instrumentation.openai_v2"
        spans = scope.spans
        made = 0
        while made < count:
            if self._left <= 0:  # a new session: 5-15 calls by one user in one workflow, seconds apart
                k = self.sessions_started
                self.sessions_started += 1
                t = bisect(self._tenant_w, rng.random() * self._tenant_w[-1])
                self._dims = (
                    self._tenants[t],
                    self._users[t][rng.randrange(USERS_PER_TENANT)],
                    self._workflows[t][rng.randrange(WORKFLOWS_PER_TENANT)],
                    self._projects[2 * t + rng.randrange(2)],
                    _kv("costspan.session.id", f"sess-{self.workload.seed}-{k:x}"),
                )
                self._at = self._session_start(k)
                self._model = bisect(self._model_w, rng.random() * self._model_w[-1])
                self._left = rng.randint(5, 15)
            if rng.random() < 0.2:  # a fifth of the calls go to another model
                self._model = bisect(self._model_w, rng.random() * self._model_w[-1])
            m = self._model
            inp, out, _ = TOKENS[bisect(self._token_w, rng.random() * self._token_w[-1])]
            if MODELS[m][2] == "embeddings":
                out = 0
            inp += rng.randrange(inp // 4 + 1)
            latency = 150_000_000 + out * rng.randrange(4_000_000, 12_000_000)
            span = spans.add(name=f"{MODELS[m][2]} {MODELS[m][1]}", kind=Span.SPAN_KIND_CLIENT)
            span.trace_id = rng.getrandbits(128).to_bytes(16, "big")
            span.span_id = rng.getrandbits(64).to_bytes(8, "big")
            span.start_time_unix_nano = self._at
            span.end_time_unix_nano = self._at + latency
            attributes = span.attributes
            attributes.extend(self._models[m])
            attributes.extend(self._dims)
            attributes.add(key="gen_ai.usage.input_tokens").value.int_value = inp
            attributes.add(key="gen_ai.usage.output_tokens").value.int_value = out
            if rng.random() < 0.3:
                attributes.add(key="gen_ai.usage.cache_read.input_tokens").value.int_value = inp // 2
            if rng.random() < 0.02:
                attributes.add(key="error.type").value.string_value = "rate_limited"
                span.status.code = Status.STATUS_CODE_ERROR
            self._at += latency + rng.randrange(2, 60) * 10**9
            self._left -= 1
            made += 1
        return request.SerializeToString()

    def bodies(self) -> Iterator[tuple[bytes, int]]:
        while (item := self.next_body()) is not None:
            yield item
