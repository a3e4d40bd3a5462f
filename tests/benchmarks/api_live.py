"""Live OTLP ingest beside the usage API benchmark's queries (``bench_api --ingest-rate``).

Paced senders (the ingest benchmark's :class:`~tests.benchmarks.bench_ingest.Sender`) post batches of
512 GenAI spans, starting now, for the tenants the queries read: every batch changes the newest day
and hour of those tenants, so the queries are timed while the sums they read keep changing.
"""

from __future__ import annotations

import statistics
import threading

from tests.benchmarks.bench_ingest import Sender, template

TENANTS = ("tenant-001", "tenant-002", "tenant-003", "tenant-004")


class LiveIngest:
    def __init__(self, url: str, key: str, rate: float, *, senders: int = 2, batch: int = 512) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        request = template(batch)
        for i, span in enumerate(request.resource_spans[0].scope_spans[0].spans):
            for attribute in span.attributes:
                if attribute.key == "costspan.tenant.id":
                    attribute.value.string_value = TENANTS[i % len(TENANTS)]
        self._stop = threading.Event()
        interval = senders * batch / rate
        self.senders = [
            Sender(
                url + "/v1/traces",
                request,
                start_id=(n + 1) * 10**12,
                batches=10**9,
                interval=interval,
                phase=n / senders,
                headers={"X-API-Key": key},
                stop=self._stop,
            )
            for n in range(senders)
        ]
        self._threads = [threading.Thread(target=s.run, daemon=True) for s in self.senders]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> str:
        """Stop sending; a line with what was acknowledged meanwhile."""
        self._stop.set()
        for thread in self._threads:
            thread.join(120)
        latencies = sorted(x for s in self.senders for x in s.latencies)
        acked = sum(s.acked for s in self.senders)
        if not latencies:
            return "live ingest: nothing acknowledged"
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        return (
            f"live ingest during the queries: {acked:,} spans acknowledged in {len(latencies)} batches, "
            f"ack p50 {statistics.median(latencies) * 1000:.1f} ms p99 {p99 * 1000:.1f} ms, "
            f"{sum(s.errors for s in self.senders)} retries"
        )
