"""Compute resource usage (cpu, memory, gpu, storage, bandwidth, sandbox): a small durable log + sums.

Each entry is priced by the catalog's resource prices when it arrives and appended, fsynced, as one
JSON line to ``<data dir>/resources/usage.jsonl``; start-up reads the file back into the sums.
Entry ids (the idempotency keys) are per tenant: two tenants' entries may carry the same id.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Final

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from costspan.processor.store._files import private_dir, private_open

__all__ = ["RESOURCE_KINDS", "ComputeCollector", "KindSums", "ResourceEntry", "ResourceLog"]

logger = logging.getLogger(__name__)

#: API kind -> catalog resource id.
RESOURCE_KINDS: Final = {
    "cpu": "cpu_core_hour",
    "memory": "memory_gb_hour",
    "gpu": "gpu_hour",
    "storage": "storage_gb_month",
    "bandwidth": "bandwidth_gb",
    "sandbox": "sandbox_minute",
}
_DAY_S: Final = 86400


@dataclass(frozen=True, slots=True)
class ResourceEntry:
    id: str
    at: float
    tenant: str
    workflow: str
    project: str
    kind: str
    resource: str
    quantity: Decimal  # in the catalog unit (core-hours, GB-hours, ...)
    cost_usd: Decimal
    amount: Decimal | None = None  # the usage value as reported (cores, GB, ...); None: written before it was kept
    unit: str = ""  # the unit the report named (the seed's ``unit``), informational


@dataclass(slots=True)
class KindSums:
    """One resource type's sums: cost (USD), usage (the reported values), records."""

    cost: Decimal = Decimal(0)
    usage: Decimal = Decimal(0)
    count: int = 0

    def add(self, other: KindSums) -> None:
        self.cost += other.cost
        self.usage += other.usage
        self.count += other.count


