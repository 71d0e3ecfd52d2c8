"""FastAPI dependencies as ``Annotated`` aliases: ``Svc`` (the services), ``AppUser`` and
``Operator`` (an authenticated principal with at least that role). Routes read "look up, check, act".
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from agentstack.errors import ForbiddenError
from server.auth import USER_ID, Principal
from server.services import Services


def get_services(request: Request) -> Services:
    return request.app.state.services


Svc = Annotated[Services, Depends(get_services)]


def client_address(request: Request) -> str | None:
    """The caller's address (uvicorn applies X-Forwarded-For only from --forwarded-allow-ips)."""
    return request.client.host if request.client else None


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


USER_ID_OR_EMPTY = USER_ID.pattern.replace("{1,128}", "{0,128}")  # an empty X-User-Id is no user id
# Declared as the OpenAPI security scheme ``bearer`` (clients and API fuzzers read it from
# /openapi.json); auto_error=False so that a missing key reaches KeyStore, which answers 401 in
# OpenAI's error shape, and so that a web session cookie can stand in for it.
BEARER = HTTPBearer(auto_error=False, scheme_name="bearer", description="An API key: `Authorization: Bearer <key>`.")
USER_HEADER = Header(description="The end user the app acts for (feedback, conversations and "
                     "privacy deletes are per user).",
                     json_schema_extra={"pattern": USER_ID_OR_EMPTY, "maxLength": 128})


def get_principal(request: Request, svc: Svc,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)] = None,
                  x_user_id: Annotated[str | None, USER_HEADER] = None) -> Principal:
    token = credentials.credentials.strip() if credentials is not None else None
    session = getattr(request.app.state, "sessions", None)
    if token is None and session is not None:
        found = session.principal(request)
        if found is not None:
            return found
    principal = svc.keys.authenticate(token, x_user_id, client_address(request))
    request.state.principal = principal
    return principal


def require(role: str):
    def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if not principal.has(role):
            raise ForbiddenError(f"this route needs the {role!r} role; key {principal.key_id!r} has "
                                 f"{principal.role!r}", fix="use a key with that role")
        return principal

    return check


AppUser = Annotated[Principal, Depends(require("app"))]
Operator = Annotated[Principal, Depends(require("operator"))]
