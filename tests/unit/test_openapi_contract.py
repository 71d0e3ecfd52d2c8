"""What /openapi.json promises (server/openapi.py), checked without a model: the bearer scheme,
every error status with OpenAI's error body, the sampling bounds and this deployment's caps, the
405 Allow header, and request models that refuse booleans for numbers (agentstack/strict.py)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.unit


@pytest.fixture
def app(tmp_path):
    from agentstack.config import load_settings
    from server.app import create_app

    settings = load_settings(data_dir=tmp_path, auth={"keys": [{"id": "a", "role": "app", "key": "k" * 20}]},
                             engine={"max_tokens_limit": 64, "default_max_tokens": 16, "max_n": 3})
    return create_app(settings)


def test_schema_declares_bearer_auth_and_every_error_with_its_body(app):
    schema = app.openapi()
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "An API key: `Authorization: Bearer <key>`."}
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    chat = schema["paths"]["/v1/chat/completions"]["post"]
    assert chat["security"] == [{"bearer": []}]
    assert {"400", "401", "403", "404", "413", "422", "429", "503"} <= set(chat["responses"])
    assert chat["responses"]["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert "security" not in schema["paths"]["/healthz"]["get"]
    assert set(schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    assert "404" in schema["paths"]["/v1/indexes/{name}/stats"]["get"]["responses"]


def test_schema_carries_sampling_bounds_and_the_deployments_caps(app):
    props = app.openapi()["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    max_tokens = [b for b in props["max_tokens"]["anyOf"] if b.get("type") == "integer"][0]
    assert (max_tokens["minimum"], max_tokens["maximum"]) == (1, 64)
    n = [b for b in props["n"]["anyOf"] if b.get("type") == "integer"][0]
    assert (n["minimum"], n["maximum"]) == (1, 3)
    temperature = [b for b in props["temperature"]["anyOf"] if b.get("type") == "number"][0]
    assert (temperature["minimum"], temperature["maximum"]) == (0.0, 2.0)
    params = app.openapi()["components"]["schemas"]["GenerationParams"]["properties"]
    assert [b for b in params["max_tokens"]["anyOf"] if b.get("type") == "integer"][0]["maximum"] == 64


def test_exactly_one_of_is_in_the_schema(app):
    chat = app.openapi()["components"]["schemas"]["AppChatRequest"]
    assert [b["required"] for b in chat["oneOf"]] == [["message"], ["messages"]]
    assert chat["oneOf"][0]["properties"]["message"]["type"] == "string"  # set means not null
    assert chat["oneOf"][1]["properties"]["messages"]["type"] == "array"


def test_405_lists_every_method_of_the_path(app):
    r = TestClient(app).put("/v1/session")  # routing answers before any service is needed
    assert r.status_code == 405, r.text
    assert set(r.headers["allow"].split(", ")) >= {"GET", "POST", "DELETE"}
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_request_models_refuse_booleans_for_numbers_and_numbers_for_booleans():
    from pydantic import ValidationError

    from agentstack.alignment.spec import JobSpec
    from server.routes.chat import AppChatRequest
    from server.schemas import ChatCompletionRequest

    with pytest.raises(ValidationError, match="max_tokens: expected a number, got true"):
        ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=True)
    with pytest.raises(ValidationError, match="stream: expected true or false, got 0"):
        AppChatRequest(message="hi", stream=0)
    with pytest.raises(ValidationError, match="seed: expected a number"):
        JobSpec.model_validate({"data": {"constitution": {"seed": False}}})
    assert ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], temperature=1).temperature == 1
