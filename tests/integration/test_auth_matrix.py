"""Every route × {no key, wrong key, app key, operator key}. The table below is the contract: a new
route fails this test until its role is written here."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import APP_KEY, OPERATOR_KEY

pytestmark = pytest.mark.integration

PUBLIC, APP, OPERATOR = "public", "app", "operator"
# Web pages: without a valid session or key they redirect to /login (303); an app key asking for an
# operator page gets a 403 page (HTML, not JSON).
PAGE_APP, PAGE_OPERATOR = "page:app", "page:operator"

ROUTES: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): OPERATOR,
    ("GET", "/v1/models"): APP,
    ("GET", "/v1/models/{model_id}"): APP,
    ("POST", "/v1/chat/completions"): APP,
    ("POST", "/tokenize"): APP,
    ("POST", "/v1/embeddings"): APP,
    ("POST", "/v1/load_lora_adapter"): OPERATOR,
    ("POST", "/v1/unload_lora_adapter"): OPERATOR,
    ("POST", "/v1/feedback"): APP,
    ("GET", "/v1/feedback/stats"): APP,
    ("GET", "/v1/admin/feedback/export"): OPERATOR,
    ("POST", "/v1/admin/alignment/jobs"): OPERATOR,
    ("GET", "/v1/admin/alignment/jobs"): OPERATOR,
    ("GET", "/v1/admin/alignment/jobs/{job_id}"): OPERATOR,
    ("POST", "/v1/admin/alignment/jobs/{job_id}/cancel"): OPERATOR,
    ("GET", "/v1/admin/models"): OPERATOR,
    ("POST", "/v1/admin/models/{version}/promote"): OPERATOR,
    ("POST", "/v1/admin/models/rollback"): OPERATOR,
    ("POST", "/v1/admin/models/{version}/selectable"): OPERATOR,
    ("GET", "/v1/admin/audit"): OPERATOR,
    ("DELETE", "/v1/admin/users/{user_id}/data"): OPERATOR,
    ("GET", "/v1/indexes"): APP,
    ("POST", "/v1/indexes/{name}/search"): APP,
    ("GET", "/v1/indexes/{name}/documents"): APP,
    ("POST", "/v1/indexes/{name}/documents"): OPERATOR,
    ("DELETE", "/v1/indexes/{name}/documents/{ref}"): OPERATOR,
    ("GET", "/v1/indexes/{name}/stats"): OPERATOR,
    ("GET", "/v1/indexes/{name}/verify"): OPERATOR,
    ("POST", "/v1/indexes/{name}/rebuild"): OPERATOR,
    ("POST", "/v1/chat"): APP,
    ("POST", "/v1/chat/{response_id}/regenerate"): APP,
    ("GET", "/v1/conversations"): APP,
    ("GET", "/v1/conversations/{conversation_id}"): APP,
    ("DELETE", "/v1/conversations/{conversation_id}"): APP,
    ("GET", "/v1/admin/eval/reports"): OPERATOR,
    ("GET", "/v1/admin/eval/reports/{run_id}"): OPERATOR,
    ("GET", "/v1/admin/eval/reports/{run_id}/html"): OPERATOR,
    ("POST", "/v1/session"): PUBLIC,
    ("GET", "/v1/session"): APP,
    ("DELETE", "/v1/session"): PUBLIC,
    ("GET", "/"): PAGE_APP,
    ("GET", "/admin"): PAGE_OPERATOR,
    ("GET", "/login"): PUBLIC,
    ("GET", "/static/{path}"): PUBLIC,
}

IGNORED = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


PLACEHOLDERS = {"{model_id}": "agentstack", "{job_id}": "job-none", "{version}": "v999-none",
                "{user_id}": "nobody", "{name}": "no-such-index", "{ref}": "doc-none", "{response_id}": "resp-none",
                "{conversation_id}": "conv-none", "{run_id}": "run-none", "{path}": "app.css"}


def _concrete(path: str) -> str:
    for placeholder, value in PLACEHOLDERS.items():
        path = path.replace(placeholder, value)
    assert "{" not in path, f"add a placeholder value for {path}"
    return path


def _app_routes(app) -> set[tuple[str, str]]:
    """Every (method, path) the app serves, from its OpenAPI schema."""
    return {(method.upper(), path) for path, ops in app.openapi()["paths"].items() for method in ops
            if path not in IGNORED}


@pytest.fixture(scope="module")
def server(embedded_engine, tmp_path_factory):
    from server.app import create_app
    from tests.conftest import LiveServer, make_settings

    # This module sends a wrong key to every route on purpose: lift the wrong-key throttle.
    settings = make_settings(tmp_path_factory.mktemp("auth"), auth={"max_failed_per_minute": 100_000})
    with LiveServer(create_app(settings, engine=embedded_engine)) as srv:
        yield srv


def test_every_route_has_a_declared_role(server):
    assert _app_routes(server.app) == set(ROUTES)


@pytest.mark.parametrize("method,path", sorted(ROUTES))
def test_role_matrix(server, method, path):
    role = ROUTES[(method, path)]
    url = server.url + _concrete(path)
    keys = {"none": None, "wrong": "not-a-real-key-000000000", "app": APP_KEY, "operator": OPERATOR_KEY}
    for who, key in keys.items():
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        response = httpx.request(method, url, headers=headers, json={} if method == "POST" else None, timeout=60)
        status = response.status_code
        if role in (PAGE_APP, PAGE_OPERATOR):
            _check_page(role, who, response)
            continue
        if role == PUBLIC:
            expected_denial = None
        elif who in ("none", "wrong"):
            expected_denial = 401
        elif role == OPERATOR and who == "app":
            expected_denial = 403
        else:
            expected_denial = None
        if expected_denial is None:
            assert status not in (401, 403), (who, status, response.text)
        else:
            assert status == expected_denial, (who, status, response.text)
            assert response.json()["error"]["type"] in ("authentication_error", "permission_error")
        assert response.headers["x-request-id"]


def _check_page(role: str, who: str, response: httpx.Response) -> None:
    status = response.status_code
    if who in ("none", "wrong"):
        assert status == 303 and response.headers["location"].startswith("/login?next="), (who, status)
    elif role == PAGE_OPERATOR and who == "app":
        assert status == 403 and response.headers["content-type"].startswith("text/html"), (who, status)
    else:
        assert status == 200 and response.headers["content-type"].startswith("text/html"), (who, status)
    assert response.headers["x-request-id"] and response.headers["cache-control"] == "no-store"


def test_no_keys_means_loopback_only():
    from agentstack.config import load_settings
    from agentstack.errors import ConfigError
    from server.app import check_bind

    check_bind(load_settings(server={"host": "127.0.0.1"}))
    with pytest.raises(ConfigError, match="no API keys"):
        check_bind(load_settings(server={"host": "0.0.0.0"}))
    check_bind(load_settings(server={"host": "0.0.0.0"}, auth={"keys": [{"id": "a", "role": "app",
                                                                          "key": "x" * 20}]}))


def test_rate_limit_answers_429_with_retry_after(server):
    from agentstack.config import ApiKey, AuthSettings
    from agentstack.errors import RateLimitedError
    from server.auth import KeyStore

    store = KeyStore(AuthSettings(keys=[ApiKey(id="slow", role="app", key="s" * 20, rate_limit_per_minute=2)]))
    store.authenticate("s" * 20, None)
    store.authenticate("s" * 20, None)
    with pytest.raises(RateLimitedError) as info:
        store.authenticate("s" * 20, None)
    assert info.value.retry_after >= 1


def test_wrong_keys_throttle_the_address_not_the_key(embedded_engine, tmp_path):
    """Past auth.max_failed_per_minute wrong keys, the address gets 429 (right key included, web
    sign-in included) until the minute has passed; a missing key is not a guess and does not count."""
    from server.app import create_app
    from tests.conftest import LiveServer, make_settings

    settings = make_settings(tmp_path / "data", auth={"max_failed_per_minute": 3})
    with LiveServer(create_app(settings, engine=embedded_engine)) as srv:
        models = srv.url + "/v1/models"
        for _ in range(5):
            assert httpx.get(models, timeout=30).status_code == 401  # no key: never throttled
        for _ in range(3):
            assert httpx.get(models, headers={"Authorization": "Bearer guess-0000"}, timeout=30).status_code == 401
        blocked = httpx.get(models, headers={"Authorization": f"Bearer {APP_KEY}"}, timeout=30)
        assert blocked.status_code == 429 and 1 <= int(blocked.headers["retry-after"]) <= 60
        assert "wrong API key" in blocked.json()["error"]["message"]
        sign_in = httpx.post(srv.url + "/v1/session", json={"key": APP_KEY}, headers={"Origin": srv.url}, timeout=30)
        assert sign_in.status_code == 429


def test_wrong_key_failures_age_out_per_address(monkeypatch):
    from agentstack.config import ApiKey, AuthSettings
    from agentstack.errors import AuthError, RateLimitedError
    from server import auth

    now = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: now[0])
    store = auth.KeyStore(AuthSettings(keys=[ApiKey(id="a", role="app", key="k" * 20)], max_failed_per_minute=2))
    for _ in range(2):
        with pytest.raises(AuthError):
            store.authenticate("wrong" * 4, None, "10.0.0.1")
    with pytest.raises(RateLimitedError):
        store.authenticate("k" * 20, None, "10.0.0.1")
    assert store.authenticate("k" * 20, None, "10.0.0.2").key_id == "a"  # another address is unaffected
    now[0] += 61
    assert store.authenticate("k" * 20, None, "10.0.0.1").key_id == "a"  # a minute later it may try again
