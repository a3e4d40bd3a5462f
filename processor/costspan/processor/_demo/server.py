"""The server side of ``costspan demo``: costspan serve, a fake provider, keys and budgets."""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType
from typing import Any

from costspan.processor._demo.fake_provider import FakeProvider, FakeUsage
from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.api._keys import KeyStore
from costspan.processor.budgets import BudgetBook
from costspan.processor.serve._server import build_server_app
from costspan.processor.serve._settings import Settings
from costspan.processor.store._store import Store
from costspan.processor.store._sums import Sums

__all__ = ["DemoServer", "demo_usage"]

#: The demo's budgets: initech's hard daily budget blocks, globex's adaptive one degrades.
DEMO_BUDGETS: tuple[dict[str, Any], ...] = (
    {"id": "initech-daily", "scope": {"tenant": "initech"}, "period": "day", "limit": "0.006", "mode": "hard"},
    {
        "id": "globex-daily",
        "scope": {"tenant": "globex"},
        "period": "day",
        "limit": "0.05",
        "mode": "adaptive",
        "fallback_models": ["gpt-4o-mini"],
        "max_tokens_cap": 256,
    },
    {"id": "acme-monthly", "scope": {"tenant": "acme"}, "period": "month", "limit": "25", "mode": "soft"},
    {"id": "global-monthly", "period": "month", "limit": "500", "mode": "soft"},
)


def _words(value: Any) -> int:
    """Words in every string of a message list or a system prompt (a real tokenizer counts more)."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, dict):
        return sum(_words(v) for k, v in value.items() if k != "role")
    if isinstance(value, list):
        return sum(_words(v) for v in value)
    return 0


def demo_usage(payload: Any) -> FakeUsage:
    """What the fake provider reports for a request: one input token per word the request really sent
    (its system prompt included; never more than the budget check's estimate), a cached part of it
    for Claude, output capped by max_tokens."""
    body = payload if isinstance(payload, dict) else {}
    prompt = max(1, _words(body.get("messages")) + _words(body.get("system")))
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 600
    output = max(1, min(int(max_tokens), 350))
    cached = min(1_024, prompt) if str(body.get("model", "")).startswith("claude") else 0
    return FakeUsage(input=prompt, output=output, cache_read=cached)


class DemoServer:
    """``with DemoServer(data_dir, port) as s:`` — everything the demo runs, on 127.0.0.1."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.settings = Settings(data_dir=data_dir, port=port, grpc_port=0)  # the demo sends OTLP/HTTP only
        self.store = Store(self.settings.store_config())
        self.keys = KeyStore(data_dir)
        self.admin_key = self._key("admin", "demo admin")
        self.ingest_key = self._key("ingest", "demo services")
        self.book = BudgetBook(data_dir=data_dir / "budgets")
        for budget in DEMO_BUDGETS:
            if self.book.get_budget(str(budget["id"])) is None:
                self.book.put_budget(dict(budget), actor="costspan demo")
        self.app = build_server_app(self.settings, self.store, keys=self.keys, book=self.book)
        self.provider = FakeProvider(usage_for=demo_usage)
        self._server = ServerThread(self.app, port=port)
        self.url = ""
        self.setup_lines: list[str] = [
            "budgets: " + ", ".join(f"{b['id']} ({b['mode']}, {b['limit']} USD)" for b in DEMO_BUDGETS)
        ]

    def __enter__(self) -> DemoServer:
        self.provider.start()
        try:
            self._server.__enter__()
        except BaseException:
            self.provider.stop()
            raise
        self.url = self._server.url
        self.setup_lines.append(f"fake LLM provider: {self.provider.url()}")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.__exit__(exc_type, exc, tb)
        self.provider.stop()

    def _key(self, role: str, name: str) -> str:
        """A new key of ``role`` for this run (keys are stored hashed; the secret exists only here)."""
        for old in self.keys.list():
            if old.name == name and old.revoked is None:
                self.keys.revoke(old.id)
        _, secret = self.keys.create(role, name=name)
        return secret

    def app_environment(self, service: str) -> dict[str, str]:
        """The environment of a demo service: where to export spans, where the provider and guard are."""
        env = {
            "OTEL_SERVICE_NAME": service,
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{self.url}/v1/traces",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "COSTSPAN_DEMO_PROVIDER_URL": self.provider.url(),
            "TIKTOKEN_CACHE_DIR": str(self.data_dir / "tiktoken"),
            "PYTHONWARNINGS": "ignore::DeprecationWarning",
        }
        env["OTEL_EXPORTER_OTLP_TRACES_HEADERS"] = f"x-api-key={self.ingest_key}"
        env["COSTSPAN_ENDPOINT"] = self.url  # the remote budget guard
        env["COSTSPAN_API_KEY"] = self.ingest_key
        env["COSTSPAN_BUDGET_TIMEOUT"] = "5"
        return env

    def wait_for_records(self, at_least: int, timeout: float) -> int:
        """Wait until the store holds ``at_least`` calls (spans arrive after the services exit)."""
        deadline = time.monotonic() + timeout
        seen = -1
        while time.monotonic() < deadline:
            with self.store.lock:
                seen = self.store.rollups.records
            if seen >= at_least:
                break
            time.sleep(0.2)
        return seen

    def cost_by_tenant_and_model(self) -> list[tuple[str, str, Sums]]:
        """The stored calls' sums per tenant and provider/model, the most expensive first in each tenant."""
        with self.store.lock:
            totals = [(dims, t.copy()) for dims, t in self.store.rollups.totals.items()]
        rows: dict[tuple[str, str], Sums] = {}
        for (tenant, _service, provider, model, _operation, _status), t in totals:
            rows.setdefault((tenant, f"{provider}/{model}"), Sums()).merge(t, histogram=False)
        return [(k[0], k[1], v) for k, v in sorted(rows.items(), key=lambda kv: (kv[0][0], -kv[1].cost))]
