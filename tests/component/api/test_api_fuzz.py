"""Schemathesis over the usage API's OpenAPI spec, with an admin key: no request gets a 5xx."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from prometheus_client import CollectorRegistry
from schemathesis.core.result import Ok

from costspan.pricing import Pricer
from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.api import KeyStore, include_usage_api
from costspan.processor.serve._app import create_app
from costspan.processor.serve._settings import Settings
from costspan.processor.store._store import Store
from tests.component.api.conftest import Api
from tests.component.api.seed import ingest


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory, pricer: Pricer) -> Iterator[tuple[str, str]]:
    data = tmp_path_factory.mktemp("fuzz") / "data"
    settings = Settings(data_dir=data, port=0)
    keys = KeyStore(data)
    admin = keys.create("admin")[1]
    store = Store(settings.store_config())
    app = create_app(settings, store, pricer=pricer, registry=CollectorRegistry(auto_describe=False))
    index = include_usage_api(app, store, settings, keys=keys, pricer=pricer)
    with ServerThread(app) as server:
        ingest(Api(server.url, store, index, {"ingest": admin, "admin": admin}, data))
        yield server.url, admin


@pytest.mark.slow
def test_no_request_gets_a_server_error(fuzz_server: tuple[str, str]) -> None:
    url, admin = fuzz_server
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results)
    assert len(operations) >= 20
    statuses: Counter[int] = Counter()
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def call(case: Any) -> None:
            response = case.call(headers={"X-API-Key": admin})
            statuses[response.status_code] += 1
            assert response.status_code < 500, (case.method, case.formatted_path, case.query, response.text[:300])

        call()
    assert statuses[200] and statuses[422], statuses  # it did reach the routes, and their validation
