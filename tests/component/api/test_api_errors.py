"""Every 4xx of the whole server has one documented shape, and the OpenAPI document lists it on each
operation that can answer it (with the currency enum and the key requirement)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from prometheus_client import CollectorRegistry

from costspan.pricing import Pricer
from costspan.processor._demo.server_thread import ServerThread
from costspan.processor.api import KeyStore
from costspan.processor.api._errors import PUBLIC_PATHS, ErrorBody
from costspan.processor.serve._server import build_server_app
from costspan.processor.serve._settings import Settings
from costspan.processor.store._store import Store


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pricer: Pricer) -> Iterator[tuple[str, dict[str, str]]]:
    data: Path = tmp_path_factory.mktemp("errors") / "data"
    settings = Settings(data_dir=data, port=0)
    keystore = KeyStore(data)
    keys = {"admin": keystore.create("admin")[1], "acme": keystore.create("tenant", "acme")[1]}
    registry = CollectorRegistry(auto_describe=False)
    app = build_server_app(settings, Store(settings.store_config()), keys=keystore, pricer=pricer, registry=registry)
    with ServerThread(app) as running:
        yield running.url, keys


def _call(url: str, key: str | None, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"X-API-Key": key} if key else {}
    return httpx.request(method, url + path, headers=headers | kwargs.pop("headers", {}), timeout=30, **kwargs)


def test_a_validation_error_is_one_line_and_lists_each_field(server: tuple[str, dict[str, str]]) -> None:
    url, keys = server
    r = _call(url, keys["admin"], "GET", "/api/usage/metrics/aggregates", params={"days": "0", "interval": "week"})
    assert r.status_code == 422
    body = r.json()
    assert body["success"] is False and body["error"] == body["detail"]
    assert "\n" not in body["detail"]
    assert body["detail"].startswith("query.days: Input should be greater than or equal to 1; query.interval: ")
    assert [(e["loc"], e["type"]) for e in body["errors"]] == [
        (["query", "days"], "greater_than_equal"),
        (["query", "interval"], "literal_error"),
    ]


_JSON: Final = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("who", "method", "path", "kwargs", "status"),
    [
        (None, "GET", "/api/usage/metrics/realtime", {}, 401),
        ("acme", "GET", "/v1/budgets", {}, 403),
        ("admin", "GET", "/v1/budgets/no-such-budget", {}, 404),
        ("admin", "GET", "/api/usage/costs/trend", {"params": {"currency": "XYZ"}}, 400),
        ("admin", "POST", "/v1/budgets", {"content": b"{no", "headers": {"content-type": "application/json"}}, 422),
        ("admin", "POST", "/v1/budgets", {"json": {"id": "x", "period": "fortnight", "limit": "1"}}, 422),
        # answered ahead of FastAPI
        ("admin", "POST", "/v1/budgets/check", {"content": b"[]", "headers": _JSON}, 422),
        ("admin", "POST", "/v1/budgets/check", {"content": b"{}", "headers": {"content-type": "text/plain"}}, 415),
        ("admin", "POST", "/api/usage/calls", {"json": {"provider": "openai"}}, 422),
        ("admin", "PATCH", "/v1/budgets", {}, 405),
        ("admin", "GET", "/no/such/route", {}, 404),
    ],
)
def test_every_error_has_the_documented_shape(
    server: tuple[str, dict[str, str]], who: str | None, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    url, keys = server
    r = _call(url, keys[who] if who else None, method, path, **kwargs)
    assert r.status_code == status, r.text
    body = ErrorBody.model_validate(r.json())
    assert body.detail and "\n" not in body.detail
    spec = httpx.get(url + "/openapi.json", timeout=30).json()
    operation = spec["paths"].get(path, {}).get(method.lower())
    if operation is not None:  # what the document says this operation may answer
        assert operation["responses"][str(status)]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody"
        }


def test_405_names_every_method_of_the_path(server: tuple[str, dict[str, str]]) -> None:
    url, keys = server
    r = _call(url, keys["admin"], "PATCH", "/v1/budgets/b1")
    assert r.status_code == 405
    assert set(r.headers["allow"].split(", ")) == {"GET", "HEAD", "PUT", "DELETE"}


def test_the_document_lists_the_errors_the_currencies_and_the_key(
    server: tuple[str, dict[str, str]], pricer: Pricer
) -> None:
    url, _ = server
    spec = httpx.get(url + "/openapi.json", timeout=30).json()
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert schemas["ErrorBody"]["required"] == ["detail"]
    assert set(spec["components"]["securitySchemes"]) == {"ApiKey", "Bearer"}
    currency_params = 0
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses, where = operation["responses"], f"{method} {path}"
            if path in PUBLIC_PATHS:
                assert "security" not in operation and not any(s.startswith("4") for s in responses), where
            else:
                assert operation["security"] == [{"ApiKey": []}, {"Bearer": []}], where
                assert {"400", "401", "403"} <= set(responses), where
            if "requestBody" in operation:
                assert {"404", "413", "415", "422"} <= set(responses), where
            for status, response in responses.items():
                if status.startswith("4") and status != "429":
                    assert response["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody"), where
            for param in operation.get("parameters", []):
                if param["name"] == "currency":
                    currency_params += 1
                    assert param["schema"]["enum"] == sorted(pricer.catalog.currencies), where
    assert currency_params >= 15
    assert sorted(pricer.catalog.currencies) == ["CNY", "EUR", "GBP", "JPY", "USD"]
