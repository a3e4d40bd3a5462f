"""Three real `costspan serve` shards on loopback, fed over OTLP/gRPC the way the Collector's
``load_balancing`` exporter feeds them (one exporter per shard, the shard chosen by the tenant
attribute): every tenant's totals, the global totals merged across shards, and what an admin query
answers once a shard is killed (docs/scale-out.md)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costspan.processor.api import KeyStore
from costspan.processor.api._keys import KEYS_FILE
from costspan.processor.cluster import Peers

ROOT = Path(__file__).resolve().parents[3]
ADMIN_KEY = "cluster-test-admin-key-0123456789"
PEER_TIMEOUT_S = 1.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Shard:
    url: str
    grpc_target: str
    process: subprocess.Popen[bytes]
    tenant_keys: dict[str, str]

    def get(self, path: str, key: str = ADMIN_KEY, *, local: bool = False, **params: Any) -> httpx.Response:
        headers = {"X-API-Key": key, **({"X-Costspan-Fanout": "1"} if local else {})}
        return httpx.get(self.url + path, params=params, headers=headers, timeout=10)

    def json(self, path: str, key: str = ADMIN_KEY, *, local: bool = False, **params: Any) -> Any:
        answer = self.get(path, key, local=local, **params)
        assert answer.status_code == 200, answer.text
        return answer.json()


def _tenants(peers: Peers, per_shard: int = 2) -> dict[str, str]:
    """Tenant → owner URL, ``per_shard`` tenants owned by each shard (the ports decide who owns what)."""
    owned: dict[str, str] = {}
    counts = dict.fromkeys(peers.urls, 0)
    for i in range(1000):
        tenant = f"tenant-{i}"
        owner = peers.owner(tenant)
        if counts[owner] < per_shard:
            counts[owner] += 1
            owned[tenant] = owner
        if all(n == per_shard for n in counts.values()):
            return owned
    raise AssertionError("rendezvous hashing left a shard without tenants")


@pytest.fixture
def shards(tmp_path: Path) -> Iterator[list[Shard]]:
    ports = [_free_port() for _ in range(3)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    tenants = _tenants(Peers(self_url=urls[0], urls=tuple(urls)))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("pricing", "instrumentation", "processor")),
        "COSTSPAN_ADMIN_KEY": ADMIN_KEY,
    }
    # the same keys on every shard (a tenant's key is valid wherever its request lands)
    keys = KeyStore(tmp_path / "keys")
    tenant_keys = {t: keys.create("tenant", t)[1] for t in tenants}
    started: list[Shard] = []
    try:
        for port, url in zip(ports, urls, strict=True):
            data = tmp_path / f"shard-{port}"
            data.mkdir(mode=0o700)
            shutil.copy2(keys.path, data / KEYS_FILE)
            grpc_port = _free_port()
            args = ["--port", str(port), "--grpc-port", str(grpc_port), "--data-dir", str(data)]
            args += ["--peers", ",".join(urls), "--node-url", url, "--peer-key", ADMIN_KEY]
            args += ["--peer-timeout", str(PEER_TIMEOUT_S), "--log-level", "warning", "--fsync", "never"]
            process = subprocess.Popen(
                [sys.executable, "-m", "costspan.processor.serve", *args], env=env, stdout=subprocess.DEVNULL
            )
            started.append(Shard(url, f"127.0.0.1:{grpc_port}", process, tenant_keys))
        deadline = time.monotonic() + 60
        waiting = list(started)
        while waiting and time.monotonic() < deadline:
            shard = waiting[0]
            assert shard.process.poll() is None, "a shard exited at start-up"
            try:
                if httpx.get(shard.url + "/readyz", timeout=1).status_code == 200:
                    waiting.pop(0)
                    continue
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        assert not waiting, "shards did not become ready"
        yield started
    finally:
        for shard in started:
            if shard.process.poll() is None:
                shard.process.send_signal(signal.SIGTERM)
        for shard in started:
            try:
                shard.process.wait(15)
            except subprocess.TimeoutExpired:
                shard.process.kill()
                shard.process.wait(5)


def _spans(tenant: str, n: int, tokens: int) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": f"app-{tenant}"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("shards")
    for i in range(n):
        attrs = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o" if i % 2 else "gpt-4o-mini",
            "gen_ai.usage.input_tokens": tokens + i,
            "gen_ai.usage.output_tokens": tokens // 10,
            "costspan.tenant.id": tenant,
        }
        with tracer.start_as_current_span("chat", attributes=attrs):
            pass
    spans = list(memory.get_finished_spans())
    provider.shutdown()
    return spans


def _cost(answer: dict[str, Any]) -> Decimal:
    return Decimal(answer["total_cost"])


def _metric(shard: Shard, name: str) -> str:
    text = shard.get("/metrics").text
    return "\n".join(line for line in text.splitlines() if line.startswith(name))


def test_three_shards_answer_every_tenant_and_the_global_totals_exactly(shards: list[Shard]) -> None:
    urls = tuple(sorted(s.url for s in shards))
    peers = Peers(self_url=urls[0], urls=urls)
    by_url = {s.url: s for s in shards}
    tenants = _tenants(peers)
    sent: dict[str, int] = {}
    # the load_balancing exporter's routing: one exporter per shard, the shard chosen by the tenant
    exporters = {
        s.url: OTLPSpanExporter(endpoint=s.grpc_target, insecure=True, headers={"x-api-key": ADMIN_KEY}) for s in shards
    }
    try:
        for n, (tenant, owner) in enumerate(sorted(tenants.items())):
            sent[tenant] = 3 + n
            assert exporters[owner].export(_spans(tenant, sent[tenant], 1000 * (n + 1))) is SpanExportResult.SUCCESS
        # a re-balance: two spans of one tenant reach a shard that does not own it — kept, and counted
        moved, moved_owner = sorted(tenants.items())[0]
        stranger = next(url for url in urls if url != moved_owner)
        assert exporters[stranger].export(_spans(moved, 2, 500)) is SpanExportResult.SUCCESS
    finally:
        for exporter in exporters.values():
            exporter.shutdown()
    assert _metric(by_url[stranger], "costspan_foreign_tenant_spans_total") == "costspan_foreign_tenant_spans_total 2.0"
    assert _metric(by_url[moved_owner], "costspan_foreign_tenant_spans_total").endswith(" 0.0")

    # every shard's own sums (X-Costspan-Fanout: answered with its own data only)
    own = {s.url: s.json("/api/usage/costs/by-provider", local=True) for s in shards}
    total_calls = sum(sent.values()) + 2
    total_cost = sum((_cost(a) for a in own.values()), Decimal(0))
    assert total_cost > 0

    # every tenant: the owner answers, and any node answers the same (proxied to the owner)
    for tenant, owner in tenants.items():
        expected = sent[tenant]
        for shard in shards:
            for key in (ADMIN_KEY, shard.tenant_keys[tenant]):
                answer = shard.json("/api/usage/costs/by-provider", key, tenant=tenant)
                calls = sum(p["request_count"] for p in answer["providers"])
                assert calls == expected, (tenant, shard.url, owner)
                assert (
                    answer["total_cost"]
                    == by_url[owner].json("/api/usage/costs/by-provider", tenant=tenant)["total_cost"]
                )
        assert by_url[owner].json("/v1/usage", scope="tenant", tenant_id=tenant)["request_count"] == expected
        # a proxied read has no more rights than its caller: another tenant's key is refused, by the owner
        stranger_node = next(s for s in shards if s.url != owner)
        other_key = next(k for t, k in stranger_node.tenant_keys.items() if t != tenant)
        refused = stranger_node.get("/api/usage/costs/by-provider", other_key, tenant=tenant)
        assert refused.status_code == 403, refused.text
        assert stranger_node.get("/v1/usage", other_key, scope="global").status_code == 403

    # the global admin totals, from any node, merged across the shards: exactly the sum of what was sent
    for shard in shards:
        merged = shard.json("/api/usage/costs/by-provider")
        assert merged["partial"] is False and merged["failed_peers"] == []
        assert sum(p["request_count"] for p in merged["providers"]) == total_calls
        assert _cost(merged) == total_cost
        assert sum(Decimal(p["cost"]) for p in merged["providers"]) == total_cost
        usage = shard.json("/v1/usage", scope="global")
        assert usage["request_count"] == total_calls and Decimal(usage["total_cost_today"]) == total_cost
        dashboard = shard.json("/api/dashboard/summary", days=1)
        assert dashboard["total_calls"] == total_calls and Decimal(dashboard["total_cost_usd"]) == total_cost
        assert {row["tenant"] for row in dashboard["by_tenant"]} == set(tenants)
        latency = shard.json("/api/usage/performance/latency")
        assert latency["exact"] is False and latency["partial"] is False

    # kill one shard: admin queries answer within the timeout, partial, naming it
    victim = by_url[urls[2]]
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(10)
    alive = [s for s in shards if s is not victim]
    for shard in alive:
        t0 = time.monotonic()
        merged = shard.json("/api/usage/costs/by-provider")
        assert time.monotonic() - t0 < PEER_TIMEOUT_S + 2
        assert merged["partial"] is True and merged["failed_peers"] == [victim.url]
        assert _cost(merged) == sum((_cost(own[s.url]) for s in alive), Decimal(0))
    # the tenants of the living shards are answered in full, from any living node; the victim's are refused
    for tenant, owner in tenants.items():
        for shard in alive:
            answer = shard.get("/api/usage/costs/by-provider", tenant=tenant)
            if owner == victim.url:
                assert answer.status_code == 503 and victim.url in answer.json()["detail"]
            else:
                assert sum(p["request_count"] for p in answer.json()["providers"]) == sent[tenant]
    failures = _metric(alive[0], "costspan_peer_failures_total")
    assert re.search(rf'peer="{re.escape(victim.url)}"\}} [1-9]', failures), failures
