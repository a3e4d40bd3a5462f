"""The parts of the tenant-isolation matrix (``test_tenant_matrix.py``).

The operations come from the whole server's OpenAPI document (plus ``/v1/traces`` and ``/metrics``,
which it does not list). Each parameter and body is filled by a rule of :data:`PARAMS` and
:data:`BODIES`; the rule says whether it names a tenant or one tenant's resource, which is how the
matrix knows the ways an operation offers to name another tenant: a path or query parameter, the
``X-Tenant-ID`` header (every operation), a tenant field in the body, or a resource id (a budget, a
reservation, an execution, a project, a user) that belongs to the other tenant.

Two tenants, acme and globex, are seeded with names and amounts found nowhere else
(:func:`markers`): a response that carries one of the other tenant's, and that the request did not
send itself, leaked it.
"""

from __future__ import annotations

import functools
import re
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util.types import AttributeValue

from costspan.processor.budgets import BudgetBook
from costspan.processor.serve._server import build_server_app
from costspan.processor.serve._settings import Settings
from costspan.processor.store._store import Store

if TYPE_CHECKING:
    from tests.component.api.matrix_world import World

TENANTS: Final = ("acme", "globex")
#: admin, a tenant key per tenant, an unbound ingest key, an ingest key bound to acme, no key, a bad key
KEYS: Final = ("admin", "acme", "globex", "ingest", "ingest_acme", "none", "bad")
#: the tenant a key is bound to
BOUND: Final = {"acme": "acme", "globex": "globex", "ingest_acme": "acme"}
WAYS: Final = ("own", "path", "query", "header", "body", "resource")
#: workspace budgets (daily, monthly) and a per-model cap that blocks every check for that model
LIMITS: Final = {"acme": ("1313.13", "31313.13"), "globex": ("4242.42", "84242.42")}
CAPS: Final = {
    "acme": ("openai", "gpt-4o-mini", "0.00001313"),
    "globex": ("anthropic", "claude-sonnet-4-5", "0.00004242"),
}
#: what the matrix's own writes use: no price, so they move no seeded amount
UNPRICED: Final = "matrix-unpriced-model"
PROTOBUF: Final = "application/x-protobuf"
#: an amount as the API writes money: a decimal string with 8 places
MONEY: Final = re.compile(r"\b\d+\.\d{8}\b")
#: routes the OpenAPI document does not list, as (method, path, body rule)
UNLISTED: Final = (("POST", "/v1/traces", "OTLP"), ("GET", "/metrics", None))


def other(tenant: str) -> str:
    return "globex" if tenant == "acme" else "acme"


def own_tenant(key: str) -> str:
    """The tenant a key acts for (unbound keys: acme, so that globex is the "other" one)."""
    return BOUND.get(key, "acme")


def markers(tenant: str) -> tuple[str, ...]:
    """Names and amounts of ``tenant``'s seeded data that no other tenant's answer contains."""
    names = (
        f"{tenant}-user-1",
        f"{tenant}-user-2",
        f"{tenant}-wf-1",
        f"{tenant}-session-1",
        f"{tenant}-proj-1",
        f"{tenant}-res-1",
        f"{tenant}-cap",
        f"ws-{tenant}-",
    )
    return (*names, *LIMITS[tenant], CAPS[tenant][2])


@dataclass(frozen=True, slots=True)
class Rule:
    """How to fill one parameter: ``kind`` is what it names (``tenant``, ``resource`` of a tenant, or
    ``plain``); ``value(world, tenant)`` is its value for that tenant (None: left out, the route's
    default)."""

    kind: str
    value: Callable[[World, str], str | None]


def _default(world: World, tenant: str) -> None:
    return None


def _name(template: str) -> Rule:
    return Rule("resource", lambda world, tenant: template.format(t=tenant))


PARAMS: Final[dict[str, Rule]] = {
    "tenant": Rule("tenant", lambda world, tenant: tenant),
    "tenant_id": Rule("tenant", lambda world, tenant: tenant),
    "workspace_id": Rule("tenant", lambda world, tenant: tenant),
    "budget_id": _name("ws-{t}-daily"),
    "reservation_id": Rule("resource", lambda world, tenant: world.reservation(tenant)),
    "execution_id": _name("{t}-wf-1"),
    "workflow_id": _name("{t}-wf-1"),
    "session_id": _name("{t}-session-1"),  # GET /v1/sessions/{session_id} (costspan.track's session lookup)
    "project_id": _name("{t}-proj-1"),
    "project": _name("{t}-proj-1"),
    "user": _name("{t}-user-1"),
    "currency": Rule("plain", lambda world, tenant: "USD"),
    # the route's default is what the matrix wants
    **{
        name: Rule("plain", _default)
        for name in (
            "days",
            "period",
            "scope",
            "interval",
            "provider",
            "limit",
            "format",
            "from",
            "to",
            "period_days",
            "complexity",
            "tech_stack",
        )
    },
}


