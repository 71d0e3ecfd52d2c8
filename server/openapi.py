"""The OpenAPI document (``/openapi.json``), made to say what the server actually does.

FastAPI derives the schema from the routes; this module refines it once, when it is first built:

* every error a route can answer is declared, with the body every error has
  (:class:`ErrorBody`, OpenAI's shape, ``server/errors.py``): 401/403/429 on authenticated routes,
  400/413/422 where there is a body or parameters, 404 where the path names a resource, plus what
  a route declares itself (``responses=`` on its decorator: 409, 503, ...);
* sampling fields carry the ranges the server enforces: the bounds of
  :class:`~agentstack.engines.params.SamplingParams` (one source of truth) and this deployment's
  ``engine.max_tokens_limit`` and ``engine.max_n``. The server still checks them itself, and still
  answers an out-of-range value with 400 naming the field, as OpenAI's API does;
* the ``X-User-Id`` header carries its pattern.

Clients and the API fuzzer (``tests/fuzz``) read these promises; the fuzzer checks each one.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

from agentstack.config import Settings

REF = "#/components/schemas/ErrorBody"
DESCRIPTIONS = {
    400: "Invalid request: the message names the field and how to fix it.",
    401: "No API key, or a wrong one.",
    403: "The key's role or index list does not allow this.",
    404: "No such resource (model, index, job, version, conversation, response, report).",
    409: "Conflicts with the current state (a job already running, a version the gate rejected).",
    413: "The request body is over `server.max_body_bytes`.",
    422: "The body or a parameter does not match the schema; `param` names it.",
    429: "Rate limit, too many wrong keys from this address, or a full queue; see Retry-After.",
    503: "The engine or a dependency is unavailable.",
}
# Errors a route answers beyond those its shape implies (see _declare_errors).
EXTRA: dict[tuple[str, str], set[int]] = {
    ("get", "/readyz"): {503},
    ("post", "/v1/chat/completions"): {404, 409, 503},
    ("post", "/tokenize"): {404, 503},
    ("post", "/v1/embeddings"): {404, 503},
    ("post", "/v1/load_lora_adapter"): {404, 409, 503},
    ("post", "/v1/unload_lora_adapter"): {404, 409, 503},
    ("post", "/v1/chat"): {404, 409, 503},
    ("post", "/v1/feedback"): {404},
    ("post", "/v1/admin/alignment/jobs"): {409},
    ("post", "/v1/admin/models/rollback"): {404, 409},
    ("post", "/v1/admin/models/{version}/promote"): {409, 503},
    ("post", "/v1/session"): {401, 403, 429},
    ("delete", "/v1/session"): {403},
}
# Successful answers that are not JSON, or not only JSON.
STREAM = {"text/event-stream": {"schema": {"type": "string", "description": "Server-sent events."}}}
CONTENT: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/v1/chat/completions"): STREAM,
    ("post", "/v1/chat"): STREAM,
    ("post", "/v1/chat/{response_id}/regenerate"): STREAM,
    ("get", "/metrics"): {"text/plain": {"schema": {"type": "string", "description": "Prometheus text format."}}},
    ("get", "/v1/admin/feedback/export"): {"application/x-ndjson": {"schema": {"type": "string"}}},
}
HTML = {"text/html": {"schema": {"type": "string"}}}
STATIC = {t: {"schema": {"type": "string"}} for t in ("text/javascript", "text/css", "image/svg+xml")}
CONTENT.update({("get", "/"): HTML, ("get", "/admin"): HTML, ("get", "/login"): HTML,
                ("get", "/static/{path}"): STATIC})
# Other answers, as OpenAPI response objects (the web pages redirect, or show a 403 page).
SIGN_IN = {"description": "Not signed in: redirects to /login."}
OTHER: dict[tuple[str, str], dict[str, Any]] = {
    ("get", "/"): {"303": SIGN_IN},
    ("get", "/admin"): {"303": SIGN_IN, "403": {"description": "An app key: the forbidden page.", "content": HTML}},
    ("get", "/static/{path}"): {"404": {"description": DESCRIPTIONS[404]}},
}
# SamplingParams keywords copied onto the request fields that feed it.
BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "maxItems", "minItems")


class ErrorDetail(BaseModel):
    message: str = Field(description="What went wrong and how to fix it.")
    type: str = Field(description="OpenAI's error type, e.g. `invalid_request_error`.")
    param: str | None = Field(default=None, description="The field or parameter at fault.")
    code: str | None = Field(default=None, description="A stable machine-readable code.")


class ErrorBody(BaseModel):
    """Every error response: ``{"error": {...}, "request_id": "..."}``."""

    error: ErrorDetail
    request_id: str = Field(description="Also in the X-Request-ID header; quote it when reporting a problem.")


def exactly_one_of(*names: str):
    """``json_schema_extra`` for a model that needs exactly one of ``names`` set (null = unset): a
    ``oneOf`` whose each branch requires one of them with a non-null value."""

    def extra(schema: dict[str, Any]) -> None:
        branches = []
        for name in names:
            prop = schema["properties"][name]
            typed = [b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"]
            value = typed[0] if len(typed) == 1 else {"anyOf": typed}
            branches.append({"required": [name], "properties": {name: value}})
        schema["oneOf"] = branches

    return extra


def install(app: FastAPI, settings: Settings) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            refine(schema, settings)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def refine(schema: dict[str, Any], settings: Settings) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (ErrorDetail, ErrorBody):
        components[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
    from server.responses import SCHEMAS

    for model in {m for m in SCHEMAS.values()}:
        components.update(model.model_json_schema(ref_template="#/components/schemas/{model}").pop("$defs", {}))
        components[model.__name__] = {k: v for k, v in model.model_json_schema(
            ref_template="#/components/schemas/{model}").items() if k != "$defs"}
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            op.setdefault("responses", {}).update(OTHER.get((method, path), {}))
            _declare_errors(op, EXTRA.get((method, path), set()))
            ok = next((c for c in ("200", "202") if c in op["responses"]), "200")
            content = op["responses"].setdefault(ok, {"description": "OK"}).setdefault("content", {})
            if (method, path) in SCHEMAS:
                content["application/json"] = {"schema": {"$ref": f"#/components/schemas/{SCHEMAS[(method, path)].__name__}"}}
            if (method, path) in CONTENT:
                if method == "get":  # these answer only in their own format
                    content.clear()
                content.update(CONTENT[(method, path)])
    _sampling_bounds(components, settings)


def _declare_errors(op: dict[str, Any], extra: set[int]) -> None:
    params = op.get("parameters", [])
    statuses = set(extra)
    if op.get("security"):
        statuses |= {401, 403, 429}
    if "requestBody" in op:
        statuses |= {400, 413, 422}
    if params:
        statuses |= {400, 422}
    if any(p.get("in") == "path" for p in params):
        statuses.add(404)
    responses = op.setdefault("responses", {})
    for status in statuses:
        responses.setdefault(str(status), {"description": DESCRIPTIONS[status]})
    for status, response in responses.items():
        if status.isdigit() and int(status) >= 400 and not _is_page_error(response):
            response["content"] = {"application/json": {"schema": {"$ref": REF}}}
            response["description"] = DESCRIPTIONS.get(int(status), response.get("description", ""))


def _is_page_error(response: dict[str, Any]) -> bool:
    return "text/html" in response.get("content", {})


def _sampling_bounds(components: dict[str, Any], settings: Settings) -> None:
    from agentstack.engines.params import SamplingParams

    source = SamplingParams.model_json_schema()["properties"]
    limits = {"max_tokens": settings.engine.max_tokens_limit, "max_completion_tokens": settings.engine.max_tokens_limit,
              "n": settings.engine.max_n}
    for name in ("ChatCompletionRequest", "GenerationParams"):
        props = components.get(name, {}).get("properties", {})
        for field, prop in props.items():
            bounds = _bounds_of(source.get("max_tokens" if field == "max_completion_tokens" else field, {}))
            if field in limits:
                bounds["maximum"] = limits[field]
            if bounds:
                _bound(prop, bounds)


def _bounds_of(prop: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for branch in prop.get("anyOf", [prop]):
        found.update({k: v for k, v in branch.items() if k in BOUNDS})
    return found


def _bound(prop: dict[str, Any], bounds: dict[str, Any]) -> None:
    """Apply ``bounds`` to the non-null branch of an ``anyOf: [T, null]`` property (or to ``prop``)."""
    branches = [b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"]
    for branch in branches:
        numeric = branch.get("type") in ("integer", "number")
        for key, value in bounds.items():
            if key in ("maxItems", "minItems") and branch.get("type") != "array":
                continue
            if key not in ("maxItems", "minItems") and not numeric:
                continue
            branch[key] = value
