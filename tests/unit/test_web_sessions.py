"""Web sessions and CSRF (server/sessions.py, server/routes/session.py, server/routes/web.py) on a
small app with the real key store, session store, auth dependencies and error mapping (no model)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from agentstack.config import AuthSettings
from server import errors
from server.auth import KeyStore
from server.deps import AppUser, Operator
from server.routes import session as session_routes
from server.routes import web as web_routes
from server.sessions import COOKIE, SECURE_COOKIE, SessionStore

pytestmark = pytest.mark.unit

APP_KEY = "app-key-0123456789abcdef"
OP_KEY = "op-key-0123456789abcdef"
KEYS = [{"id": "app1", "role": "app", "key": APP_KEY, "indexes": ["demo"]},
        {"id": "op1", "role": "operator", "key": OP_KEY}]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def make_app(keys=KEYS, clock=None, secret="s" * 32, trusted=()) -> FastAPI:
    auth = AuthSettings(keys=keys, session_secret=secret, session_hours=1)
    app = FastAPI()
    errors.install(app)
    app.state.services = SimpleNamespace(keys=KeyStore(auth))
    app.state.sessions = SessionStore(auth, trusted_origins=trusted, now=clock or Clock())
    probe = APIRouter()

    @probe.get("/t/app")
    def app_get(user: AppUser) -> dict:
        return {"key_id": user.key_id, "user_id": user.user_id}

    @probe.post("/t/app")
    def app_post(user: AppUser) -> dict:
        return {"key_id": user.key_id}

    @probe.post("/t/op")
    def op_post(user: Operator) -> dict:
        return {"key_id": user.key_id}

    app.include_router(probe)
    app.include_router(session_routes.router)
    app.include_router(web_routes.router)
    return app


def sign_in(client: TestClient, key: str = APP_KEY, **extra) -> dict:
    r = client.post("/v1/session", json={"key": key, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def test_sign_in_sets_an_httponly_strict_cookie_and_returns_a_csrf_token():
    client = TestClient(make_app())
    r = client.post("/v1/session", json={"key": APP_KEY, "user_id": "alice"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["key_id"] == "app1" and body["role"] == "app" and body["user_id"] == "alice"
    assert body["indexes"] == ["demo"] and body["csrf_token"]
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" not in cookie and "Path=/" in cookie and "Max-Age=3600" in cookie
    assert r.headers["cache-control"] == "no-store"
    assert APP_KEY not in cookie  # the key itself never goes into the cookie
    who = client.get("/v1/session").json()
    assert who["key_id"] == "app1" and who["user_id"] == "alice" and who["csrf_token"] == body["csrf_token"]
    assert client.get("/t/app").json() == {"key_id": "app1", "user_id": "alice"}


def test_over_https_the_cookie_is_secure_with_the_host_prefix():
    client = TestClient(make_app(), base_url="https://testserver")
    r = client.post("/v1/session", json={"key": APP_KEY})
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{SECURE_COOKIE}=") and "Secure" in cookie and "HttpOnly" in cookie
    assert client.get("/t/app").status_code == 200


def test_state_changing_requests_need_the_csrf_token():
    client = TestClient(make_app())
    token = sign_in(client)["csrf_token"]
    r = client.post("/t/app")
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
    r = client.post("/t/app", headers={"X-CSRF-Token": token[:-2] + "xx"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
    assert client.post("/t/app", headers={"X-CSRF-Token": token}).status_code == 200
    assert client.get("/t/app").status_code == 200  # safe methods need no token


def test_cross_site_requests_are_refused_even_with_the_token():
    client = TestClient(make_app())
    token = sign_in(client)["csrf_token"]
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Sec-Fetch-Site": "same-site"}):
        r = client.post("/t/app", headers={"X-CSRF-Token": token, **headers})
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed", headers
    r = client.post("/t/app", headers={"X-CSRF-Token": token, "Origin": "http://testserver",
                                       "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200
    fresh = TestClient(make_app())
    r = fresh.post("/v1/session", json={"key": APP_KEY}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and "set-cookie" not in r.headers  # no login CSRF


def test_bearer_requests_are_not_subject_to_csrf():
    client = TestClient(make_app())
    r = client.post("/t/app", headers={"Authorization": f"Bearer {APP_KEY}", "Origin": "https://other.example"})
    assert r.status_code == 200


def test_the_role_comes_from_the_key():
    client = TestClient(make_app())
    token = sign_in(client)["csrf_token"]
    r = client.post("/t/op", headers={"X-CSRF-Token": token})
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    op = TestClient(make_app())
    op_token = sign_in(op, OP_KEY)["csrf_token"]
    assert op.post("/t/op", headers={"X-CSRF-Token": op_token}).json() == {"key_id": "op1"}


def test_bad_keys_and_user_ids_are_refused():
    client = TestClient(make_app())
    r = client.post("/v1/session", json={"key": "not-the-key-000000000"})
    assert r.status_code == 401 and "set-cookie" not in r.headers
    r = client.post("/v1/session", json={"key": APP_KEY, "user_id": "bad user <x>"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "X-User-Id"
    assert client.get("/t/app").status_code == 401


def test_tampered_cookies_are_refused():
    client = TestClient(make_app())
    sign_in(client)
    value = client.cookies[COOKIE]
    body, sig = value.split(".")
    flipped = "B" if sig[-1] == "A" else "A"
    for forged in (f"{body}.{sig[:-1]}{flipped}", f"{body[:-2]}xx.{sig}", "garbage", f"{body}.{sig}.x"):
        client.cookies.clear()
        client.cookies.set(COOKIE, forged)
        r = client.get("/t/app")
        assert r.status_code == 401 and "sign in again" in r.json()["error"]["message"], forged
    other = TestClient(make_app(secret="t" * 32))  # a cookie signed by another secret
    other.cookies.set(COOKIE, value)
    assert other.get("/t/app").status_code == 401


def test_sessions_expire():
    clock = Clock()
    client = TestClient(make_app(clock=clock))
    sign_in(client)
    clock.now += 3599
    assert client.get("/t/app").status_code == 200
    clock.now += 2
    assert client.get("/t/app").status_code == 401


def test_sign_out_revokes_the_session():
    client = TestClient(make_app())
    token = sign_in(client)["csrf_token"]
    value = client.cookies[COOKIE]
    assert client.delete("/v1/session").status_code == 403  # sign-out also needs the token
    r = client.delete("/v1/session", headers={"X-CSRF-Token": token})
    assert r.status_code == 200 and r.json() == {"signed_out": True}
    assert f"{COOKIE}=" in r.headers["set-cookie"] and "Max-Age=0" in r.headers["set-cookie"]
    client.cookies.clear()
    client.cookies.set(COOKIE, value)  # a copy of the cookie kept by an attacker
    assert client.get("/t/app").status_code == 401


def test_a_changed_or_removed_key_ends_its_sessions():
    client = TestClient(make_app())
    sign_in(client)
    value = client.cookies[COOKIE]
    rotated = [{**KEYS[0], "key": "new-secret-0123456789"}, KEYS[1]]
    for keys in (rotated, [KEYS[1]]):
        later = TestClient(make_app(keys=keys))
        later.cookies.set(COOKIE, value)
        assert later.get("/t/app").status_code == 401


def test_pages_redirect_to_sign_in_and_keep_app_keys_out_of_the_console():
    anon = TestClient(make_app(), follow_redirects=False)
    for page in ("/", "/admin"):
        r = anon.get(page)
        assert r.status_code == 303 and r.headers["location"] == f"/login?next={page}"
    assert anon.get("/login").status_code == 200
    app_user = TestClient(make_app(), follow_redirects=False)
    sign_in(app_user)
    assert app_user.get("/").status_code == 200
    r = app_user.get("/admin")
    assert r.status_code == 403 and "Operators only" in r.text
    op = TestClient(make_app(), follow_redirects=False)
    sign_in(op, OP_KEY)
    r = op.get("/admin")
    assert r.status_code == 200 and "/static/js/admin/main.js" in r.text
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store"
    assert r.headers["x-content-type-options"] == "nosniff"


def test_origins_trusted_for_cors_may_write():
    client = TestClient(make_app(keys=[], trusted=["https://tools.example"]))
    headers = {"Origin": "https://tools.example", "Sec-Fetch-Site": "cross-site"}
    assert client.post("/t/op", headers=headers).status_code == 200
    assert client.post("/t/op", headers={**headers, "Origin": "https://evil.example"}).status_code == 403


def test_local_mode_needs_no_sign_in_but_refuses_cross_site_writes():
    client = TestClient(make_app(keys=[]), follow_redirects=False)
    assert client.get("/").status_code == 200 and client.get("/admin").status_code == 200
    who = client.get("/v1/session").json()
    assert who["local"] and who["role"] == "operator" and who["csrf_token"] is None
    assert client.post("/t/op").status_code == 200
    r = client.post("/t/op", headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"


def test_static_files_are_served_with_types_and_no_traversal():
    client = TestClient(make_app())
    r = client.get("/static/js/chat.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert client.get("/static/app.css").headers["content-type"].startswith("text/css")
    for bad in ("/static/../sessions.py", "/static/%2e%2e/sessions.py", "/static/chat.html", "/static/nope.js"):
        assert client.get(bad).status_code == 404, bad


STATIC = Path(web_routes.STATIC)


def test_the_pages_never_build_html_from_strings():
    """Answers and documents are untrusted: the scripts create text nodes only."""
    sinks = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|"
                       r"setAttribute\(\s*[\"']on")
    scripts = sorted(STATIC.rglob("*.js"))
    assert len(scripts) >= 10
    for path in scripts:
        assert not sinks.search(path.read_text("utf-8")), path
    for page in STATIC.glob("*.html"):
        text = page.read_text("utf-8")
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), f"inline script in {page.name}"
        assert not re.search(r"\son[a-z]+=", text), f"inline event handler in {page.name}"
