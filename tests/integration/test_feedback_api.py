"""Thumbs over HTTP on real answers: one vote per user per response (voting again updates it),
404 for unknown or someone else's responses, 422 for a bad rating, statistics per model version,
the export scrubbed of PII, and deleting a user's data."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.integration.alignment_support import APP, OP

pytestmark = pytest.mark.integration

PII = "My name is Johanna Lindqvist and my email is johanna.lindqvist@corp.se. What is the capital of France?"


@pytest.fixture(scope="module")
def server(embedded_engine, tmp_path_factory):
    from server.app import create_app
    from tests.conftest import LiveServer, make_settings

    with LiveServer(create_app(make_settings(tmp_path_factory.mktemp("feedback")), engine=embedded_engine)) as srv:
        yield srv


def ask(server, user: str, content: str, n: int = 1) -> dict:
    r = httpx.post(f"{server.url}/v1/chat/completions", headers={**APP, "X-User-Id": user}, timeout=120,
                   json={"model": "agentstack", "messages": [{"role": "user", "content": content}], "max_tokens": 8,
                         "n": n, "temperature": 0.8, "seed": 1})
    assert r.status_code == 200, r.text
    return r.json()


def vote(server, user: str, response_id: str, rating: str, **extra) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/feedback", headers={**APP, "X-User-Id": user},
                      json={"response_id": response_id, "rating": rating, **extra})


def test_votes_stats_export_and_deletion(server, embedded_engine):
    siblings = ask(server, "alice", PII, n=2)
    first_id = siblings["id"]
    r = vote(server, "alice", first_id, "up")
    assert r.status_code == 200 and r.json()["created"] is True
    assert r.json()["model_version"] == embedded_engine.base_name
    again = vote(server, "alice", first_id, "down", comment="Johanna here, call +46 8 123 456 78",
                 correction="The answer is the city of light. Regards, Johanna Lindqvist")
    assert again.json()["created"] is False and again.json()["id"] == r.json()["id"]
    assert vote(server, "alice", f"{first_id}.1", "up").status_code == 200  # the regenerated sibling

    assert vote(server, "alice", "chatcmpl-nope", "up").status_code == 404
    assert vote(server, "mallory", first_id, "up").status_code == 404  # not mallory's answer
    bad = vote(server, "alice", first_id, "meh")
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "rating"
    assert httpx.post(f"{server.url}/v1/feedback", headers=APP, json={"rating": "up"}).status_code == 422

    bob = ask(server, "bob", "Name a colour.")
    vote(server, "bob", bob["id"], "up")

    stats = httpx.get(f"{server.url}/v1/feedback/stats", headers=APP).json()
    version = stats["versions"][0]
    assert (version["model_version"], version["up"], version["down"], version["corrections"]) == (
        embedded_engine.base_name, 2, 1, 1)
    assert stats["series"][0]["period"] and stats["key_id"] == "app1"
    assert httpx.get(f"{server.url}/v1/feedback/stats", headers=OP).json()["total"]["total"] == 3

    export = httpx.get(f"{server.url}/v1/admin/feedback/export", headers=OP, timeout=120)
    assert export.status_code == 200 and export.headers["content-type"].startswith("application/x-ndjson")
    records = [json.loads(line) for line in export.text.splitlines()]
    assert len(records) == 3
    text = export.text
    for secret in ("Johanna", "Lindqvist", "corp.se", "123 456 78", "alice"):
        assert secret not in text, secret
    mine = next(r for r in records if r["response_id"] == first_id)
    assert "<PERSON>" in mine["prompt"][-1]["content"] and "<EMAIL_ADDRESS>" in mine["prompt"][-1]["content"]
    assert mine["correction"].startswith("The answer is the city of light.") and "<PERSON>" in mine["correction"]
    assert mine["rating"] == "down" and mine["sibling_group"] == first_id and len(mine["user"]) == 16
    assert httpx.get(f"{server.url}/v1/admin/feedback/export", headers=APP).status_code == 403

    gone = httpx.delete(f"{server.url}/v1/admin/users/alice/data", headers=OP, params={"key_id": "app1"})
    assert gone.status_code == 200
    assert gone.json()["deleted"] == {"conversations": 0, "responses": 2, "feedback": 2}
    left = [json.loads(line) for line in httpx.get(f"{server.url}/v1/admin/feedback/export", headers=OP).text
            .splitlines()]
    assert [r["response_id"] for r in left] == [bob["id"]]
    assert vote(server, "alice", first_id, "up").status_code == 404
    audit = httpx.get(f"{server.url}/v1/admin/audit", headers=OP).json()["data"]
    deletion = next(a for a in audit if a["action"] == "privacy.delete_user")
    assert deletion["target"].startswith("hmac:") and "alice" not in json.dumps(deletion)
    assert [a["action"] for a in audit].count("feedback.export") == 2


def test_export_through_the_cli(server, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from agentstack.cli import commands  # noqa: F401
    from agentstack.cli.app import app
    from tests.conftest import OPERATOR_KEY

    answer = ask(server, "carol", "Email me at carol@example.org please, I am Carol Jensen.")
    vote(server, "carol", answer["id"], "up")
    monkeypatch.setenv("AGENTSTACK_CLIENT__URL", server.url)
    monkeypatch.setenv("AGENTSTACK_CLIENT__API_KEY", OPERATOR_KEY)
    out = tmp_path / "fb.jsonl"
    result = CliRunner().invoke(app, ["feedback", "export", "-o", str(out)])
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines and all("Jensen" not in line for line in lines)
    wrong = CliRunner().invoke(app, ["feedback", "export", "--since", "yesterday"])
    assert wrong.exit_code == 2 and "ISO 8601" in wrong.output
