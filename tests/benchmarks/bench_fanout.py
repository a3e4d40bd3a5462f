"""What a read across shards costs: the same admin queries answered by one shard alone and merged
across 3 shards (docs/scale-out.md).

    .venv/bin/python -m tests.benchmarks.bench_fanout [--shards 3] [--tenants 30] [--calls 10000] [--requests 200]

Starts ``--shards`` real `costspan serve` processes that are each other's peers, logs ``--calls`` calls
over ``POST /api/usage/calls`` (spread over ``--tenants`` tenants and the shards), then times
``--requests`` sequential requests of each route twice from the first shard: as a peer asks
(``X-Costspan-Fanout``: its own data only) and as a client asks (fanned out and merged). Prints the
p50 and p99 latencies and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from tests.support.shards import ADMIN_KEY, Shard, run_shards

ROUTES: tuple[tuple[str, dict[str, str | int]], ...] = (
    ("/api/usage/costs/by-provider", {}),
    ("/v1/usage", {"scope": "global"}),
    ("/api/dashboard/summary", {"days": 1}),
)


def _log(shards: list[Shard], tenants: list[str], calls: int) -> None:
    with httpx.Client(headers={"X-API-Key": ADMIN_KEY}, timeout=30) as client:
        for n in range(0, calls, 500):
            shard = shards[(n // 500) % len(shards)]
            for i in range(n, min(n + 500, calls)):
                call = {
                    "provider": "openai",
                    "model": "gpt-4o" if i % 2 else "gpt-4o-mini",
                    "prompt_tokens": 100 + i % 50,
                    "completion_tokens": 10,
                    "tenant_id": tenants[i % len(tenants)],
                    "user_id": f"u{i % 97}",
                }
                answer = client.post(shard.url + "/api/usage/calls", json=call)
                answer.raise_for_status()


def _time(client: httpx.Client, url: str, params: dict[str, str | int], local: bool, requests: int) -> list[float]:
    headers = {"X-Costspan-Fanout": "1"} if local else {}
    out = []
    for _ in range(requests):
        t0 = time.perf_counter()
        client.get(url, params=params, headers=headers).raise_for_status()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q * 100) - 1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--tenants", type=int, default=30)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args(argv)
    tenants = [f"tenant-{i}" for i in range(args.tenants)]
    with tempfile.TemporaryDirectory() as tmp, run_shards(Path(tmp), args.shards, tenants) as shards:
        t0 = time.perf_counter()
        _log(shards, tenants, args.calls)
        print(f"costspan fan-out benchmark: {args.shards} shards, {args.tenants} tenants, {args.calls:,} calls")
        print(f"  logged in {time.perf_counter() - t0:.1f} s; {args.requests} sequential requests per route")
        with httpx.Client(headers={"X-API-Key": ADMIN_KEY}, timeout=30) as client:
            for path, params in ROUTES:
                url = shards[0].url + path
                _time(client, url, params, False, 5)  # warm the connections
                alone = _time(client, url, params, True, args.requests)
                merged = _time(client, url, params, False, args.requests)
                print(
                    f"  {path:32} one shard p50 {_p(alone, 0.5):6.2f} ms p99 {_p(alone, 0.99):6.2f} ms"
                    f" | merged p50 {_p(merged, 0.5):6.2f} ms p99 {_p(merged, 0.99):6.2f} ms"
                    f" | x{_p(merged, 0.5) / _p(alone, 0.5):.1f}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