class ResourceLog:
    def __init__(self, directory: Path) -> None:
        self.path = directory / "usage.jsonl"
        self.lock = threading.Lock()
        self.by_day: dict[tuple[str, int], dict[str, Decimal]] = {}  # (tenant, day) -> resource -> USD
        self.by_workflow: dict[tuple[str, str], dict[str, Decimal]] = {}
        self.quantity_by_day: dict[tuple[str, int], dict[str, Decimal]] = {}  # (tenant, day) -> resource -> units
        self.ids: set[tuple[str, str]] = set()  # (tenant, id): each tenant has its own ids
        self.kinds_by_day: dict[tuple[str, int], dict[str, KindSums]] = {}  # (tenant, day) -> kind -> sums
        self.kinds_by_workflow: dict[tuple[str, str], dict[str, KindSums]] = {}
        self.kind_totals: dict[tuple[str, str], KindSums] = {}  # (tenant, kind) -> since the log began
        self._loaded = False

    def _fold(self, e: ResourceEntry) -> None:
        day = int(e.at) - int(e.at) % _DAY_S
        for into in (self.by_day.setdefault((e.tenant, day), {}),) + (
            (self.by_workflow.setdefault((e.tenant, e.workflow), {}),) if e.workflow else ()
        ):
            into[e.resource] = into.get(e.resource, Decimal(0)) + e.cost_usd
        units = self.quantity_by_day.setdefault((e.tenant, day), {})
        units[e.resource] = units.get(e.resource, Decimal(0)) + e.quantity
        usage = e.quantity if e.amount is None else e.amount
        for kinds in (self.kinds_by_day.setdefault((e.tenant, day), {}),) + (
            (self.kinds_by_workflow.setdefault((e.tenant, e.workflow), {}),) if e.workflow else ()
        ):
            kinds.setdefault(e.kind, KindSums()).add(KindSums(e.cost_usd, usage, 1))
        self.kind_totals.setdefault((e.tenant, e.kind), KindSums()).add(KindSums(e.cost_usd, usage, 1))
        self.ids.add((e.tenant, e.id))

    def load(self) -> None:
        with self.lock:
            if self._loaded:
                return
            self._loaded = True
            if not self.path.exists():
                return
            with self.path.open("rb") as fh:
                for raw in fh:
                    try:
                        d = json.loads(raw)
                        d["quantity"], d["cost_usd"] = Decimal(d["quantity"]), Decimal(d["cost_usd"])
                        if d.get("amount") is not None:
                            d["amount"] = Decimal(d["amount"])
                        self._fold(ResourceEntry(**d))
                    except (ValueError, TypeError, KeyError):
                        logger.warning("resource log: unreadable line skipped")

    def append(self, e: ResourceEntry) -> bool:
        """Store ``e`` durably; False if its tenant already stored an entry with its id."""
        self.load()
        with self.lock:
            if (e.tenant, e.id) in self.ids:
                return False
            line = json.dumps(
                {
                    **{k: getattr(e, k) for k in ResourceEntry.__slots__},
                    "quantity": str(e.quantity),
                    "cost_usd": str(e.cost_usd),
                    "amount": None if e.amount is None else str(e.amount),
                },
                separators=(",", ":"),
            )
            private_dir(self.path.parent)
            fd = private_open(self.path, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, line.encode() + b"\n")
                os.fdatasync(fd)
            finally:
                os.close(fd)
            self._fold(e)
            return True

    def days(self, tenant: str, first: int, last: int) -> dict[int, dict[str, Decimal]]:
        self.load()
        with self.lock:
            return {d: dict(v) for (t, d), v in self.by_day.items() if t == tenant and first <= d <= last}

    def kinds(self, tenant: str, first: int, last: int) -> dict[str, KindSums]:
        """Per resource type (cpu, memory, ...), the sums of the days ``first`` to ``last`` (day starts)."""
        self.load()
        out: dict[str, KindSums] = {}
        with self.lock:
            for (t, d), v in self.kinds_by_day.items():
                if t == tenant and first <= d <= last:
                    for k, sums in v.items():
                        out.setdefault(k, KindSums()).add(sums)
        return out

    def workflow_kinds(self, tenant: str | None, workflow: str) -> dict[str, KindSums]:
        """Per resource type, the sums of one workflow (of one tenant, or of all for ``None``)."""
        self.load()
        out: dict[str, KindSums] = {}
        with self.lock:
            for (t, w), v in self.kinds_by_workflow.items():
                if w == workflow and (tenant is None or t == tenant):
                    for k, sums in v.items():
                        out.setdefault(k, KindSums()).add(sums)
        return out

    def totals(self, tenant: str | None, first: int, last: int) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
        """(USD, quantity in the catalog unit) per resource of the days ``first``..``last`` of one tenant
        (None: every tenant)."""
        self.load()
        cost: dict[str, Decimal] = {}
        units: dict[str, Decimal] = {}
        with self.lock:
            for source, into in ((self.by_day, cost), (self.quantity_by_day, units)):
                for (t, d), v in source.items():
                    if (tenant is None or t == tenant) and first <= d <= last:
                        for k, x in v.items():
                            into[k] = into.get(k, Decimal(0)) + x
        return cost, units

    def workflow(self, tenant: str | None, workflow: str) -> dict[str, Decimal]:
        self.load()
        out: dict[str, Decimal] = {}
        with self.lock:
            for (t, w), v in self.by_workflow.items():
                if w == workflow and (tenant is None or t == tenant):
                    for k, c in v.items():
                        out[k] = out.get(k, Decimal(0)) + c
        return out


class ComputeCollector(Collector):
    """``costspan_compute_cost_usd_total`` and ``costspan_compute_records_total`` by tenant and
    resource type, fresh on every scrape. A scrape never fails: an error is logged and skipped."""

    def __init__(self, log: ResourceLog) -> None:
        self._log = log

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: families depend on the data

    def collect(self) -> Iterator[Metric]:
        labels = ["tenant", "resource_type"]
        cost = CounterMetricFamily("costspan_compute_cost_usd", "Cost of compute resources reported.", labels=labels)
        records = CounterMetricFamily("costspan_compute_records", "Compute usage reports stored.", labels=labels)
        try:
            self._log.load()
            with self._log.lock:
                totals = sorted((k, (float(v.cost), v.count)) for k, v in self._log.kind_totals.items())
            for (tenant, kind), (usd, count) in totals:
                cost.add_metric([tenant, kind], usd)
                records.add_metric([tenant, kind], count)
        except Exception:
            logger.exception("collecting compute metrics failed")
        yield cost
        yield records
