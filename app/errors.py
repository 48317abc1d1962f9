"""API errors: one base class carrying status and code, rendered as RFC 9457 problem documents.

Services raise subclasses of ``ApiError``; ``install_error_handlers`` renders them, turns request
validation failures into 422s naming the field, database outages into 503s, and anything
unexpected into a logged 500 that reveals nothing. It also documents the problem format in the
OpenAPI document, so clients (and Schemathesis) know every error is ``application/problem+json``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"


class ApiError(Exception):
    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra or {}


class Unauthorized(ApiError):
    status, code, title = 401, "unauthorized", "Unauthorized"


class Forbidden(ApiError):
    status, code, title = 403, "forbidden", "Forbidden"


class NotFound(ApiError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(ApiError):
    status, code, title = 409, "conflict", "Conflict"


class NotCancellable(Conflict):
    code, title = "not_cancellable", "Job is not cancellable"


class InvalidInput(ApiError):
    status, code, title = 422, "invalid_input", "Invalid input"


class NoRoute(ApiError):
    status, code, title = 422, "no_route", "No provider can serve this request"


class NoProviderAvailable(ApiError):
    status, code, title = 503, "no_provider_available", "No provider available"


class ServiceUnavailable(ApiError):
    status, code, title = 503, "service_unavailable", "Service unavailable"


def field_error(loc: list[str | int], msg: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg}


def invalid(loc: list[str | int], msg: str) -> InvalidInput:
    """A 422 naming one field: ``raise invalid(["input", "width"], "must be ...")``."""
    return InvalidInput(f"{'.'.join(map(str, loc))}: {msg}", errors=[field_error(loc, msg)])


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": f"https://imagegate.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if errors is not None:
        body["errors"] = errors
    if extra:
        body.update(extra)
    return Response(orjson.dumps(body), status, headers=headers, media_type=PROBLEM_JSON)


_HEADER_NAMES = {"last-event-id": "Last-Event-ID", "x-api-key": "X-API-Key"}


def _location(loc: tuple[Any, ...] | list[Any]) -> list[str | int]:
    """FastAPI's ``loc`` as the contract spells it.

    Body fields drop the ``body`` prefix (``["input", "width"]``); a problem with the body as a
    whole (not JSON, empty, not an object) is ``["body"]``. Query, path and header parameters keep
    their prefix (``["query", "limit"]``), as the endpoints' own checks do, and header names are
    shown in their usual capitalisation (``["header", "Idempotency-Key"]``).
    """
    parts = list(loc)
    if not parts:
        return ["body"]
    if parts[0] == "body":
        rest = parts[1:]
        return rest if rest and isinstance(rest[0], str) else ["body"]
    if parts[0] == "header" and len(parts) > 1 and isinstance(parts[1], str):
        name = parts[1].replace("_", "-").lower()
        parts[1] = _HEADER_NAMES.get(name) or "-".join(w.capitalize() for w in name.split("-"))
    return parts


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        msg = str(err.get("msg", "invalid"))
        if msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        if err.get("type") == "json_invalid":
            msg = "the body is not valid JSON"
        out.append(field_error(_location(err.get("loc", ())), msg))
    return out


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
_UNPARSABLE_BODY = "There was an error parsing the body"  # FastAPI's words


def _allowed_methods(request: Request) -> str | None:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    allowed = [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL
            for route in request.app.router.routes
        )
    ]
    return ", ".join(allowed) or None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Response:
        return problem(
            exc.status,
            exc.code,
            exc.title,
            exc.detail,
            errors=exc.errors,
            headers=exc.headers,
            extra=exc.extra,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        errors = _validation_errors(exc)
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        detail = f"{'.'.join(map(str, first['loc'])) or 'body'}: {first['msg']}"
        return problem(422, "invalid_input", "Invalid input", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and exc.detail == _UNPARSABLE_BODY:
            # FastAPI's answer to a body its JSON parser gave up on (e.g. nested too deeply):
            # the same 422 as any other body that is not a JSON object.
            msg = "the body could not be parsed as JSON"
            return problem(
                422,
                InvalidInput.code,
                InvalidInput.title,
                f"body: {msg}",
                errors=[field_error(["body"], msg)],
            )
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            allowed = _allowed_methods(request)
            if allowed:
                headers["Allow"] = allowed
        return problem(exc.status_code, code, str(exc.detail), str(exc.detail), headers=headers)

    @app.exception_handler(OperationalError)
    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeout)
    @app.exception_handler(OSError)
    async def _database_down(_: Request, exc: Exception) -> Response:
        log.warning("dependency unavailable", error=type(exc).__name__)
        return problem(
            503,
            "service_unavailable",
            "Service unavailable",
            "a backing service is unavailable; retry shortly",
            headers={"Retry-After": "2"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error", error=type(exc).__name__)
        return problem(500, "internal_error", "Internal error", "an unexpected error occurred")

    _document_problems(app)


# --- OpenAPI: every error answer is a problem document -------------------------------------------

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_PROBLEM_SCHEMAS: dict[str, Any] = {
    "FieldError": {
        "title": "FieldError",
        "type": "object",
        "required": ["loc", "msg"],
        "properties": {
            "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
            "msg": {"type": "string"},
        },
    },
    "Problem": {
        "title": "Problem",
        "description": "An RFC 9457 problem document; `code` is stable and machine-readable.",
        "type": "object",
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "code": {"type": "string"},
            "errors": {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}},
        },
        "additionalProperties": True,
    },
}


def _problem_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_JSON: {"schema": _PROBLEM_REF}}}


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Rewrite FastAPI's OpenAPI document so its error answers match what the app sends.

    FastAPI documents a 422 as ``application/json`` with its own ``HTTPValidationError`` shape; the
    app answers ``application/problem+json``. Every operation also gets a ``default`` problem
    response, since any of them may answer 401, 403, 404, 429 or 503 as a problem document.
    """
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            if "422" in responses:
                responses["422"] = _problem_response("Invalid input (the fields are named)")
            responses.setdefault("default", _problem_response("An error (a problem document)"))
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    components.update(_PROBLEM_SCHEMAS)
    return schema


def _document_problems(app: FastAPI) -> None:
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
