"""Web sign-in: an API key exchanged for a session cookie (``server/sessions.py``).

* ``POST /v1/session`` (public) ``{"key": "...", "user_id": null}``: checks the key like a bearer
  call, sets the HttpOnly ``SameSite=Strict`` cookie (``Secure`` over https) and returns who
  signed in with the CSRF token. Refused from another site. With no keys configured (local mode)
  no cookie is needed: it answers with the local operator.
* ``GET /v1/session`` (app): who the caller is (key id, role, user, indexes) and, for a cookie
  session, its CSRF token and expiry. Pages call it on load.
* ``DELETE /v1/session`` (public): sign out: the session is revoked and the cookie cleared.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from agentstack.errors import AuthError
from server.auth import Principal
from server.deps import USER_ID_OR_EMPTY, AppUser, Svc, client_address
from server.sessions import COOKIE, SECURE_COOKIE, CsrfError, SessionStore, same_origin

router = APIRouter(tags=["Web session"])
NO_STORE = {"Cache-Control": "no-store"}


def get_sessions(request: Request) -> SessionStore:
    return request.app.state.sessions


Sessions = Annotated[SessionStore, Depends(get_sessions)]


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=512, description="An API key.")
    user_id: str | None = Field(default=None, max_length=128, json_schema_extra={"pattern": USER_ID_OR_EMPTY},
                                description="The end user's id, as `X-User-Id` "
                                "would give it (letters, digits and _.@:+-); unset = the key itself.")


def _who(principal: Principal) -> dict[str, Any]:
    return {"key_id": principal.key_id, "role": principal.role, "user_id": principal.user_id,
            "indexes": list(principal.indexes) if principal.indexes is not None else None,
            "local": principal.local}


@router.post("/v1/session", summary="Sign in: exchange an API key for a session cookie (public)")
async def sign_in(body: SignIn, request: Request, svc: Svc, sessions: Sessions) -> JSONResponse:
    if not same_origin(request, sessions.trusted_origins):
        raise CsrfError("cross-site sign-in refused", fix="sign in on this server's own /login page")
    principal = svc.keys.authenticate(body.key, body.user_id, client_address(request))
    if principal.local:
        return JSONResponse({**_who(principal), "csrf_token": None, "expires_at": None}, headers=NO_STORE)
    key = svc.keys.by_id(principal.key_id)
    if key is None:  # the configuration changed under us
        raise AuthError("invalid API key", fix="check the key, or ask an operator for one")
    token, session = sessions.issue(key, principal.user_id)
    response = JSONResponse({**_who(principal), "csrf_token": sessions.csrf_token(session),
                             "expires_at": session.expires_at}, headers=NO_STORE)
    secure = request.url.scheme == "https"
    response.set_cookie(sessions.cookie_name(request), token, max_age=sessions.max_age, path="/", secure=secure,
                        httponly=True, samesite="strict")
    return response


@router.get("/v1/session", summary="Who is signed in, with the session's CSRF token")
async def who_am_i(user: AppUser, request: Request, sessions: Sessions) -> JSONResponse:
    session = getattr(request.state, "session", None)
    return JSONResponse({**_who(user), "csrf_token": sessions.csrf_token(session) if session else None,
                         "expires_at": session.expires_at if session else None}, headers=NO_STORE)


@router.delete("/v1/session", summary="Sign out: revoke the session and clear its cookie (public)")
async def sign_out(request: Request, sessions: Sessions) -> JSONResponse:
    session = sessions.session(request)
    sessions.check_csrf(request, session)
    if session is not None:
        sessions.revoke(session)
    response = JSONResponse({"signed_out": session is not None}, headers=NO_STORE)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    response.delete_cookie(SECURE_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response
