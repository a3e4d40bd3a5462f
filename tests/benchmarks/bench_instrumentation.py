"""Client CPU overhead of costspan's instrumentation, side by side with genai-openai, in one run.

    .venv/bin/python -m tests.benchmarks.bench_instrumentation [--calls 40] [--rounds 30] [--chunks 2000]

What is measured is the calling thread's CPU time (``time.thread_time``) of the real openai 3.x SDK,
sync, per chat call and per streamed chunk, in these modes: uninstrumented, costspan,
opentelemetry-instrumentation-genai-openai (the maintained successor of openai-v2, which no longer
imports beside util-genai 1.3b0), and both. All modes share one SDK TracerProvider
(SimpleSpanProcessor → in-memory exporter) and MeterProvider (in-memory reader).

Two transports:
- the fake provider on 127.0.0.1 in a child process (real sockets; its CPU is not the client's);
- an in-memory ``httpx2.MockTransport`` (no network: the least noisy view of the overhead).

Modes are interleaved over ``--rounds`` rounds and the fastest round of each mode is reported (the
lower envelope is the most robust statistic on a shared, noisy machine). Ratios compare overheads.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import openai
from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costspan.instrumentation import CostspanInstrumentor
from costspan.instrumentation._tokens import TokenCounter
from costspan.pricing import default_pricer

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello in one short sentence."}]
CALL_MODES = ("uninstrumented", "costspan", "genai-openai", "both")
CHAT_BODY = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 14, "completion_tokens": 3, "total_tokens": 17},
    }
).encode()


class Modes:
    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tp = TracerProvider()
        self.tp.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.mp = MeterProvider(metric_readers=[InMemoryMetricReader()])
        self.pricer = default_pricer()
        self.tokens = TokenCounter()
        self.tokens.start_loading()
        self.tokens.loaded.wait(60)
        self.costspan = CostspanInstrumentor()
        self.genai = OpenAIInstrumentor()

    def set(self, mode: str) -> None:
        if self.costspan.is_instrumented_by_opentelemetry:
            self.costspan.uninstrument()
        if self.genai.is_instrumented_by_opentelemetry:
            self.genai.uninstrument()
        if mode in ("costspan", "both"):
            self.costspan.instrument(
                tracer_provider=self.tp, meter_provider=self.mp, pricer=self.pricer, token_counter=self.tokens
            )
        if mode in ("genai-openai", "both"):
            self.genai.instrument(tracer_provider=self.tp, meter_provider=self.mp)
        self.exporter.clear()


@contextmanager
def fake_server_process() -> Iterator[str]:
    """The fake provider in a child process (so its CPU is not the client's); yields its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.fake_provider"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)


class _Events(httpx2.SyncByteStream):
    """A response body delivered one SSE event per chunk, as a network would."""

    def __init__(self, events: list[bytes]) -> None:
        self.events = events

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.events)


