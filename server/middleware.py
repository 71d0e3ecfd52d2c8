"""Pure ASGI middleware (safe with streaming responses):

* :class:`RequestContext`: every response carries ``X-Request-ID`` (the client's, if it is a sane
  token, else a new one), and the request is counted in Prometheus by route template and status.
* :class:`BodyLimit`: bodies over ``max_body_bytes`` get 413, whether announced by
  ``Content-Length`` or discovered while streaming in.
* :class:`LocalHostCheck` (local mode only: no API keys, every caller is the operator): requests
  whose ``Host`` names anything but a loopback address or a name in ``server.allowed_hosts`` get
  403. A web page that rebinds its own DNS name to 127.0.0.1 sends its own name as ``Host`` (and
  as ``Origin``, so the same-origin check alone cannot tell), and is refused here.
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.exceptions import HTTPException

SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
Scope = dict[str, Any]


def _error_body(status: int, message: str, request_id: str, code: str, kind: str = "invalid_request_error") -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code},
                       "request_id": request_id}).encode()


async def _send_error(send: Any, status: int, body: bytes, rid: str) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"x-request-id", rid.encode())]})
    await send({"type": "http.response.body", "body": body})


class RequestContext:
    def __init__(self, app: Any, registry: CollectorRegistry):
        self.app = app
        self.requests = Counter("agentstack_http_requests", "HTTP requests by route and status.",
                                ["method", "route", "status"], registry=registry)
        self.latency = Histogram("agentstack_http_request_duration_seconds", "Time to the response headers.",
                                 ["route"], registry=registry,
                                 buckets=(0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30))

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if SAFE_ID.match(incoming) else f"req-{secrets.token_hex(8)}"
        scope.setdefault("state", {})["request_id"] = rid
        started = time.perf_counter()
        status_holder = {"status": 500}

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
                route = scope.get("route")
                path = getattr(route, "path", None) or "unmatched"
                self.latency.labels(route=path).observe(time.perf_counter() - started)
                self.requests.labels(method=scope["method"], route=path, status=str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, send_with_id)


class BodyLimit:
    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = scope.get("state", {}).get("request_id", "-")
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reject(send, rid)
        seen = 0

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:  # raised inside the route's body read: becomes a 413
                    raise HTTPException(413, f"request body over the limit of {self.max_bytes} bytes")
            return message

        await self.app(scope, limited_receive, send)

    async def _reject(self, send: Any, rid: str) -> None:
        body = _error_body(413, f"request body over the limit of {self.max_bytes} bytes", rid, "body_too_large")
        await _send_error(send, 413, body, rid)


def host_name(header: str) -> str:
    """The name in a ``Host`` header: no port, no brackets, lower case, no trailing dot."""
    value = header.strip().lower()
    if value.startswith("["):
        value = value[1:value.find("]")] if "]" in value else value[1:]
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def is_loopback_name(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class LocalHostCheck:
    def __init__(self, app: Any, allowed: list[str] | tuple[str, ...] = ()):
        self.app = app
        self.allowed = frozenset(host_name(h) for h in allowed)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        raw = dict(scope.get("headers") or []).get(b"host")
        name = host_name(raw.decode("latin-1")) if raw is not None else None
        if name is None or is_loopback_name(name) or name in self.allowed:  # no Host: not a browser
            return await self.app(scope, receive, send)
        rid = scope.get("state", {}).get("request_id", "-")
        body = _error_body(403, f"Host {name!r} is not allowed: with no API keys configured this server answers "
                           "only loopback names (127.0.0.1, localhost, [::1]) (fix: open it as "
                           "http://127.0.0.1:<port>, add the name to server.allowed_hosts, or configure API keys)",
                           rid, "host_not_allowed", kind="permission_error")
        await _send_error(send, 403, body, rid)
