"""A node without peers pays nothing for scale-out: no routing middleware, no budget forwarding, no
lessee thread, no peer client; leased budgets behave as on one node (their counters are not capped)."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

from costspan.pricing import default_pricer
from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.api import KeyStore
from costspan.processor.cluster._fanout import ClusterRouting
from costspan.processor.serve._budget_peers import BudgetDefinitionsToPeers
from costspan.processor.serve._server import build_server_app
from costspan.processor.serve._settings import Settings
from costspan.processor.store._store import Store

ADMIN = "single-node-admin-key-0123456789"


def test_no_peers_no_fan_out_no_lessee(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, port=0, grpc_port=0)
    app = build_server_app(
        settings,
        Store(settings.store_config()),
        keys=KeyStore(tmp_path, admin_key=ADMIN),
        pricer=default_pricer(),
        registry=CollectorRegistry(auto_describe=False),
    )
    middleware: set[object] = {m.cls for m in app.user_middleware}
    assert ClusterRouting not in middleware and BudgetDefinitionsToPeers not in middleware
    with ServerThread(app) as server:
        assert app.state.lessee is None
        assert not [t for t in threading.enumerate() if t.name == "costspan-lessee"]
        budget = {"id": "g", "period": "day", "limit": "2", "unit": "requests", "mode": "hard"}
        created = httpx.post(server.url + "/v1/budgets", json=budget, headers={"X-API-Key": ADMIN})
        assert created.status_code == 201 and "x-costspan-peers-failed" not in created.headers
        check = {"tenant": "acme", "provider": "openai", "model": "gpt-4o-mini", "input_tokens": 1, "max_tokens": 1}
        answers = [
            httpx.post(server.url + "/v1/budgets/check", json=check, headers={"X-API-Key": ADMIN}).status_code
            for _ in range(3)
        ]
        assert answers == [200, 200, 429]  # the global budget's own limit, no lease in the way
