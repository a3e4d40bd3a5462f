"""Client CPU overhead of costspan's instrumentation, side by side with genai-openai, in one run.

    .venv/bin/python -m tests.benchmarks.bench_instrumentation [--calls 20] [--rounds 61] [--chunks 2000]

What is measured is CPU time, not wall time: the calling thread's (``time.thread_time``) and the
whole process's (``time.process_time``), of the real openai 3.x SDK, sync, per chat call and per
streamed chunk, in these modes: uninstrumented, costspan, opentelemetry-instrumentation-genai-openai
1.3b0 (the peer) and both. All modes share one SDK TracerProvider (SimpleSpanProcessor → in-memory
exporter) and MeterProvider (in-memory reader).

Two transports:
- an in-memory ``httpx2.MockTransport`` (no network: the least noisy view of the overhead);
- the fake provider on 127.0.0.1 in a child process (real sockets; its CPU is not the client's).

Per streamed chunk only costspan's own CPU is measured (its byte-stream wrapper and body tap over
pre-built SSE chunks): the SDK itself spends 100-200 µs per chunk on this kind of machine, which no
number of rounds resolves to the microsecond.

On a shared, noisy machine one figure per mode is not enough. The modes are interleaved in many
short rounds (the order rotates and reverses from round to round, so drift hits every mode alike);
each round gives one ratio ``costspan overhead / peer overhead``, each overhead measured against the
uninstrumented run of the same round. The report is the median of those per-round ratios with a
distribution-free 95 % interval for the median (order statistics), and the medians of the overheads.
Objects made during set-up are frozen out of the garbage collector's way (``gc.freeze``) so that a
collection costs every mode alike.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
CLOCKS = {"thread": time.thread_time, "process": time.process_time}
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
        [sys.executable, "-m", "costspan.processor._demo.fake_provider"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
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


def cpu_per_op(fn: Callable[[], None], n: int) -> dict[str, float]:
    """CPU seconds per call of ``fn`` on each clock (two warm-up calls first)."""
    fn()
    fn()
    t0, p0 = time.thread_time(), time.process_time()
    for _ in range(n):
        fn()
    return {"thread": (time.thread_time() - t0) / n, "process": (time.process_time() - p0) / n}


def median_interval(values: list[float]) -> tuple[float, float, float]:
    """(median, low, high): a distribution-free ~95 % interval for the median (binomial order statistics)."""
    v = sorted(values)
    n = len(v)
    k = max(0, math.floor(n / 2 - 0.98 * math.sqrt(n)))  # normal approximation of Binomial(n, 1/2)
    return statistics.median(v), v[k], v[n - 1 - k]


def _order(modes: tuple[str, ...], r: int) -> tuple[str, ...]:
    rotated = modes[r % len(modes) :] + modes[: r % len(modes)]
    return rotated if r % 2 == 0 else rotated[::-1]


@dataclass
class Rounds:
    """Per-round CPU seconds per operation, by clock and mode."""

    samples: dict[str, dict[str, list[float]]]

    def overheads(self, clock: str, mode: str, base: str = "uninstrumented") -> list[float]:
        s = self.samples[clock]
        return [m - b for m, b in zip(s[mode], s[base], strict=True)]

    def ratios(self, clock: str, mode: str, peer: str) -> list[float]:
        return [
            o / p if p > 0 else math.inf
            for o, p in zip(self.overheads(clock, mode), self.overheads(clock, peer), strict=True)
        ]


def interleaved(modes: Modes, ops: dict[str, Callable[[], None]], n: int, rounds: int) -> Rounds:
    """Run each op ``n`` times per round for ``rounds`` rounds, the order changing every round."""
    names = tuple(ops)
    samples: dict[str, dict[str, list[float]]] = {c: {m: [] for m in names} for c in CLOCKS}
    for r in range(rounds):
        for mode in _order(names, r):
            modes.set(mode)
            gc.collect()
            for clock, value in cpu_per_op(ops[mode], n).items():
                samples[clock][mode].append(value)
    modes.set("none")
    return Rounds(samples)


def measure_calls(modes: Modes, client: openai.OpenAI, calls: int, rounds: int) -> Rounds:
    def chat() -> None:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    return interleaved(modes, dict.fromkeys(CALL_MODES, chat), calls, rounds)


def _us(values: list[float]) -> str:
    med, low, high = median_interval(values)
    return f"{med * 1e6:8.1f} µs  [{low * 1e6:7.1f} … {high * 1e6:7.1f}]"


def report(title: str, calls: Rounds) -> None:
    print(title)
    n = len(calls.samples["thread"]["uninstrumented"])
    for clock in CLOCKS:
        s = calls.samples[clock]
        print(f"  per chat call, {clock} CPU, median [95 % interval] over {n} rounds:")
        print(f"    {'uninstrumented':15s} {_us(s['uninstrumented'])}")
        for mode in CALL_MODES[1:]:
            print(f"    {mode:15s} overhead {_us(calls.overheads(clock, mode))}")
        med, low, high = median_interval(calls.ratios(clock, "costspan", "genai-openai"))
        print(f"    costspan/genai-openai overhead ratio: median {med:.2f} [{low:.2f} … {high:.2f}] (goal < 1)")
        envelope = (min(s["costspan"]) - min(s["uninstrumented"])) / (min(s["genai-openai"]) - min(s["uninstrumented"]))
        print(f"    (ratio of the fastest rounds' overheads, the lower envelope: {envelope:.2f})")


def yardstick() -> float:
    """CPU of one json.loads of a typical 200-byte chunk: how fast is this machine right now."""
    data = _sse_events(1, True)[0][6:]
    n = 20000
    start = time.thread_time()
    for _ in range(n):
        json.loads(data)
    return (time.thread_time() - start) / n


def isolated_chunk_overhead(chunks: int, rounds: int) -> dict[str, list[float]]:
    """costspan's own per-chunk CPU: its stream wrapper + body tap over pre-built SSE chunks, minus a
    bare iteration of the same chunks (no SDK, no network: the figure the 2 µs goal is about).
    The three cases are interleaved round by round; one sample per case and round."""
    from costspan.instrumentation._providers import Router
    from costspan.instrumentation._runtime import Runtime, Settings
    from costspan.instrumentation._stream import BodyTap
    from costspan.instrumentation._wrapper import SendWrapper

    rt = Runtime(Settings(), None, None, "bench", default_pricer(), TokenCounter())
    stream_type = SendWrapper(rt, httpx2, "bench")._sync_stream
    route = Router().route("api.openai.com", None, "/v1/chat/completions")
    assert route is not None
    injected = _sse_events(chunks, True)
    cases = {
        "caller asked for usage (no filtering)": (_sse_events(chunks, True), False),
        "usage injected, usage chunk filtered": (injected, True),
        "no usage requested, no injection": (_sse_events(chunks, False), False),
        # a network that coalesces events: per event, not per chunk
        "injected, 4 events a chunk (per event)": (
            [b"".join(injected[i : i + 4]) for i in range(0, len(injected), 4)],
            True,
        ),
    }
    out: dict[str, list[float]] = {label: [] for label in cases}
    for r in range(rounds):
        for label in _order(tuple(cases), r):
            events, filtering = cases[label]
            start = time.thread_time()
            for _ in events:
                pass
            bare = time.thread_time() - start
            tap = BodyTap(route, "text/event-stream", "", filtering, lambda t, e: None)
            start = time.thread_time()
            for _ in stream_type(_Events(events), tap, rt):
                pass
            out[label].append((time.thread_time() - start - bare) / len(injected if "4 events" in label else events))
    return out


def isolated_call_overhead(modes: Modes, rounds: int) -> list[float]:
    """costspan's own CPU per non-streamed call: its send wrapper around a transport-free ``send``
    that returns an unread response, as a transport does (no SDK, no network), minus that bare
    ``send``; one sample a round."""
    from costspan.instrumentation._runtime import Runtime, Settings
    from costspan.instrumentation._wrapper import SendWrapper

    rt = Runtime(Settings(), modes.tp, modes.mp, "bench", modes.pricer, modes.tokens)
    wrapper = SendWrapper(rt, httpx2, "bench")
    request = httpx2.Request(
        "POST", "https://api.openai.com/v1/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES}
    )

    def send(req: httpx2.Request, stream: bool = False, **_: Any) -> httpx2.Response:
        response = httpx2.Response(
            200, headers={"content-type": "application/json"}, stream=_Events([CHAT_BODY]), request=req
        )
        if not stream:
            response.read()
        return response

    def bare() -> None:
        send(request)

    def ours() -> None:
        wrapper.sync_send(send, None, (request,), {})

    out: list[float] = []
    for r in range(rounds):
        gc.collect()
        if r % 2:
            t_ours, t_bare = cpu_per_op(ours, 200)["thread"], cpu_per_op(bare, 200)["thread"]
        else:
            t_bare, t_ours = cpu_per_op(bare, 200)["thread"], cpu_per_op(ours, 200)["thread"]
        out.append(t_ours - t_bare)
        modes.exporter.clear()
    return out


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
    ap.add_argument("--calls", type=int, default=20, help="calls per round and mode")
    ap.add_argument("--rounds", type=int, default=61)
    ap.add_argument("--chunks", type=int, default=2000)
    ap.add_argument("--no-socket", action="store_true", help="skip the fake provider over real sockets")
    args = ap.parse_args()

    modes = Modes()
    gc.collect()
    gc.freeze()
    print(f"yardstick: json.loads of a 200-byte chunk = {yardstick() * 1e6:.2f} µs on this machine now")
    print(
        f"costspan's own CPU per streamed chunk (wrapper + tap, isolated, thread CPU; goal ≤ 2 µs), "
        f"{args.rounds} rounds:"
    )
    for label, values in isolated_chunk_overhead(args.chunks, args.rounds).items():
        print(f"  {label:40s} median {_us(values)}  min {min(values) * 1e6:.2f} µs")
    own = isolated_call_overhead(modes, max(5, args.rounds // 2))
    print(f"costspan's own CPU per chat call (wrapper, span, pricing, metrics; isolated): median {_us(own)}")
    with mock_client(args.chunks) as client:
        counted = python_calls_per_chat_call(modes, client)
        base = counted["uninstrumented"]
        print("Python function calls added per chat call (deterministic):")
        for mode in CALL_MODES[1:]:
            print(f"  {mode:15s} {counted[mode] - base:+8.0f}")
        report(
            "in-memory transport (httpx2.MockTransport):",
            measure_calls(modes, client, args.calls, args.rounds),
        )
    if args.no_socket:
        return
    with (
        fake_server_process() as url,
        openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0) as client,
    ):
        report(
            "fake provider on 127.0.0.1 (real sockets):",
            measure_calls(modes, client, args.calls, args.rounds),  # as many rounds: sockets are noisier
        )


if __name__ == "__main__":
    main()
