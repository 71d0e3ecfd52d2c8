"""The one place domain errors become HTTP responses, in OpenAI's error shape:

    {"error": {"message": ..., "type": ..., "param": ..., "code": ...}, "request_id": ...}

A 500 reveals nothing but the request id; the traceback goes to the log.
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentstack import errors as E

log = logging.getLogger(__name__)

STATUS: list[tuple[type[E.AgentstackError], int, str]] = [
    (E.AuthError, 401, "authentication_error"),
    (E.ForbiddenError, 403, "permission_error"),
    (E.ModelNotFoundError, 404, "not_found_error"),
    (E.NotFoundError, 404, "not_found_error"),
    (E.ConflictError, 409, "conflict_error"),
    (E.RateLimitedError, 429, "rate_limit_error"),
    (E.OverloadedError, 429, "rate_limit_error"),
    (E.InvalidRequestError, 400, "invalid_request_error"),
    (E.EngineUnavailableError, 503, "service_unavailable"),
    (E.DependencyMissingError, 503, "service_unavailable"),
    (E.ConfigError, 503, "service_unavailable"),
    (E.CancelledError, 499, "client_closed_request"),  # nginx's code; the client is gone anyway
]


def request_id(request: Request) -> str:
    return getattr(request.state, "request_id", None) or "-"


def error_response(request: Request, status: int, message: str, *, type_: str, param: str | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code},
            "request_id": request_id(request)}
    return JSONResponse(body, status_code=status, headers=headers)


def status_for(exc: E.AgentstackError) -> tuple[int, str]:
    for cls, status, kind in STATUS:
        if isinstance(exc, cls):
            return status, kind
    return 500, "server_error"


async def _domain(request: Request, exc: E.AgentstackError) -> JSONResponse:
    status, kind = status_for(exc)
    headers = None
    if isinstance(exc, E.OverloadedError):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    if status >= 500:
        log.error("request %s failed: %s", request_id(request), exc.code)
    return error_response(request, status, str(exc), type_=kind, param=exc.param, code=exc.code, headers=headers)


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    errs = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errs):
        return error_response(request, 400, "the request body is not valid JSON", type_="invalid_request_error",
                              code="json_invalid")
    first = errs[0] if errs else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    kind = first.get("type")
    if kind == "extra_forbidden":
        message = f"unknown field {param!r}; see the API docs at /docs for the accepted fields"
    elif kind == "missing":
        message = f"missing required field {param!r}"
    else:
        message = f"{param}: {first.get('msg', 'invalid value')}"
    return error_response(request, 422, message, type_="invalid_request_error", param=param, code=kind)


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (Starlette's 405 names only the first route's)."""
    from starlette.routing import Match

    methods: set[str] = set()
    pending = list(request.app.routes)
    while pending:
        route = pending.pop()
        inner = getattr(route, "original_router", None) or route  # FastAPI wraps each included router
        if getattr(route, "methods", None) is None and hasattr(inner, "routes"):
            pending.extend(inner.routes)
            continue
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    headers = getattr(exc, "headers", None)
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": allowed_methods(request)}
    kind = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
            405: "invalid_request_error", 413: "invalid_request_error"}.get(exc.status_code, "invalid_request_error")
    return error_response(request, exc.status_code, str(exc.detail), type_=kind, headers=headers)


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in request %s", request_id(request))
    return error_response(request, 500, f"internal error (request id {request_id(request)})", type_="server_error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(E.AgentstackError, _domain)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unhandled)
