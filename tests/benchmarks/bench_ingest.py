"""Ingest benchmark of `costspan serve`: sustained spans/s, ack latency, resident memory per million calls.

    .venv/bin/python -m tests.benchmarks.bench_ingest [--spans 1000000] [--senders 4] [--workers 2]
        [--fsync always] [--rate SPANS_PER_S] [--protocol http|grpc]

Starts the real server (``python -m costspan.processor.serve``) in its own process on a temp
data dir with the durable ledger (fsync before every 200), then sends OTLP protobuf batches of
512 GenAI spans (unique ids, realistic attributes) from ``--senders`` concurrent clients, as fast as
they are acknowledged or paced to ``--rate`` — over OTLP/HTTP or, with ``--protocol grpc``, as
``TraceService/Export`` calls on the server's OTLP/gRPC port (run it once with each to compare).
Reports spans/s, p50/p99 acknowledgement latency, CPU per span (server, ingest workers, client) and
the CPU-bound ceiling it implies, and the server's RSS growth per million stored calls. Also checks
that the ledger holds exactly the spans sent.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

MODELS = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-6"), ("openai", "o3")]
TENANTS = ["acme", "globex", "initech", "umbrella"]
GRPC_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def template(batch_size: int) -> ExportTraceServiceRequest:
    """One batch of GenAI spans; ids are rewritten for every send."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    for key, value in (("service.name", "checkout"), ("telemetry.sdk.language", "python")):
        rs.resource.attributes.add(key=key).value.string_value = value
    scope = rs.scope_spans.add()
    scope.scope.name = "opentelemetry.instrumentation.openai_v2"
    now = time.time_ns()
    for i in range(batch_size):
        provider, model = MODELS[i % len(MODELS)]
        span = scope.spans.add(name=f"chat {model}", kind=3)
        span.start_time_unix_nano = now
        span.end_time_unix_nano = now + 350_000_000 + i * 1000
        strings = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "gen_ai.response.model": model,
            "gen_ai.response.id": f"chatcmpl-{i:08d}",
            "costspan.tenant.id": TENANTS[i % len(TENANTS)],
            "server.address": "api.example.com",
        }
        for key, text in strings.items():
            span.attributes.add(key=key).value.string_value = text
        ints = {
            "gen_ai.usage.input_tokens": 1000 + i,
            "gen_ai.usage.output_tokens": 200 + i % 50,
            "gen_ai.usage.cache_read.input_tokens": 100,
            "gen_ai.request.max_tokens": 1024,
            "server.port": 443,
        }
        for key, number in ints.items():
            span.attributes.add(key=key).value.int_value = number
    return request


class Sender:
    """Sends the template over and over with fresh ids, patched into its serialized bytes.

    Serializing 512 spans per send would cost the client as much CPU as a good part of the server's
    work on this 2-core machine; the ids sit at fixed offsets, so the client only copies and patches.
    """

    def __init__(
        self,
        url: str,
        request: ExportTraceServiceRequest,
        start_id: int,
        batches: int,
        interval: float = 0.0,
        phase: float = 0.0,
        headers: dict[str, str] | None = None,
        stop: threading.Event | None = None,
        grpc_target: str = "",
    ) -> None:
        self.url = url
        self.grpc_target = grpc_target  # host:port: send over OTLP/gRPC instead of ``url``
        self.headers = {"Content-Type": "application/x-protobuf", **(headers or {})}
        self.stop = stop  # set: no further sends
        self.interval = interval  # seconds between sends (0: send as soon as the last one is acknowledged)
        self.phase = phase  # this sender's share of the interval before its first send (senders interleave)
        self.template, self.offsets = id_offsets(request)
        self.next_id = start_id
        self.batches = batches
        self.latencies: list[float] = []
        self.acked = 0
        self.errors = 0

    def bodies(self) -> Iterator[bytes]:
        for _ in range(self.batches):
            body = bytearray(self.template)
            for offset in self.offsets:
                self.next_id += 1
                raw = self.next_id.to_bytes(8, "big")
                body[offset : offset + 16] = raw * 2
                body[offset + 18 : offset + 26] = raw
            yield bytes(body)

    def run(self) -> None:
        if self.grpc_target:
            self.run_grpc()
            return
        # http.client, one keep-alive connection: a fraction of httpx's CPU per request
        url = urlsplit(self.url)
        connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=60)
        headers = self.headers
        due = time.perf_counter() + self.phase * self.interval
        try:
            for body in self.bodies():
                if self.stop is not None and self.stop.is_set():
                    break
                if self.interval:  # paced: latency is then the service time, not the queue of a saturated run
                    due += self.interval
                    time.sleep(max(0.0, due - time.perf_counter()))
                while True:
                    started = time.perf_counter()
                    connection.request("POST", url.path, body, headers)
                    response = connection.getresponse()
                    response.read()
                    if response.status == 200:
                        self.latencies.append(time.perf_counter() - started)
                        self.acked += len(self.offsets)
                        break
                    self.errors += 1
                    time.sleep(float(response.getheader("retry-after", "0.05")))
        finally:
            connection.close()

    def run_grpc(self) -> None:
        """Raw serialized bodies on one channel (no client-side protobuf work, as for HTTP)."""
        import grpc

        metadata = tuple((k.lower(), v) for k, v in self.headers.items() if k.lower() != "content-type")
        with grpc.insecure_channel(self.grpc_target) as channel:
            export: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(GRPC_EXPORT)
            for body in self.bodies():
                if self.stop is not None and self.stop.is_set():
                    break
                while True:
                    started = time.perf_counter()
                    try:
                        export(body, metadata=metadata, timeout=60)
                    except grpc.RpcError as error:
                        if error.code() is not grpc.StatusCode.UNAVAILABLE:
                            raise
                        self.errors += 1
                        time.sleep(0.05)
                        continue
                    self.latencies.append(time.perf_counter() - started)
                    self.acked += len(self.offsets)
                    break


