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
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Final

from costspan.processor.store._files import private_dir, private_open

__all__ = ["RESOURCE_KINDS", "ResourceEntry", "ResourceLog"]

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


class ResourceLog:
    def __init__(self, directory: Path) -> None:
        self.path = directory / "usage.jsonl"
        self.lock = threading.Lock()
        self.by_day: dict[tuple[str, int], dict[str, Decimal]] = {}  # (tenant, day) -> resource -> USD
        self.by_workflow: dict[tuple[str, str], dict[str, Decimal]] = {}
        self.quantity_by_day: dict[tuple[str, int], dict[str, Decimal]] = {}  # (tenant, day) -> resource -> units
        self.ids: set[tuple[str, str]] = set()  # (tenant, id): each tenant has its own ids
        self._loaded = False

    def _fold(self, e: ResourceEntry) -> None:
        day = int(e.at) - int(e.at) % _DAY_S
        for into in (self.by_day.setdefault((e.tenant, day), {}),) + (
            (self.by_workflow.setdefault((e.tenant, e.workflow), {}),) if e.workflow else ()
        ):
            into[e.resource] = into.get(e.resource, Decimal(0)) + e.cost_usd
        units = self.quantity_by_day.setdefault((e.tenant, day), {})
        units[e.resource] = units.get(e.resource, Decimal(0)) + e.quantity
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
