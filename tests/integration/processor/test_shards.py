"""Three real `costspan serve` shards on loopback, fed over OTLP/gRPC the way the Collector's
``load_balancing`` exporter feeds them (one exporter per shard, the shard chosen by the tenant
attribute): every tenant's totals, the global totals merged across shards, and what an admin query
answers once a shard is killed (docs/scale-out.md)."""

from __future__ import annotations

import re
import signal
import time
import zlib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costspan.processor.cluster import Peers
from tests.support.shards import ADMIN_KEY, Shard, run_shards

PEER_TIMEOUT_S = 1.0
TENANTS = [f"tenant-{i}" for i in range(6)]


@pytest.fixture
def shards(tmp_path: Path) -> Iterator[list[Shard]]:
    with run_shards(tmp_path, 3, TENANTS, peer_timeout_s=PEER_TIMEOUT_S) as started:
        yield started


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
    """The exact total of ``/api/usage/costs/by-provider`` (the seed's envelope)."""
    return Decimal(answer["data"]["total_cost"])


def _metric(shard: Shard, name: str) -> str:
    text = shard.get("/metrics").text
    return "\n".join(line for line in text.splitlines() if line.startswith(name))


def _routed(tenants: list[str], urls: tuple[str, ...]) -> dict[str, str]:
    """The shard the Collector sends each tenant to: a ring of its own (here crc32), not ``Peers.owner``."""
    return {t: urls[zlib.crc32(t.encode()) % len(urls)] for t in tenants}


def _calls(answer: dict[str, Any]) -> int:
    return sum(p["request_count"] for p in answer["data"]["providers"])