def id_offsets(request: ExportTraceServiceRequest) -> tuple[bytes, list[int]]:
    """The serialized request and, per span, the offset of its trace id (its span id follows 2 bytes on)."""
    spans = request.resource_spans[0].scope_spans[0].spans
    for i, span in enumerate(spans):  # placeholders that occur nowhere else
        span.trace_id = b"\xfe\xfd" + i.to_bytes(4, "big") + b"\xfc" * 10
        span.span_id = b"\xfb" + i.to_bytes(4, "big") + b"\xfa" * 3
    body = request.SerializeToString()
    offsets = [body.index(b"\x0a\x10" + span.trace_id + b"\x12\x08" + span.span_id) + 2 for span in spans]
    return body, offsets


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=1_000_000, help="spans to send in the measured phase")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--fsync", choices=["always", "never"], default="always")
    parser.add_argument("--workers", type=int, default=2, help="server --ingest-workers")
    parser.add_argument(
        "--rate", type=float, default=0, help="offered spans/s, paced over the senders (0: as fast as acknowledged)"
    )
    parser.add_argument("--protocol", choices=["http", "grpc"], default="http", help="OTLP/HTTP or OTLP/gRPC")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="costspan-bench-") as tmp:
        port = free_port()
        grpc_port = free_port() if args.protocol == "grpc" else 0
        grpc_target = f"127.0.0.1:{grpc_port}" if grpc_port else ""
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "costspan.processor.serve",
                "--insecure-no-auth",
                "--port",
                str(port),
                "--grpc-port",
                str(grpc_port),
                "--data-dir",
                tmp,
                "--log-level",
                "warning",
                "--fsync",
                args.fsync,
                "--snapshot-interval-seconds",
                "30",
                "--ingest-workers",
                str(args.workers),
            ],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(["pricing", "instrumentation", "processor"])},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(url + "/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("server did not start")
                time.sleep(0.1)
            # warm-up
            Sender(url + "/v1/traces", template(args.batch), 10**15, 10, grpc_target=grpc_target).run()
            rss_before = rss_kib(server.pid)

            workers = children(server.pid)
            cpu_before = (cpu_seconds(server.pid), sum(cpu_seconds(w) for w in workers), time.process_time())
            per_sender = max(1, args.spans // args.batch // args.senders)
            senders = [
                Sender(
                    url + "/v1/traces",
                    template(args.batch),
                    (i + 1) * 10**12,
                    per_sender,
                    args.batch * args.senders / args.rate if args.rate else 0.0,
                    i / args.senders,
                    grpc_target=grpc_target,
                )
                for i in range(args.senders)
            ]
            threads = [threading.Thread(target=s.run) for s in senders]
            started = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - started
            cpu_after = (cpu_seconds(server.pid), sum(cpu_seconds(w) for w in workers), time.process_time())
            rss_after = rss_kib(server.pid)
            acked = sum(s.acked for s in senders)
            latencies = sorted(x for s in senders for x in s.latencies)
            retries = sum(s.errors for s in senders)

            def pct(q: float) -> float:
                return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

            per_million = (rss_after - rss_before) / 1024 / (acked / 1_000_000)
            print(
                f"costspan ingest benchmark (OTLP/{args.protocol.upper()}, fsync={args.fsync}, batch={args.batch}, "
                f"senders={args.senders}, "
                f"ingest workers={args.workers}, cpus={os.cpu_count()}, "
                f"offered {f'{args.rate:,.0f} spans/s' if args.rate else 'as fast as acknowledged'})"
            )
            print(f"  acknowledged spans   {acked:,} in {elapsed:.1f} s")
            print(f"  sustained throughput {acked / elapsed:,.0f} spans/s")
            worst = latencies[-1] * 1000
            print(f"  ack latency          p50 {pct(0.50):.1f} ms  p99 {pct(0.99):.1f} ms  max {worst:.1f} ms")
            print(f"  refused, retried     {retries} (503 / UNAVAILABLE)")
            main_cpu, worker_cpu, client_cpu = (a - b for a, b in zip(cpu_after, cpu_before, strict=True))
            print(
                f"  CPU per span         server {main_cpu / acked * 1e6:.1f} us + ingest workers "
                f"{worker_cpu / acked * 1e6:.1f} us (client {client_cpu / acked * 1e6:.1f} us); "
                f"load average {os.getloadavg()[0]:.2f}"
            )
            # on a shared machine the spans/s above depend on the neighbours; this does much less
            cores = os.cpu_count() or 1
            per_span = (main_cpu + worker_cpu + client_cpu) / acked
            print(
                f"  CPU-bound ceiling    {cores / per_span:,.0f} spans/s on {cores} idle cores "
                f"(all CPU per span, client included); the server process alone caps at {acked / main_cpu:,.0f}"
            )
            print(
                f"  server RSS           {rss_before / 1024:.0f} MiB -> {rss_after / 1024:.0f} MiB "
                f"({per_million:.0f} MiB per million calls)"
            )
            metrics = httpx.get(url + "/metrics").text
            requests = sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("costspan_requests_total{")
            )
            print(f"  /metrics requests    {requests:,.0f} (expected {acked + 10 * args.batch:,})")
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
        lines = sum(p.read_bytes().count(b"\n") for p in Path(tmp, "ledger").glob("segment-*.log"))
        print(f"  ledger records       {lines:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
