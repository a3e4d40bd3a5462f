"""The usage routes of ``bench_realistic``: listed from ``/openapi.json``, timed, and the whole CSV export."""

from __future__ import annotations

import json
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.benchmarks.bench_api_client import LeanClient

__all__ = ["Route", "export_csv", "global_usage", "time_routes", "usage_routes"]

# --- the usage routes ------------------------------------------------------------------------------
Route = tuple[str, dict[str, Any]]  # (path, query)


def usage_routes(url: str, admin: str, tenant: str, workflow: str) -> list[Route]:
    """Every usage GET route of ``/openapi.json``: for all tenants and, where it takes one, for ``tenant``."""
    spec = httpx.get(url + "/openapi.json", headers={"X-API-Key": admin}, timeout=30).json()
    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    routes: list[Route] = []
    for template, operations in spec["paths"].items():
        if "get" not in operations or "budget" in template or not template.startswith(("/v1/usage", "/api/")):
            continue
        if template.startswith("/api/cluster/"):  # the shards' own bookkeeping, not a usage read
            continue
        params = {p["name"]: p for p in operations["get"].get("parameters", [])}
        path = template.replace("{workspace_id}", tenant).replace("{execution_id}", workflow)
        if "{" in path:
            raise RuntimeError(f"no value for a path parameter of {template}")
        if path == "/api/usage/export":  # one tenant's last full day (the whole export is timed apart)
            routes.append((path, {"format": "csv", "from": yesterday, "to": yesterday, "tenant": tenant}))
            continue
        query: dict[str, Any] = {"days": 30} if "days" in params else {}
        if "period_days" in params:
            query["period_days"] = 30
        if "scope" in params:  # /v1/usage: every tenant, and one tenant's daily series
            routes.append((path, {"scope": "global", **query}))
            routes.append((path, {"scope": "tenant", "tenant_id": tenant, **query}))
            continue
        if "{" in template:  # the path names the tenant or the workflow
            routes.append((path, query))
            continue
        routes.append((path, query))
        for name in ("tenant", "tenant_id"):
            if name in params:
                routes.append((path, {**query, name: tenant}))
    return routes


def _label(route: Route) -> str:
    path, query = route
    return path + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def time_routes(
    port: int, admin: str, routes: list[Route], requests: int, export_requests: int
) -> dict[str, tuple[float, float, float]]:
    """Per route: (p50, p99, max) ms of sequential requests over one keep-alive connection."""
    results = {}
    with LeanClient("127.0.0.1", port) as client:
        for route in routes:
            raw = client.request(route[0], route[1], {"X-API-Key": admin})
            n, warm = (export_requests, 1) if route[0] == "/api/usage/export" else (requests, max(3, requests // 10))
            times = []
            for i in range(warm + n):
                t = time.perf_counter()
                status, body = client.send(raw)
                took = time.perf_counter() - t
                if status != 200:
                    raise RuntimeError(f"GET {_label(route)}: {status} {body[:300]!r}")
                if i >= warm:
                    times.append(took * 1000)
            times.sort()
            results[_label(route)] = (
                statistics.median(times),
                times[min(len(times) - 1, int(0.99 * len(times)))],
                times[-1],
            )
    return results


def export_csv(url: str, admin: str) -> tuple[int, float]:
    """The whole CSV export of the last 31 days for every tenant: (rows, seconds)."""
    today = datetime.now(UTC).date()
    query = {"format": "csv", "from": (today - timedelta(days=31)).isoformat(), "to": today.isoformat()}
    rows = 0
    t0 = time.perf_counter()
    headers = {"X-API-Key": admin}
    with (
        httpx.Client(timeout=3600) as client,
        client.stream("GET", url + "/api/usage/export", params=query, headers=headers) as r,
    ):
        r.raise_for_status()
        for chunk in r.iter_bytes():
            rows += chunk.count(b"\n")
    return rows - 1, time.perf_counter() - t0  # the header row


def global_usage(port: int, admin: str) -> Any:
    with LeanClient("127.0.0.1", port) as client:
        answer = json.loads(client.get("/v1/usage", {"scope": "global", "period": "monthly"}, {"X-API-Key": admin}))
    return {k: v for k, v in answer.items() if k not in ("generated_at", "last_updated", "timestamp")}
