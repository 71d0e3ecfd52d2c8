"""Each bad request gets a clear error; a good request right after it still succeeds."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import APP_KEY, ENGINE_KINDS, kind_server

pytestmark = pytest.mark.integration
HEADERS = {"Authorization": f"Bearer {APP_KEY}"}
GOOD = {"model": "agentstack", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4,
        "temperature": 0}


@pytest.fixture(scope="module", params=ENGINE_KINDS)
def server(request, tmp_path_factory):
    with kind_server(request, tmp_path_factory, "bad", server={"max_body_bytes": 200_000}) as srv:
        yield srv


def _with(**changes):
    return {**GOOD, **changes}


LONG = " ".join(["hello"] * 9000)
CASES = [
    ("unknown model", _with(model="gpt-9"), 404, "available: agentstack"),
    ("prompt over context", _with(messages=[{"role": "user", "content": LONG}]), 400, "8192"),
    ("negative temperature", _with(temperature=-0.5), 400, "temperature"),
    ("top_p zero", _with(top_p=0), 400, "top_p"),
    ("top_p over one", _with(top_p=1.5), 400, "top_p"),
    ("max_tokens zero", _with(max_tokens=0), 400, "max_tokens"),
    ("max_tokens over limit", _with(max_tokens=10_000), 400, "max_tokens"),
    ("max_completion_tokens over limit", _with(max_tokens=None, max_completion_tokens=10_000), 400,
     "max_completion_tokens"),
    ("n over limit", _with(n=50), 400, "n"),
    ("unknown field", _with(frobnicate=True), 422, "frobnicate"),
    ("no messages", _with(messages=[]), 422, "messages"),
    ("bad role", _with(messages=[{"role": "wizard", "content": "hi"}]), 400, "role"),
    ("image part", _with(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]), 400,
     "image_url"),
    ("stop not a string", _with(stop=[1, 2]), 422, "stop"),
    ("two constraints", _with(response_format={"type": "json_object"}, guided_regex="a+"), 400, "guided_regex"),
    ("bad X-User-Id", "HEADER", 400, "X-User-Id"),
]


def _good_after(server):
    response = httpx.post(f"{server.url}/v1/chat/completions", json=GOOD, headers=HEADERS, timeout=60)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("name,body,status,mentions", CASES, ids=[c[0] for c in CASES])
def test_bad_request_then_good_request(server, name, body, status, mentions):
    headers = dict(HEADERS)
    if body == "HEADER":
        body, headers["X-User-Id"] = GOOD, "bad user id with spaces"
    body = {k: v for k, v in body.items() if v is not None}
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=60)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert mentions in error["message"] or mentions == error.get("param"), error
    assert response.json()["request_id"] == response.headers["x-request-id"]
    _good_after(server)


def test_malformed_json_is_400(server):
    response = httpx.post(f"{server.url}/v1/chat/completions", content=b'{"model": "agentstack", "messages": [',
                          headers={**HEADERS, "Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "json_invalid"
    _good_after(server)


def test_body_over_limit_is_413(server):
    big = _with(messages=[{"role": "user", "content": "x" * 300_000}])
    response = httpx.post(f"{server.url}/v1/chat/completions", json=big, headers=HEADERS, timeout=30)
    assert response.status_code == 413
    assert "limit" in response.json()["error"]["message"]

    def chunks():  # no Content-Length: the limit is found while streaming in
        for _ in range(30):
            yield b"x" * 10_000

    response = httpx.post(f"{server.url}/v1/chat/completions", content=chunks(),
                          headers={**HEADERS, "Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 413
    _good_after(server)


def test_full_queue_answers_429_then_recovers(server):
    import concurrent.futures as cf

    engine = server.app.state.services.engine
    capacity = engine.settings.max_running + engine.settings.max_queue
    body = _with(max_tokens=6, ignore_eos=True)

    def post(_):
        return httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=HEADERS, timeout=600)

    with cf.ThreadPoolExecutor(capacity + 12) as pool:
        responses = list(pool.map(post, range(capacity + 12)))
    refused = [r for r in responses if r.status_code == 429]
    assert refused, [r.status_code for r in responses]
    assert all(r.status_code in (200, 429) for r in responses)
    assert int(refused[0].headers["retry-after"]) >= 1
    assert refused[0].json()["error"]["code"] == "overloaded"
    _good_after(server)
