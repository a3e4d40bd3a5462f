"""Fixtures for the processor's component tests: a real server on 127.0.0.1 over a temp data dir."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from costspan.pricing import Pricer, default_pricer
from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.serve._app import create_app
from costspan.processor.serve._settings import Settings
from costspan.processor.store._store import Store

ServerFactory = Callable[..., AbstractContextManager[tuple[ServerThread, Store, CollectorRegistry]]]


@pytest.fixture(scope="session")
def pricer() -> Pricer:
    return default_pricer()


@pytest.fixture
def serve(tmp_path: Path, pricer: Pricer) -> ServerFactory:
    """``with serve(max_pending_records=10) as (server, store, registry): ...``"""

    @contextmanager
    def factory(**overrides: Any) -> Iterator[tuple[ServerThread, Store, CollectorRegistry]]:
        settings = Settings(data_dir=tmp_path / "data", port=0, **overrides)
        store = Store(settings.store_config())
        registry = CollectorRegistry(auto_describe=False)
        app = create_app(settings, store, pricer=pricer, registry=registry)
        with ServerThread(app) as server:
            yield server, store, registry

    return factory
