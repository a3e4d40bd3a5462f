"""One error body for every 4xx, and an OpenAPI document that says which errors each operation has.

FastAPI documents a route's success and, for routes with parameters, a 422 whose ``detail`` is a
list. The answers every route shares (no key, a key that may not, a malformed body, a body too
large ...) are added here once, to every operation of the generated document, after all routers
are included (:func:`install_error_handling` wraps ``app.openapi``), instead of on each decorator.
All of them, 422 included, carry one schema, :class:`ErrorBody`: ``detail`` is a one-line string;
a 422 from parameter or body validation also lists the invalid fields in ``errors``. The exception
handlers installed with it give every error answer of the app that shape.

The ``currency`` parameter is documented as the enum of the codes the server's catalog has rates
for; the operations that need a key say so (``security``: ``X-API-Key`` or a bearer token).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from costspan.processor.api._invalid import non_finite_message

__all__ = ["ERROR_STATUSES", "PUBLIC_PATHS", "ErrorBody", "FieldError", "document_errors", "install_error_handling"]

#: Operations that answer without a key (everything else documents 401 and 403).
PUBLIC_PATHS: Final = frozenset({"/health", "/healthz", "/readyz"})

#: The error answers documented on the operations they can come from, with what they mean.
ERROR_STATUSES: Final = {
    400: "a request that is well-formed but contradictory (the tenant parameter and X-Tenant-ID differ, "
    "an unknown currency, from after to) or a body that is not JSON",
    401: "no API key, or an invalid or revoked one",
    403: "this key may not do this (its role, or another tenant)",
    404: "nothing with this id (for this key)",
    413: "the request body is too large",
    415: "the request body is not JSON",
    422: "a parameter or body field of the wrong type, range or form (`errors` names each)",
}
#: The most validation errors a 422's one-line ``detail`` names (``errors`` lists them all).
_SUMMARY_ERRORS: Final = 5
_SECURITY: Final[list[dict[str, list[str]]]] = [{"ApiKey": []}, {"Bearer": []}]
_SECURITY_SCHEMES: Final = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "Bearer": {"type": "http", "scheme": "bearer"},
}
#: FastAPI's own 422 schemas, replaced by :class:`ErrorBody` (dropped once nothing refers to them).
_FASTAPI_422: Final = ("HTTPValidationError", "ValidationError")


class FieldError(BaseModel):
    """One invalid parameter or body field."""

    model_config = ConfigDict(extra="allow")

    loc: list[str | int] = Field(description="where: `query`, `path`, `header` or `body`, then the field")
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every 4xx answer: ``detail`` says what was wrong in one line."""

    detail: str = Field(description="what was wrong, one line")
    success: bool = Field(False, description="always false (the seeds' clients read it)")
    error: str | None = Field(None, description="the same as `detail` (the seeds' clients read it)")
    errors: list[FieldError] | None = Field(None, description="422 from validation: each invalid field")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error_response(status: int) -> dict[str, Any]:
    return {"description": ERROR_STATUSES[status], "content": {"application/json": {"schema": _ref("ErrorBody")}}}


def _refers_to(value: Any, name: str) -> bool:
    if isinstance(value, dict):
        return value.get("$ref") == f"#/components/schemas/{name}" or any(_refers_to(v, name) for v in value.values())
    if isinstance(value, list):
        return any(_refers_to(v, name) for v in value)
    return False


def document_errors(
    spec: dict[str, Any], currencies: Iterable[str], public: frozenset[str] = PUBLIC_PATHS
) -> dict[str, Any]:
    """Add the shared error answers, the ``currency`` enum and the key requirement to ``spec`` (in place).

    Every operation not under ``public`` gets 400, 401 and 403 and a ``security`` requirement; one
    with parameters or a body 422; one with path parameters or a body 404; one with a body 413 and
    415. What a route documents itself stays, except FastAPI's generated 422 schema; a 4xx a route
    documents with a description only gets :class:`ErrorBody` (but 429: a budget's answer has its own).
    """
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for model in (FieldError, ErrorBody):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    components.setdefault("securitySchemes", {}).update(_SECURITY_SCHEMES)
    codes = sorted(currencies)
    for path, operations in spec.get("paths", {}).items():
        for operation in operations.values():
            params = operation.get("parameters", [])
            body = "requestBody" in operation
            wanted = set()
            if path not in public:
                wanted |= {400, 401, 403}
                operation.setdefault("security", _SECURITY)
            if params or body:
                wanted.add(422)
            if body or any(p.get("in") == "path" for p in params):
                wanted.add(404)
            if body:
                wanted |= {413, 415}
            responses = operation.setdefault("responses", {})
            for status in sorted(wanted):
                documented = responses.get(str(status))
                if documented is None or _refers_to(documented, "HTTPValidationError"):
                    responses[str(status)] = _error_response(status)
            for status, documented in responses.items():
                if status.startswith("4") and status != "429" and "content" not in documented:
                    documented["content"] = _error_response(422)["content"]
            for param in params:
                if param.get("name") == "currency" and param.get("in") == "query":
                    schema = param.setdefault("schema", {})
                    schema.pop("pattern", None)
                    schema["enum"] = codes
    for name in _FASTAPI_422:  # HTTPValidationError first: it is what refers to ValidationError
        rest = {k: v for k, v in spec.items() if k != "components"}
        rest["schemas"] = {k: v for k, v in schemas.items() if k != name}
        if name in schemas and not _refers_to(rest, name):
            del schemas[name]
    return spec


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _allowed_methods(request: Request, named: str) -> list[str]:
    """The methods of the request's path: what Starlette named (the first route that matched the path)
    and what the OpenAPI document lists for it (a literal path's own, else every matching template's)."""
    methods = {m.strip().upper() for m in named.split(",") if m.strip()}
    paths: dict[str, Any] = request.app.openapi().get("paths", {})
    path = request.scope["path"]
    if path in paths:
        methods |= {m.upper() for m in paths[path]}
    else:
        for template, operations in paths.items():
            if compile_path(template)[0].match(path):
                methods |= {m.upper() for m in operations}
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def install_error_handling(app: FastAPI, currencies: Callable[[], Iterable[str]]) -> None:
    """Give every error answer of ``app`` the :class:`ErrorBody` shape and document the errors in its
    OpenAPI document (built on first use, so it covers routers included after this call).

    ``currencies`` is called when the document is built: the codes the ``currency`` parameter takes.
    """

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request, headers.get("Allow", "")))
        if exc.status_code in (204, 304):
            return Response(status_code=exc.status_code, headers=headers)
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return JSONResponse({"success": False, "detail": detail, "error": detail}, exc.status_code, headers=headers)

    async def invalid_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        non_finite = non_finite_message(exc)
        if non_finite is not None:
            return JSONResponse({"success": False, "detail": non_finite, "error": non_finite}, 400)
        errors = [
            {"loc": list(e.get("loc", ())), "msg": _one_line(str(e.get("msg", ""))), "type": str(e.get("type", ""))}
            for e in jsonable_encoder(exc.errors())
        ]
        parts = [f"{'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg']}" for e in errors[:_SUMMARY_ERRORS]]
        if len(errors) > _SUMMARY_ERRORS:
            parts.append(f"and {len(errors) - _SUMMARY_ERRORS} more")
        detail = "; ".join(parts) or "invalid request"
        return JSONResponse({"success": False, "detail": detail, "error": detail, "errors": errors}, 422)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(generate(), currencies())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