def _sse_events(n: int, include_usage: bool) -> list[bytes]:
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o"}
    extra: dict[str, Any] = {"usage": None} if include_usage else {}

    def ev(obj: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps({**base, **obj, **extra}, separators=(",", ":")).encode() + b"\n\n"

    out = [ev({"choices": [{"index": 0, "delta": {"content": " tok"}, "finish_reason": None}]}) for _ in range(n)]
    out.append(ev({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    if include_usage:
        usage = {"prompt_tokens": 14, "completion_tokens": n, "total_tokens": 14 + n}
        out.append(b"data: " + json.dumps({**base, "choices": [], "usage": usage}).encode() + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return out


def mock_client(chunks: int) -> openai.OpenAI:
    def handler(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        if body.get("stream"):
            include = bool((body.get("stream_options") or {}).get("include_usage"))
            return httpx2.Response(
                200, headers={"content-type": "text/event-stream"}, stream=_Events(_sse_events(chunks, include))
            )
        return httpx2.Response(200, headers={"content-type": "application/json"}, content=CHAT_BODY)

    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    return openai.OpenAI(base_url="https://api.openai.com/v1", api_key="k", http_client=http, max_retries=0)


def cpu_per_op(fn: Callable[[], None], n: int) -> float:
    fn()  # warm
    start = time.thread_time()
    for _ in range(n):
        fn()
    return (time.thread_time() - start) / n


def measure(modes: Modes, client: openai.OpenAI, calls: int, rounds: int, chunks: int) -> tuple[dict[str, float], ...]:
    def chat() -> None:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    long_stream = {"x-fake-behavior": json.dumps({"chunks": chunks})}

    def stream() -> None:
        for _ in client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, extra_headers=long_stream
        ):
            pass

    per_call: dict[str, list[float]] = {m: [] for m in CALL_MODES}
    per_stream: dict[str, list[float]] = {m: [] for m in ("uninstrumented", "costspan")}
    for _ in range(rounds):
        for mode in CALL_MODES:
            modes.set(mode)
            per_call[mode].append(cpu_per_op(chat, calls))
        for mode, samples in per_stream.items():
            modes.set(mode)
            samples.append(cpu_per_op(stream, 3) / (chunks + 2))
    modes.set("none")
    return {m: min(v) for m, v in per_call.items()}, {m: min(v) for m, v in per_stream.items()}


def report(title: str, per_call: dict[str, float], per_chunk: dict[str, float]) -> None:
    base = per_call["uninstrumented"]
    print(title)
    print("  per chat call, client-thread CPU:")
    for mode, value in per_call.items():
        print(f"    {mode:15s} {value * 1e6:9.1f} µs   overhead {(value - base) * 1e6:+8.1f} µs")
    ours, peer = per_call["costspan"] - base, per_call["genai-openai"] - base
    if peer > 0:
        print(f"    ratio costspan overhead / genai-openai overhead = {ours / peer:.2f} (goal ≤ 1.00)")
    s_base, s_ours = per_chunk["uninstrumented"], per_chunk["costspan"]
    print(
        f"  per streamed chunk: uninstrumented {s_base * 1e6:.2f} µs, costspan {s_ours * 1e6:.2f} µs, "
        f"overhead {(s_ours - s_base) * 1e6:+.2f} µs (goal ≤ 2 µs)"
    )


def yardstick() -> float:
    """CPU of one json.loads of a typical 200-byte chunk: how fast is this machine right now."""
    data = _sse_events(1, True)[0][6:]
    n = 20000
    start = time.thread_time()
    for _ in range(n):
        json.loads(data)
    return (time.thread_time() - start) / n


def isolated_chunk_overhead(chunks: int, rounds: int) -> dict[str, float]:
    """costspan's own per-chunk CPU: its stream wrapper + body tap over pre-built SSE chunks, minus a
    bare iteration of the same chunks (no SDK, no network: the figure the 2 µs goal is about)."""
    from costspan.instrumentation._providers import Router
    from costspan.instrumentation._runtime import Runtime, Settings
    from costspan.instrumentation._stream import BodyTap
    from costspan.instrumentation._wrapper import SendWrapper

    rt = Runtime(Settings(), None, None, "bench", default_pricer(), TokenCounter())
    stream_type = SendWrapper(rt, httpx2, "bench")._sync_stream
    route = Router().route("api.openai.com", None, "/v1/chat/completions")
    assert route is not None
    out: dict[str, float] = {}
    for label, include_usage, filtering in (
        ("caller asked for usage (no filtering)", True, False),
        ("usage injected, usage chunk filtered", True, True),
        ("no usage requested, no injection", False, False),
    ):
        events = _sse_events(chunks, include_usage)
        best = float("inf")
        for _ in range(rounds):
            start = time.thread_time()
            for _ in events:
                pass
            bare = time.thread_time() - start
            tap = BodyTap(route, "text/event-stream", "", filtering, lambda t, e: None)
            start = time.thread_time()
            for _ in stream_type(_Events(events), tap, rt):
                pass
            best = min(best, (time.thread_time() - start - bare) / len(events))
        out[label] = best
    return out


def isolated_call_overhead(modes: Modes, rounds: int) -> float:
    """costspan's own CPU per non-streamed call: its send wrapper around a transport-free ``send``
    that returns a ready response (no SDK, no network), minus that bare ``send``."""
    from costspan.instrumentation._runtime import Runtime, Settings
    from costspan.instrumentation._wrapper import SendWrapper

    rt = Runtime(Settings(), modes.tp, modes.mp, "bench", modes.pricer, modes.tokens)
    wrapper = SendWrapper(rt, httpx2, "bench")
    request = httpx2.Request(
        "POST", "https://api.openai.com/v1/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES}
    )

    def send(req: httpx2.Request, stream: bool = False, **_: Any) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "application/json"}, content=CHAT_BODY, request=req)

    def bare() -> None:
        send(request)

    def ours() -> None:
        wrapper.sync_send(send, None, (request,), {})

    best = {"bare": float("inf"), "ours": float("inf")}
    for _ in range(rounds):
        best["bare"] = min(best["bare"], cpu_per_op(bare, 500))
        best["ours"] = min(best["ours"], cpu_per_op(ours, 500))
        modes.exporter.clear()
    return best["ours"] - best["bare"]


def python_calls_per_chat_call(modes: Modes, client: openai.OpenAI, calls: int = 100) -> dict[str, float]:
    """Python function calls per chat call in each mode (cProfile's count): deterministic, unlike CPU
    time on a shared machine, so the overhead comparison can be read without noise."""
    import cProfile
    import pstats

    out: dict[str, float] = {}
    for mode in CALL_MODES:
        modes.set(mode)
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(calls):
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        profile.disable()
        out[mode] = pstats.Stats(profile).total_calls / calls  # type: ignore[attr-defined]
    modes.set("none")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--calls", type=int, default=40, help="calls per round and mode")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--chunks", type=int, default=2000)
    args = ap.parse_args()

    modes = Modes()
    print(f"yardstick: json.loads of a 200-byte chunk = {yardstick() * 1e6:.2f} µs on this machine now")
    print("costspan's own CPU per streamed chunk (wrapper + tap, isolated; goal ≤ 2 µs):")
    for label, value in isolated_chunk_overhead(args.chunks, args.rounds).items():
        print(f"  {label:40s} {value * 1e6:6.2f} µs")
    print(
        f"costspan's own CPU per chat call (wrapper, span, pricing, metrics; isolated): "
        f"{isolated_call_overhead(modes, max(3, args.rounds // 4)) * 1e6:.1f} µs"
    )
    with mock_client(args.chunks) as client:
        counted = python_calls_per_chat_call(modes, client)
        base = counted["uninstrumented"]
        print("Python function calls added per chat call (deterministic):")
        for mode in CALL_MODES[1:]:
            print(f"  {mode:15s} {counted[mode] - base:+8.0f}")
        report(
            "in-memory transport (httpx2.MockTransport):", *measure(modes, client, args.calls, args.rounds, args.chunks)
        )
    with (
        fake_server_process() as url,
        openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0) as client,
    ):
        calls, rounds = args.calls, max(3, args.rounds // 3)
        report("fake provider on 127.0.0.1 (real sockets):", *measure(modes, client, calls, rounds, args.chunks))


if __name__ == "__main__":
    main()
