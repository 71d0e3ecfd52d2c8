"""The web pages: the chat (``/``, app role), the operator console (``/admin``) and sign-in
(``/login``), plus their static files (``/static/...``, shipped in ``server/web/static``: plain
HTML, CSS and JavaScript modules, no build step).

Pages are static shells; their scripts read everything through the JSON API with the session
cookie. The page routes only decide who may load which shell: without a valid session (or bearer
key) a page redirects to ``/login``; an app-role caller asking for ``/admin`` gets a 403 page.
Every page carries a strict Content-Security-Policy (scripts and styles from this origin only, no
inline script, no framing) and ``Cache-Control: no-store``.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from agentstack.errors import AuthError, NotFoundError, RateLimitedError
from server.auth import Principal
from server.deps import _bearer, client_address

router = APIRouter(tags=["Web pages"])
STATIC = Path(__file__).resolve().parent.parent / "web" / "static"
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
            "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": PAGE_CSP, "X-Frame-Options": "DENY",
                    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                    "Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Resource-Policy": "same-origin",
                    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()"}
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml",
         ".html": "text/html; charset=utf-8"}


def page_principal(request: Request) -> Principal | None:
    """The caller of a page, or None when nobody valid is signed in (the page then redirects)."""
    svc = request.app.state.services
    token = _bearer(request.headers.get("authorization"))
    try:
        if token is None:
            found = request.app.state.sessions.principal(request)
            if found is not None:
                return found
        return svc.keys.authenticate(token, None, client_address(request))
    except (AuthError, RateLimitedError):
        return None


def _page(name: str, status: int = 200) -> FileResponse:
    return FileResponse(STATIC / name, status_code=status, media_type=TYPES[".html"],
                        headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})


def _sign_in(next_page: str) -> RedirectResponse:
    return RedirectResponse(f"/login?next={next_page}", status_code=303,
                            headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})


@router.get("/", summary="The chat page (app role; redirects to /login without a session)",
            response_class=FileResponse)
async def chat_page(request: Request) -> Response:
    if page_principal(request) is None:
        return _sign_in("/")
    return _page("chat.html")


@router.get("/admin", summary="The operator console (operator role; 403 page for app keys)",
            response_class=FileResponse)
async def console_page(request: Request) -> Response:
    principal = page_principal(request)
    if principal is None:
        return _sign_in("/admin")
    if not principal.has("operator"):
        return _page("forbidden.html", status=403)
    return _page("admin.html")


@router.get("/login", summary="Sign-in page (public)", response_class=FileResponse)
async def login_page() -> Response:
    return _page("login.html")


@router.get("/static/{path:path}", summary="The pages' scripts and styles (public)", response_class=FileResponse)
async def static_file(path: str) -> Response:
    target = (STATIC / path).resolve()
    if STATIC not in target.parents or not target.is_file() or target.suffix not in TYPES \
            or target.suffix == ".html":
        raise NotFoundError(f"no static file {path!r}")
    media = TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    return FileResponse(target, media_type=media,
                        headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})