def otlp_export(tenant: str) -> bytes:
    """One unpriced GenAI span for ``tenant``, made by the SDK and encoded as the OTLP exporter does."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "matrix"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": UNPRICED,
        "gen_ai.usage.input_tokens": 1,
        "gen_ai.usage.output_tokens": 1,
        "costspan.tenant.id": tenant,
    }
    with provider.get_tracer("matrix").start_as_current_span("chat", attributes=attributes):
        pass
    provider.shutdown()
    body: bytes = encode_spans(exporter.get_finished_spans()).SerializeToString()
    return body


@dataclass(frozen=True, slots=True)
class BodyRule:
    """How to build one request body: ``build(world, tenant, owner)`` with ``tenant`` for the fields that
    name a tenant and ``owner`` the tenant whose resource ids to use (None: no resource named)."""

    names_tenant: bool
    names_resource: bool
    build: Callable[[World, str, str | None], dict[str, Any] | bytes]


def _check(world: World, tenant: str, owner: str | None) -> dict[str, Any]:
    provider, model, _ = CAPS[tenant]
    return {"tenant": tenant, "provider": provider, "model": model, "input_tokens": 10, "max_tokens": 10}


BODIES: Final[dict[str, BodyRule]] = {
    "CallIn": BodyRule(
        True,
        True,
        lambda world, tenant, owner: {
            "provider": "openai",
            "model": UNPRICED,
            "prompt_tokens": 1,
            "completion_tokens": 1,
            "tenant_id": tenant,
            "user_id": "matrix-user",
            "reservation_id": world.reservation(owner) if owner else "",
        },
    ),
    "ResourceUsageIn": BodyRule(
        True,
        True,
        lambda world, tenant, owner: {
            "workspace_id": tenant,
            "resource_type": "cpu",
            "amount": "1",
            "duration_seconds": "60",
            "execution_id": "matrix-exec",
            "id": f"{owner}-res-1" if owner else uuid.uuid4().hex,
        },
    ),
    "SettleRequest": BodyRule(
        False,
        True,
        lambda world, tenant, owner: {"reservation_id": world.reservation(owner or tenant), "cost_usd": "0.01"},
    ),
    "SeedBudget": BodyRule(False, False, lambda world, tenant, owner: {"daily_limit": "1"}),
    "RepriceRequest": BodyRule(
        True, False, lambda world, tenant, owner: {"since": "30d", "tenant": tenant, "dry_run": True}
    ),
    "CheckRequest": BodyRule(True, False, _check),
    "Spec": BodyRule(
        True,
        True,
        lambda world, tenant, owner: {
            "id": f"ws-{owner}-daily" if owner else f"matrix-{uuid.uuid4().hex[:8]}",
            "scope": {"tenant": tenant},
            "period": "day",
            "limit": "1",
        },
    ),
    "OTLP": BodyRule(True, False, lambda world, tenant, owner: otlp_export(tenant)),
    # a peer's spend-lease ask (admin keys only): it names no tenant and no tenant's resource
    "LeaseRequest": BodyRule(
        False,
        False,
        lambda world, tenant, owner: {
            "budget_id": "matrix-global",
            "key": "matrix-global",
            "start": 0,
            "shard": "http://127.0.0.1:9",
            "spent": "0",
        },
    ),
}


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    params: tuple[tuple[str, str, bool], ...]  # (name, where, required)
    body: str | None  # the name of its body's schema
    public: bool  # answers without a key (no ``security`` in the document)

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def write(self) -> bool:
        return self.method != "GET"

    def missing_rules(self) -> list[str]:
        missing = [f"parameter {name!r} ({where})" for name, where, _ in self.params if name not in PARAMS]
        if self.body is not None and self.body not in BODIES:
            missing.append(f"body {self.body!r}")
        return missing

    def ways(self) -> tuple[str, ...]:
        """The ways this operation offers to name another tenant, plus ``own`` (naming none)."""
        kinds = {(PARAMS[name].kind, where) for name, where, _ in self.params if name in PARAMS}
        body = BODIES.get(self.body) if self.body is not None else None
        offered = {"own", "header"}
        offered |= {where for kind, where in kinds if kind == "tenant" and where in ("path", "query")}
        if body is not None and body.names_tenant:
            offered.add("body")
        if any(kind == "resource" for kind, _ in kinds) or (body is not None and body.names_resource):
            offered.add("resource")
        return tuple(way for way in WAYS if way in offered)


def _body_name(spec: dict[str, Any], operation: dict[str, Any]) -> str | None:
    content = operation.get("requestBody", {}).get("content", {})
    if not content:
        return None
    schema = next(iter(content.values())).get("schema", {})
    ref = schema.get("$ref")
    name = ref.rsplit("/", 1)[-1] if ref else schema.get("title")
    return str(name) if name else "(a body without a schema name)"


def operations_of(spec: dict[str, Any]) -> list[Operation]:
    """Every operation of ``spec``, then the unlisted routes it does not document."""
    found = []
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            params = tuple((p["name"], p["in"], bool(p.get("required"))) for p in operation.get("parameters", []))
            public = "security" not in operation
            found.append(Operation(method.upper(), path, params, _body_name(spec, operation), public))
    listed = {(op.method, op.path) for op in found}
    found += [Operation(m, p, (), body, False) for m, p, body in UNLISTED if (m, p) not in listed]
    return found


@functools.cache
def server_spec() -> dict[str, Any]:
    """The OpenAPI document of the whole ``costspan serve`` app (built, not served: for collection)."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", port=0)
        book = BudgetBook()
        try:
            app = build_server_app(settings, Store(settings.store_config()), insecure_no_auth=True, book=book)
            return app.openapi()
        finally:
            book.close()


@dataclass(frozen=True, slots=True)
class Case:
    operation: Operation
    key: str
    way: str

    @property
    def id(self) -> str:
        return f"{self.operation.label} | {self.key} | {self.way}"


def cases(spec: dict[str, Any]) -> Iterator[Case]:
    """Every operation × key × way, but writes by keys that may write for any tenant (admin, the unbound
    ingest key) and a bound key's writes for its own tenant: neither crosses a wall."""
    for operation in operations_of(spec):
        for key in KEYS:
            for way in operation.ways():
                if operation.write and (key in ("admin", "ingest") or (key in BOUND and way == "own")):
                    continue
                yield Case(operation, key, way)
