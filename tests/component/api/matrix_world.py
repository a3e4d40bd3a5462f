"""The seeded server as the tenant-isolation matrix sees it: :class:`World` (keys, fresh resources,
admin snapshots, the amounts each tenant's reads show) and :func:`prepare` (a case's request)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx

from tests.component.api.tenant_matrix import (
    BODIES,
    MONEY,
    PARAMS,
    PROTOBUF,
    TENANTS,
    Case,
    Operation,
    other,
    own_tenant,
)

__all__ = ["Prepared", "World", "prepare"]


class World:
    """The seeded server as the matrix sees it: keys, fresh resources on demand, admin snapshots."""

    def __init__(self, url: str, keys: dict[str, str]) -> None:
        self.url = url
        self.keys = keys
        self.admin = httpx.Client(base_url=url, headers={"X-API-Key": keys["admin"]}, timeout=30)
        self.http = httpx.Client(base_url=url, timeout=30)  # the cases' requests (headers per request)
        self._figures: dict[tuple[str, str], frozenset[str]] = {}

    def close(self) -> None:
        self.admin.close()
        self.http.close()

    def key_headers(self, key: str) -> dict[str, str]:
        return {} if key == "none" else {"X-API-Key": self.keys[key]}

    def reservation(self, tenant: str) -> str:
        """A new open reservation on ``tenant``'s workspace budgets (made with the admin key)."""
        body = {"tenant": tenant, "provider": "openai", "model": "gpt-4o", "input_tokens": 100, "max_tokens": 100}
        answer = self.admin.post("/v1/budgets/check", json=body)
        assert answer.status_code == 200 and answer.json()["reservation_id"], answer.text
        reservation: str = answer.json()["reservation_id"]
        return reservation

    def figures(self, operation: Operation, tenant: str) -> frozenset[str]:
        """The amounts an admin reads from a read ``operation`` naming ``tenant`` (and its resources)
        that the same read naming the other tenant does not show (first asked: remembered)."""
        if operation.write or not any(PARAMS[name].kind == "tenant" for name, _, _ in operation.params):
            return frozenset()
        if (operation.label, tenant) not in self._figures:
            found = {}
            for named in TENANTS:
                request = prepare(self, Case(operation, "admin", "own"), everything=named)
                found[named] = set(MONEY.findall(request.send(self.http).text)) - set(MONEY.findall(request.text))
            for named in TENANTS:
                mine = found[named] - found[other(named)]
                self._figures[(operation.label, named)] = frozenset(f for f in mine if Decimal(f))
        return self._figures[(operation.label, tenant)]

    def snapshot(self) -> dict[str, Any]:
        """What an admin reads of each tenant (calls, compute, budgets and their counters), and of the
        budgets without a tenant (``*``)."""
        budgets = self.admin.get("/v1/budgets").json()
        status = self.admin.get("/v1/budgets/status").json()
        view: dict[str, Any] = {}
        for tenant in (*TENANTS, ""):
            part: dict[str, Any] = {
                "budgets": [b for b in budgets if b["scope"].get("tenant", "") == tenant],
                "status": [s for s in status if s["scope"].get("tenant", "") == tenant],
            }
            if tenant:
                export = self.admin.get("/api/usage/export", params={"format": "json", "tenant": tenant})
                costs = self.admin.get(f"/api/workspaces/{tenant}/costs").json()
                part["calls"] = export.json()
                part["compute"] = {k: costs[k] for k in ("compute_cost", "by_resource", "request_count")}
            view[tenant or "*"] = part
        return view


@dataclass(frozen=True, slots=True)
class Prepared:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    content: bytes | None

    @property
    def text(self) -> str:
        """The request as text: an answer may echo any of it without leaking anything."""
        query = " ".join(f"{k}={v}" for k, v in self.query.items())
        body = (self.content or b"").decode("latin-1")
        return f"{self.method} {self.path} {query} {json.dumps(self.headers)} {body}"

    def send(self, client: httpx.Client) -> httpx.Response:
        return client.request(self.method, self.path, params=self.query, headers=self.headers, content=self.content)


def prepare(world: World, case: Case, *, everything: str | None = None) -> Prepared:
    """The case's request: the key, and each parameter and body field naming the other tenant (or its
    resource) where the case's way says so, the key's own tenant everywhere else (``everything``:
    that tenant everywhere). Optional filters by a resource (user, project ...) are set only to name
    the other tenant's."""
    operation = case.operation
    own = own_tenant(case.key)

    def named(crossing: bool) -> str:
        return everything or (other(own) if crossing else own)

    headers = world.key_headers(case.key)
    if case.way == "header":
        headers["X-Tenant-ID"] = other(own)
    path, query = operation.path, {}
    for name, where, required in operation.params:
        rule = PARAMS[name]
        crossing = case.way == "resource" if rule.kind == "resource" else rule.kind == "tenant" and case.way == where
        if rule.kind == "resource" and not required and not (crossing and everything is None):
            continue  # an optional filter narrows the answer: only set to name the other tenant's
        value = rule.value(world, named(crossing))
        if value is None:
            assert not required, f"{operation.label}: the rule for {name!r} gives no value, and it is required"
            continue
        if where == "path":
            path = path.replace("{" + name + "}", value)
        elif where == "query":
            query[name] = value
        else:
            headers[name] = value
    content = None
    if operation.body is not None:
        owner = named(True) if case.way == "resource" or everything else None
        body = BODIES[operation.body].build(world, named(case.way == "body"), owner)
        if isinstance(body, bytes):
            content, headers["Content-Type"] = body, PROTOBUF
        else:
            content, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    return Prepared(operation.method, path, query, headers, content)
