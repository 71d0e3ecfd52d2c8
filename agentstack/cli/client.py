"""The CLI's HTTP client for a running agentstack server.

Operator commands go through the server's API with a key, so the server does the work and the
audit log records who asked. Errors come back as one line that says how to fix the problem.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import typer

from agentstack.config import Settings


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class ApiClient:
    def __init__(self, settings: Settings, url: str | None = None, key: str | None = None):
        self.url = (url or settings.client_url).rstrip("/")
        secret = key or (settings.client.api_key.get_secret_value() if settings.client.api_key else None)
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=settings.client.timeout_s)

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.is_success:
            return response
        try:
            err = response.json().get("error", {})
            message = err.get("message") or response.text
        except ValueError:
            message = response.text
        if response.status_code == 401:
            message += " (set AGENTSTACK_CLIENT__API_KEY or pass --key)"
        raise ApiError(response.status_code, message)

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._check(self._http.request(method, path, **kwargs))
        except httpx.ConnectError:
            raise ApiError(0, f"cannot reach agentstack at {self.url}: start it with `make serve` or "
                              "`agentstack serve`, or set AGENTSTACK_CLIENT__URL / --url") from None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self._send("GET", path, **kwargs).json()

    def post(self, path: str, payload: Any = None, **kwargs: Any) -> Any:
        response = self._send("POST", path, json=payload, **kwargs)
        return response.json() if "json" in response.headers.get("content-type", "") else response.text

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self._send("DELETE", path, **kwargs).json()

    def stream_sse(self, path: str, payload: Any) -> Iterator[dict[str, Any]]:
        """POST and yield each SSE ``data:`` JSON object (``event:`` names go in ``_event``)."""
        try:
            with self._http.stream("POST", path, json=payload) as response:
                if not response.is_success:
                    response.read()
                    self._check(response)
                event = None
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data = line[5:].strip()
                        if data == "[DONE]":
                            return
                        obj = json.loads(data)
                        if event:
                            obj["_event"] = event
                        event = None
                        yield obj
        except httpx.ConnectError:
            raise ApiError(0, f"cannot reach agentstack at {self.url}: start it with `make serve`") from None


def user_lines(prompt: str = "you> ") -> Iterator[str]:
    """Non-empty lines typed by the user, until Ctrl-D, Ctrl-C, /exit or /quit."""
    while True:
        try:
            line = input(prompt).strip()
        except (EOFError, KeyboardInterrupt):
            typer.echo("")
            return
        if line in ("/exit", "/quit"):
            return
        if line:
            yield line


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print an error line to stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)
