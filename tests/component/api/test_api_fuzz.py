"""Schemathesis over the whole server's OpenAPI document (usage API and budget routes).

Every generated request, sent with an admin key and with a tenant key, must get no 5xx and an answer
the document describes: a documented status code and content type, a body that matches the schema
(the shared ``ErrorBody`` for every 4xx), the documented headers. Examples are bounded so the run
stays well under a minute.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from prometheus_client import CollectorRegistry
from schemathesis import checks
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok

from costspan.pricing import Pricer
from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.api import KeyStore
from costspan.processor.serve._server import build_server_app
from costspan.processor.serve._settings import Settings
from costspan.processor.store._store import Store
from tests.component.api.conftest import Api
from tests.component.api.seed import ingest

#: The checks of what an answer may be: the document's status codes, content types, schemas, headers.
CONFORMANCE = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]
#: examples per operation and key (about 40 operations)
EXAMPLES = {"admin": 25, "acme": 8}
#: (key, operation, status, failure) → the first request that showed it
Failures = dict[tuple[str, str, int, str], str]


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory, pricer: Pricer) -> Iterator[tuple[str, dict[str, str]]]:
    data = tmp_path_factory.mktemp("fuzz") / "data"
    server_settings = Settings(data_dir=data, port=0)
    keystore = KeyStore(data)
    keys = {"admin": keystore.create("admin")[1], "acme": keystore.create("tenant", "acme")[1]}
    store = Store(server_settings.store_config())
    app = build_server_app(
        server_settings, store, keys=keystore, pricer=pricer, registry=CollectorRegistry(auto_describe=False)
    )
    with ServerThread(app) as server:
        ingest(Api(server.url, store, app.state.usage_index, {"ingest": keys["admin"], "admin": keys["admin"]}, data))
        yield server.url, keys


def _fuzz(operation: Any, who: str, key: str, examples: int, statuses: Counter[int], failures: Failures) -> None:
    """Send ``examples`` generated requests to ``operation`` with ``key``; note each conformance failure."""

    @given(case=operation.as_strategy())
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def call(case: Any) -> None:
        response = case.call(headers={"X-API-Key": key})
        statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CONFORMANCE)
        except FailureGroup as group:
            for failure in group.exceptions:
                where = (who, f"{case.method} {case.operation.path}", response.status_code, failure.title)
                failures.setdefault(where, f"{case.formatted_path} {case.query} → {response.text[:200]}")

    call()


@pytest.mark.slow
def test_every_answer_is_one_the_document_describes(fuzz_server: tuple[str, dict[str, str]]) -> None:
    url, keys = fuzz_server
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results)
    assert len(operations) >= 40
    assert {op.path for op in operations} >= {"/v1/budgets", "/v1/budgets/check", "/api/usage/calls"}
    statuses: Counter[int] = Counter()
    failures: Failures = {}
    for who, examples in EXAMPLES.items():
        for operation in operations:
            _fuzz(operation, who, keys[who], examples, statuses, failures)
    assert failures == {}
    # it did reach the routes and their checks: answers, validation, refusals, unknown ids
    assert statuses[200] and statuses[422] and statuses[403] and statuses[404], statuses
