"""Browser sessions: an API key exchanged for a signed, HttpOnly cookie, and CSRF protection.

A browser signs in once with its API key (``POST /v1/session``); from then on it is authenticated
by the cookie alone, which scripts cannot read. The cookie is ``payload.signature``: the payload
names the key id, the end user, a random session id, a fingerprint of the key's digest and the
expiry; the signature is an HMAC-SHA256 under ``auth.session_secret`` (random per process when
unset, so a restart signs everyone out). Nothing secret is in the payload. At every request the
key is looked up again, so a key removed from the configuration, or given a new secret (the
fingerprint no longer matches), ends its sessions; the role and indexes always come from the
current configuration, never from the cookie. Sign-out revokes the session id in the shared state
(this process, or Redis when replicas share state, so a signed-out cookie is refused by all).

CSRF: the cookie is ``SameSite=Strict`` and, in addition, every state-changing request that is
authenticated by the cookie must carry ``X-CSRF-Token``: an HMAC of the session id under a
separate derived key, handed to the page by ``GET /v1/session`` (a signed double-submit token:
an attacker's page can neither read it nor compute it). Requests whose ``Origin`` is another
site, or whose ``Sec-Fetch-Site`` says ``cross-site``, are refused whenever they are not
authenticated by a bearer token (including the no-keys local mode, which has no cookie), unless
the origin is listed in ``server.cors_origins``.

This module knows nothing about pages or routes; ``server/deps.py`` calls :meth:`principal`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request

from agentstack.config import ApiKey, AuthSettings
from agentstack.errors import AuthError, ForbiddenError
from server.auth import KeyStore, Principal

COOKIE = "agentstack_session"
SECURE_COOKIE = "__Host-agentstack_session"  # browsers accept this name only with Secure, Path=/ and no Domain
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CsrfError(ForbiddenError):
    """A cookie-authenticated request without a valid CSRF token, or from another site (403)."""

    code = "csrf_failed"


@dataclass(frozen=True)
class Session:
    key_id: str
    user_id: str
    sid: str
    fingerprint: str
    issued_at: int
    expires_at: int

    def payload(self) -> dict[str, Any]:
        return {"k": self.key_id, "u": self.user_id, "s": self.sid, "f": self.fingerprint, "iat": self.issued_at,
                "exp": self.expires_at}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def same_origin(request: Request, trusted: frozenset[str] = frozenset()) -> bool:
    """False when the browser says the request comes from another site, unless its ``Origin`` is
    one the operator trusts (``server.cors_origins``). Clients that send neither ``Origin`` nor
    ``Sec-Fetch-Site`` (the CLI, SDKs) are not browsers and pass."""
    origin = request.headers.get("origin")
    if origin is not None and (origin in trusted or "*" in trusted):
        return True
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    if origin is None:
        return True
    if origin == "null":
        return False
    return urlsplit(origin).netloc.lower() == (request.headers.get("host") or "").lower()


class SessionStore:
    def __init__(self, settings: AuthSettings, *, trusted_origins: list[str] | tuple[str, ...] = (),
                 now: Any = time.time, state: Any = None):
        from agentstack.state.memory import MemoryState

        secret = settings.session_secret.get_secret_value().encode() if settings.session_secret else \
            secrets.token_bytes(32)
        self._sign_key = hmac.new(secret, b"agentstack session v1", hashlib.sha256).digest()
        self._csrf_key = hmac.new(secret, b"agentstack csrf v1", hashlib.sha256).digest()
        self.max_age = int(settings.session_hours * 3600)
        self.trusted_origins = frozenset(o.rstrip("/") for o in trusted_origins)
        self._now = now
        self._state = state if state is not None else MemoryState(wall=now)  # revoked session ids

    # -- tokens ------------------------------------------------------------------------------------
    def fingerprint(self, key: ApiKey) -> str:
        return _b64(hmac.new(self._sign_key, b"key:" + key.digest.encode(), hashlib.sha256).digest()[:12])

    def issue(self, key: ApiKey, user_id: str) -> tuple[str, Session]:
        """A new session for ``key`` (already authenticated): the cookie value and the session."""
        now = int(self._now())
        session = Session(key.id, user_id, secrets.token_hex(16), self.fingerprint(key), now, now + self.max_age)
        body = _b64(json.dumps(session.payload(), separators=(",", ":")).encode())
        return f"{body}.{self._sign(body)}", session

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._sign_key, body.encode("ascii"), hashlib.sha256).digest())

    def decode(self, token: str | None) -> Session | None:
        """The session a cookie value stands for, or None (tampered, expired, revoked, malformed)."""
        if not token or token.count(".") != 1 or len(token) > 4096:
            return None
        body, signature = token.split(".")
        try:
            if not hmac.compare_digest(signature, self._sign(body)):
                return None
            p = json.loads(_unb64(body))
            session = Session(str(p["k"]), str(p["u"]), str(p["s"]), str(p["f"]), int(p["iat"]), int(p["exp"]))
        except (ValueError, KeyError, TypeError, UnicodeError):
            return None
        if session.expires_at <= self._now():
            return None
        if self._state.revoked(session.sid):
            return None
        return session

    def csrf_token(self, session: Session) -> str:
        return _b64(hmac.new(self._csrf_key, session.sid.encode(), hashlib.sha256).digest())

    def revoke(self, session: Session) -> None:
        self._state.revoke(session.sid, session.expires_at)

    # -- requests ----------------------------------------------------------------------------------
    @staticmethod
    def cookie_name(request: Request) -> str:
        return SECURE_COOKIE if request.url.scheme == "https" else COOKIE

    @staticmethod
    def cookie_value(request: Request) -> str | None:
        return request.cookies.get(SECURE_COOKIE) or request.cookies.get(COOKIE)

    def session(self, request: Request) -> Session | None:
        return self.decode(self.cookie_value(request))

    def check_csrf(self, request: Request, session: Session | None) -> None:
        """Refuse a state-changing request from another site, or one authenticated by ``session``
        without its CSRF token. Safe methods pass."""
        if request.method in SAFE_METHODS:
            return
        if not same_origin(request, self.trusted_origins):
            raise CsrfError("cross-site request refused", fix="use the page served by this server, or add the "
                            "calling site to server.cors_origins")
        if session is None:
            return
        given = request.headers.get(CSRF_HEADER) or ""
        if not hmac.compare_digest(given.encode(), self.csrf_token(session).encode()):
            raise CsrfError("missing or invalid CSRF token", fix="reload the page (it fetches a fresh token "
                            "from GET /v1/session) and send it as X-CSRF-Token")

    def resolve(self, session: Session, keys: KeyStore) -> Principal | None:
        """The principal of a decoded session under the current key configuration."""
        key = keys.by_id(session.key_id)
        if key is None or not hmac.compare_digest(session.fingerprint, self.fingerprint(key)):
            return None
        return keys.principal_for(key, session.user_id)

    def principal(self, request: Request) -> Principal | None:
        """Called by ``server.deps.get_principal`` when the request has no bearer token: the
        session's principal, None when there is no session cookie, :class:`AuthError` when the
        cookie is no longer valid and :class:`CsrfError` when the request fails the CSRF check."""
        raw = self.cookie_value(request)
        session = self.decode(raw)
        self.check_csrf(request, session)
        if raw is None:
            return None
        keys: KeyStore = request.app.state.services.keys
        principal = self.resolve(session, keys) if session is not None else None
        if principal is None:
            if keys.open:
                return None  # local mode: every local caller is the operator anyway
            raise AuthError("your session has ended (expired, signed out, or its key was changed)",
                            fix="sign in again at /login")
        request.state.principal = principal
        request.state.session = session
        return principal
