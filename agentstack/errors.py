"""Domain errors. Each carries a message and, where there is one, how to fix the problem.

They subclass built-in exceptions so plain ``except ValueError`` still works. The HTTP status for
each lives in one place (``server/errors.py``); nothing here knows about HTTP.
"""

from __future__ import annotations


class AgentstackError(Exception):
    """Base of every agentstack error. ``fix`` tells the user what to do about it."""

    code = "agentstack_error"

    def __init__(self, message: str, *, fix: str | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.param = param

    def __str__(self) -> str:
        return f"{self.message} (fix: {self.fix})" if self.fix else self.message


class ConfigError(AgentstackError, ValueError):
    code = "config_error"


class InvalidRequestError(AgentstackError, ValueError):
    """A request parameter is out of range or inconsistent; ``param`` names it."""

    code = "invalid_request"


class ContextLengthError(InvalidRequestError):
    code = "context_length_exceeded"


class NotFoundError(AgentstackError, LookupError):
    code = "not_found"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"


class ConflictError(AgentstackError):
    code = "conflict"


class OverloadedError(AgentstackError):
    """The engine's queue is full. ``retry_after`` is a hint in seconds."""

    code = "overloaded"

    def __init__(self, message: str, *, retry_after: float = 1.0, fix: str | None = None):
        super().__init__(message, fix=fix)
        self.retry_after = retry_after


class RateLimitedError(OverloadedError):
    code = "rate_limited"


class EngineUnavailableError(AgentstackError, ConnectionError):
    """The chat engine cannot serve: a remote server is down, or the model failed to load."""

    code = "engine_unavailable"


class CancelledError(AgentstackError):
    code = "cancelled"


class ClientDisconnected(CancelledError):
    """The caller went away; its work was cancelled. Nobody reads the answer."""

    code = "client_disconnected"


class AuthError(AgentstackError, PermissionError):
    code = "unauthorized"


class ForbiddenError(AgentstackError, PermissionError):
    code = "forbidden"


class DependencyMissingError(AgentstackError, ImportError):
    """An optional heavy dependency is not installed."""

    code = "dependency_missing"


def require(module: str, *, extra: str | None = None, package: str | None = None):
    """Import an optional dependency, or fail with the install command to run."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        target = f"'agentstack[{extra}]'" if extra else (package or module)
        raise DependencyMissingError(f"{module} is not installed ({exc})",
                                     fix=f"pip install -c constraints.txt {target}") from exc