def test_three_shards_answer_every_tenant_and_the_global_totals_exactly(shards: list[Shard]) -> None:
    urls = tuple(sorted(s.url for s in shards))
    peers = Peers(self_url=urls[0], urls=urls)
    by_url = {s.url: s for s in shards}
    names = TENANTS
    routed = _routed(names, urls)
    assert set(routed.values()) == set(urls)
    sent = {t: 3 + n for n, t in enumerate(names)}
    # the load_balancing exporter's routing: one exporter per shard, the shard chosen by the tenant
    exporters = {
        s.url: OTLPSpanExporter(endpoint=s.grpc_target, insecure=True, headers={"x-api-key": ADMIN_KEY}) for s in shards
    }
    try:
        for n, tenant in enumerate(names):
            spans = _spans(tenant, sent[tenant], 1000 * (n + 1))
            assert exporters[routed[tenant]].export(spans) is SpanExportResult.SUCCESS
        # a re-balance: two spans of one tenant reach another shard — kept there
        moved = names[0]
        stranger = next(url for url in urls if url != routed[moved])
        assert exporters[stranger].export(_spans(moved, 2, 500)) is SpanExportResult.SUCCESS
    finally:
        for exporter in exporters.values():
            exporter.shutdown()
    held = {url: {t: n for t, n in sent.items() if routed[t] == url} for url in urls}
    held[stranger][moved] = 2
    for url in urls:  # calls stored on a shard for tenants another shard owns: counted as foreign
        foreign = sum(n for t, n in held[url].items() if peers.owner(t) != url)
        assert _metric(by_url[url], "costspan_foreign_tenant_spans_total").endswith(f" {foreign}.0")
    everything = {t: n + (2 if t == moved else 0) for t, n in sent.items()}

    # every shard's own sums (X-Costspan-Fanout: answered with its own data only)
    own = {s.url: s.json("/api/usage/costs/by-provider", local=True) for s in shards}
    assert {url: _calls(a) for url, a in own.items()} == {url: sum(held[url].values()) for url in urls}
    total_cost = sum((_cost(a) for a in own.values()), Decimal(0))
    assert total_cost > 0

    # every tenant, from any node, with an admin key or its own: all of its calls, wherever they are
    for tenant in names:
        per_shard = {url: by_url[url].json("/api/usage/costs/by-provider", tenant=tenant, local=True) for url in urls}
        tenant_cost = sum((_cost(a) for a in per_shard.values() if a["data"]["total_cost"]), Decimal(0))
        for shard in shards:
            for key in (ADMIN_KEY, shard.tenant_keys[tenant]):
                answer = shard.json("/api/usage/costs/by-provider", key, tenant=tenant)
                assert _calls(answer) == everything[tenant] and answer["partial"] is False, (tenant, shard.url)
                assert _cost(answer) == tenant_cost
        shard = shards[names.index(tenant) % len(shards)]
        usage = shard.json("/v1/usage", shard.tenant_keys[tenant], scope="tenant")
        assert usage["request_count"] == everything[tenant] and Decimal(usage["daily_cost_exact"]) == tenant_cost
        assert usage["daily_cost"] == float(tenant_cost)  # the number follows the merged exact sum
        # a read that cannot be merged comes from the shard holding most of the tenant's calls
        for shard in shards:
            rows = shard.json("/api/usage/export", shard.tenant_keys[tenant], format="json")
            assert len(rows) == sent[tenant] and {r["tenant_id"] for r in rows} == {tenant}
        # a proxied read has no more rights than its caller: another tenant's key is refused
        node = by_url[stranger if routed[tenant] != stranger else routed[moved]]
        other_key = next(k for t, k in node.tenant_keys.items() if t != tenant)
        assert node.get("/api/usage/costs/by-provider", other_key, tenant=tenant).status_code == 403
        assert node.get("/api/usage/export", other_key, tenant=tenant).status_code == 403
        assert node.get("/v1/usage", other_key, scope="global").status_code == 403

    # the global admin totals, from any node, merged across the shards: exactly the sum of what was sent
    total_calls = sum(everything.values())
    own_dashboards = [s.json("/api/dashboard/summary", local=True, days=1) for s in shards]
    for shard in shards:
        merged = shard.json("/api/usage/costs/by-provider")
        assert merged["partial"] is False and merged["failed_peers"] == []
        assert _calls(merged) == total_calls and _cost(merged) == total_cost
        assert set(merged) == {"success", "data", "partial", "failed_peers"} and merged["success"] is True
        data = merged["data"]
        assert sum(Decimal(p["cost"]) for p in data["providers"]) == total_cost
        # the seed's numbers are numbers, and the merged exact sums as numbers
        assert type(data["total_cost_usd"]) is float and data["total_cost_usd"] == float(total_cost)
        assert data["by_provider"] == {p["provider"]: float(Decimal(p["cost"])) for p in data["providers"]}
        assert data["period_days"] == 30 and sum(p["cost_percent"] for p in data["providers"]) == 100.0
        realtime = shard.json("/api/usage/metrics/realtime")
        assert set(realtime) == {"success", "data", "partial", "failed_peers"} and realtime["partial"] is False
        now = realtime["data"]
        assert now["total_requests"] == now["totals"]["request_count"] == total_calls
        assert Decimal(now["totals"]["cost"]) == total_cost and now["total_cost"] == float(total_cost)
        assert now["by_provider"]["openai"]["cost_usd"] == float(total_cost)
        assert type(now["avg_latency_ms"]) is int
        assert sum(h["request_count"] for h in now["hourly"]) == total_calls
        aggregates = shard.json("/api/usage/metrics/aggregates", days=1)["data"]
        assert sum(Decimal(r["cost"]) for r in aggregates["aggregates"]) == total_cost
        assert sum(r["total_requests"] for r in aggregates["aggregates"]) == total_calls
        assert all(r["total_cost_usd"] == float(Decimal(r["cost"])) for r in aggregates["aggregates"])
        assert isinstance(aggregates["start_date"], str) and isinstance(aggregates["end_date"], str)
        usage = shard.json("/v1/usage", scope="global")
        assert usage["request_count"] == total_calls and Decimal(usage["total_cost_today_exact"]) == total_cost
        assert usage["total_cost_today"] == float(total_cost)
        dashboard = shard.json("/api/dashboard/summary", days=1)
        # the dashboard shows 6 places: the sum of each shard's rounded figure (within half a unit each)
        assert dashboard["total_calls"] == total_calls
        assert Decimal(dashboard["total_cost_usd"]) == sum(Decimal(d["total_cost_usd"]) for d in own_dashboards)
        assert abs(Decimal(dashboard["total_cost_usd"]) - total_cost) <= Decimal("0.0000005") * len(urls)
        assert {row["tenant"]: row["calls"] for row in dashboard["by_tenant"]} == everything
        latency = shard.json("/api/usage/performance/latency")
        assert latency["exact"] is False and latency["partial"] is False and latency["success"] is True
        assert latency["data"]["request_count"] == latency["data"]["by_provider"]["openai"]["request_count"]
        assert latency["data"]["request_count"] == total_calls
        assert all(type(v) is int for v in latency["data"]["latency_percentiles_ms"].values())

    # kill one shard: reads answer within the timeout, partial, naming it, with what the living shards hold
    victim = by_url[urls[2]]
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(10)
    alive = [s for s in shards if s is not victim]
    alive_cost = sum((_cost(own[s.url]) for s in alive), Decimal(0))
    for shard in alive:
        t0 = time.monotonic()
        merged = shard.json("/api/usage/costs/by-provider")
        assert time.monotonic() - t0 < PEER_TIMEOUT_S + 2
        assert merged["partial"] is True and merged["failed_peers"] == [victim.url]
        assert _cost(merged) == alive_cost
        assert _calls(merged) == sum(sum(held[s.url].values()) for s in alive)
        for tenant in names:
            answer = shard.json("/api/usage/costs/by-provider", shard.tenant_keys[tenant])
            assert answer["partial"] is True and answer["failed_peers"] == [victim.url]
            assert _calls(answer) == sum(held[s.url].get(tenant, 0) for s in alive)
            export = shard.get("/api/usage/export", shard.tenant_keys[tenant], format="json")
            if any(tenant in held[s.url] for s in alive):
                assert export.status_code == 200
            else:  # only the dead shard held it
                assert export.status_code == 503, export.text
    failures = _metric(alive[0], "costspan_peer_failures_total")
    assert re.search(rf'peer="{re.escape(victim.url)}"\}} [1-9]', failures), failures
