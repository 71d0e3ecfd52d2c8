"""The FastAPI application: ``create_app(settings)`` and ``serve(settings)``.

The lifespan builds and warms the services (engine, databases, key store); routes live in
``server/routes/`` one file per resource; domain errors become HTTP responses in
``server/errors.py``. The server holds no business logic.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from agentstack import __version__
from agentstack.config import Settings, load_settings
from agentstack.engines.base import ChatEngine
from agentstack.errors import ConfigError
from server import errors, openapi
from server.middleware import BodyLimit, LocalHostCheck, RequestContext, is_loopback_name
from server.services import Services
from server.sessions import SessionStore

log = logging.getLogger(__name__)

ROUTERS = [
    "server.routes.health",
    "server.routes.openai",
    "server.routes.indexes",
    "server.routes.chat",
    "server.routes.feedback",
    "server.routes.alignment",
    "server.routes.admin",
    "server.routes.evaluation",
    "server.routes.session",
    "server.routes.web",
]


def _include_routers(app: FastAPI) -> None:
    import importlib

    for name in ROUTERS:
        app.include_router(importlib.import_module(name).router)


def create_app(settings: Settings | None = None, *, engine: ChatEngine | None = None,
               startup_hooks: list[Any] | None = None) -> FastAPI:
    """Build the app. ``engine``: an already warmed engine to share (tests); the app then does not
    close it. ``startup_hooks``: callables ``hook(services)`` run after warm-up."""
    settings = settings or load_settings()
    check_shared_state(settings)
    registry = CollectorRegistry()
    from agentstack.state import build_state

    shared = build_state(settings)  # rate limits, revocations, notices: this process or Redis

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = Services.create(settings, registry, engine=engine, shared=shared)
        await services.start()
        for hook in startup_hooks or []:
            await hook(services)
        app.state.services = services
        try:
            yield
        finally:
            await services.aclose()

    app = FastAPI(title="agentstack", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible chat with retrieval, tools and feedback-driven alignment. "
                              "Authenticate with `Authorization: Bearer <key>`; name your end user with "
                              "`X-User-Id`.")
    errors.install(app)
    openapi.install(app, settings)
    app.state.sessions = SessionStore(settings.auth, trusted_origins=settings.server.cors_origins,
                                      state=shared)  # web sign-in
    app.add_middleware(BodyLimit, max_bytes=settings.server.max_body_bytes)
    if not settings.auth.keys:  # local mode: every caller is the operator, so only loopback names may call
        app.add_middleware(LocalHostCheck, allowed=settings.server.allowed_hosts)
    app.add_middleware(RequestContext, registry=registry)
    if settings.server.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.server.cors_origins, allow_credentials=True,
                           allow_methods=["*"], allow_headers=["*"])
    _include_routers(app)
    return app


def is_loopback(host: str) -> bool:
    """Does binding ``host`` keep the server on this machine (names are resolved)?"""
    if is_loopback_name(host):
        return True
    try:
        ipaddress.ip_address(host)
        return False
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except OSError:
            return False


def check_shared_state(settings: Settings) -> None:
    """Replicas sharing state must sign session cookies with one secret, or a cookie from one is
    refused by the others (and a random per-process secret would end every session at a restart)."""
    if settings.shared_state and settings.auth.session_secret is None:
        raise ConfigError("auth.session_secret is not set, but this server shares state with other replicas "
                          "(database.url is PostgreSQL or state.redis_url is set): every replica must sign web "
                          "sessions with the same secret",
                          fix="set AGENTSTACK_AUTH__SESSION_SECRET to the same random string (32+ characters, e.g. "
                              "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`) on every replica")


def check_bind(settings: Settings) -> None:
    """No keys → loopback only. Raises :class:`ConfigError` otherwise."""
    if not settings.auth.keys and not is_loopback(settings.server.host):
        raise ConfigError(f"refusing to bind {settings.server.host}: no API keys are configured, so the server "
                          "would be open to the network",
                          fix="configure keys (AGENTSTACK_AUTH__KEYS or [auth] in agentstack.toml), or bind 127.0.0.1")


async def build_demo_index(services: Services) -> None:
    """First start: index the project's own docs as ``demo`` so a new user can ask about them."""
    import asyncio

    from agentstack.index.manager import ensure_demo_index

    try:
        report = await asyncio.to_thread(ensure_demo_index, services.settings, manager=services.indexes)
    except Exception:  # the API still serves; the operator sees why in the log
        log.exception("could not build the demo index")
        return
    if report is not None:
        log.info("demo index ready: ask with `agentstack chat --mode rag --index demo`")


def serve(settings: Settings) -> None:
    import uvicorn

    check_bind(settings)
    check_shared_state(settings)
    from agentstack.db import open_db

    open_db(settings).close()  # a schema that is not current stops here, naming `agentstack db migrate`
    if not settings.auth.keys:
        log.warning("no API keys configured: serving on %s only (loopback); every local caller is an operator",
                    settings.server.host)
    app = create_app(settings, startup_hooks=[build_demo_index] if settings.server.build_demo_index else [])
    uvicorn.run(app, host=settings.server.host, port=settings.server.port, log_level=settings.log_level.lower(),
                timeout_graceful_shutdown=10)
