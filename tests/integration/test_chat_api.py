"""The application chat API (/v1/chat, regenerate, conversations) and rag:/react: models, with the real
SmolLM2, the real embedder and a real FAISS + SQLite index, over HTTP on loopback."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import APP_KEY, LIMITED_KEY

pytestmark = pytest.mark.integration
H = {"Authorization": f"Bearer {APP_KEY}", "X-User-Id": "alice"}

DOCS = {
    "paris.md": "# Paris\n\nParis is the capital of France. The Eiffel Tower was finished in 1889.\n",
    "python.md": "# Python\n\nPython is a programming language created by Guido van Rossum in 1991.\n",
    "faiss.md": "# FAISS\n\nFAISS is a library for efficient similarity search of dense vectors.\n",
}


def write_corpus(root):
    """DOCS under root/docs and the spec of an index over them (no PII scrubbing); returns the spec."""
    docs = root / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text)
    spec = root / "facts.yaml"
    spec.write_text("sources:\n  - path: docs\npii:\n  enabled: false\n")
    return spec


@pytest.fixture(scope="module")
def server(embedded_engine, tmp_path_factory):
    from agentstack.index.manager import IndexManager
    from server.app import create_app
    from tests.conftest import LiveServer, make_settings

    root = tmp_path_factory.mktemp("chat")
    settings = make_settings(root / "data")
    IndexManager(settings).create("facts", spec_path=write_corpus(root))
    with LiveServer(create_app(settings, engine=embedded_engine)) as srv:
        yield srv


def post(server, path, body, headers=H):
    return httpx.post(f"{server.url}{path}", json=body, headers=headers, timeout=300)


def sse_events(server, body, headers=H):
    events = []
    with httpx.stream("POST", f"{server.url}/v1/chat", json={**body, "stream": True}, headers=headers,
                      timeout=300) as response:
        assert response.status_code == 200, response.read()
        name = None
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line[5:])))
    return events


def test_plain_chat_is_stored_with_its_prompt(server):
    r = post(server, "/v1/chat", {"message": "Say hello.", "params": {"max_tokens": 12, "temperature": 0}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer"] and body["id"].startswith("resp-") and body["conversation_id"].startswith("conv-")
    rec = server.app.state.services.responses.get(body["id"])
    assert rec.rendered_prompt.endswith("<|im_start|>assistant\n") and rec.prompt_template_version == "plain-1"
    assert rec.user_id == "alice" and rec.answer == body["answer"]


def test_rag_streams_sources_tokens_and_done(server):
    events = sse_events(server, {"message": "What is the capital of France?", "mode": "rag", "index": "facts",
                                 "params": {"max_tokens": 40, "temperature": 0}})
    kinds = [k for k, _ in events]
    assert kinds[0] == "source" and "token" in kinds and kinds[-1] == "done"
    assert kinds.index("token") > max(i for i, k in enumerate(kinds) if k == "source")
    sources = [d for k, d in events if k == "source"]
    assert sources[0]["title"] == "Paris" and [s["n"] for s in sources] == list(range(1, len(sources) + 1))
    done = events[-1][1]
    assert done["answer"] == "".join(d["text"] for k, d in events if k == "token")
    from agentstack.orchestrators.guards import cited_numbers

    assert set(cited_numbers(done["answer"])) <= {s["n"] for s in sources}
    rec = server.app.state.services.responses.get(done["id"])
    assert "Paris is the capital" in rec.sources[0]["text"]  # training data survives index edits
    assert "[1] Paris" in rec.rendered_prompt and rec.prompt_template_version == "rag-1"


def test_rag_abstains_when_nothing_is_relevant(server):
    r = post(server, "/v1/chat", {"message": "How do octopuses camouflage?", "mode": "rag", "index": "facts",
                                  "params": {"max_tokens": 20}})
    settings = server.app.state.services.settings
    assert r.json()["answer"] == settings.orchestration.abstain_message and r.json()["sources"] == []


def test_conversation_turns_regenerate_and_delete(server):
    first = post(server, "/v1/chat", {"message": "Who created Python?", "mode": "rag", "index": "facts",
                                      "params": {"max_tokens": 24, "temperature": 0}}).json()
    conv = first["conversation_id"]
    second = post(server, "/v1/chat", {"message": "In which year?", "conversation_id": conv, "mode": "rag",
                                       "index": "facts", "params": {"max_tokens": 24, "temperature": 0}}).json()
    rec = server.app.state.services.responses.get(second["id"])
    assert [m["role"] for m in rec.messages] == ["user", "assistant", "user"]
    assert rec.messages[1]["content"] == first["answer"] and rec.turn == 1
    sibling = post(server, f"/v1/chat/{second['id']}/regenerate",
                   {"params": {"temperature": 1.0, "seed": 5, "max_tokens": 24}}).json()
    assert sibling["parent_id"] == second["id"] and sibling["turn"] == 1
    listed = httpx.get(f"{server.url}/v1/conversations", headers=H).json()["data"]
    assert any(c["id"] == conv and c["turns"] == 2 for c in listed)
    detail = httpx.get(f"{server.url}/v1/conversations/{conv}", headers=H).json()
    assert [len(t["answers"]) for t in detail["turns"]] == [1, 2]
    bob = {**H, "X-User-Id": "bob"}
    assert httpx.get(f"{server.url}/v1/conversations/{conv}", headers=bob).status_code == 404
    assert post(server, f"/v1/chat/{second['id']}/regenerate", {}, headers=bob).status_code == 404
    assert httpx.delete(f"{server.url}/v1/conversations/{conv}", headers=H).json()["deleted"] is True
    assert httpx.get(f"{server.url}/v1/conversations/{conv}", headers=H).status_code == 404
    assert server.app.state.services.responses.get(second["id"]) is None


def test_react_uses_the_calculator_and_traces_steps(server):
    events = sse_events(server, {"message": "What is 17 * 3?", "mode": "react", "tools": ["calculator"],
                                 "params": {"max_tokens": 60, "temperature": 0}})
    steps = [d for k, d in events if k == "step"]
    done = events[-1][1]
    assert steps and steps[0]["action"] in ("calculator", "final_answer")
    assert all(s["error"] is None or "format" not in s["error"] for s in steps)  # the grammar always parses
    assert done["trace"] == steps or len(done["trace"]) >= len(steps) - 1
    calc = [s for s in done["trace"] if s["action"] == "calculator"]
    for s in calc:
        assert s["observation"] and not s["observation"].startswith("Error: tool")


def test_request_errors(server):
    assert post(server, "/v1/chat", {"message": "hi", "mode": "rag"}).status_code == 400  # no index
    r = post(server, "/v1/chat", {"message": "hi", "mode": "rag", "index": "nope"})
    assert r.status_code == 404
    r = post(server, "/v1/chat", {"message": "hi", "mode": "react", "tools": ["shell"]})
    assert r.status_code == 403 and "shell" in r.json()["error"]["message"]
    limited = {"Authorization": f"Bearer {LIMITED_KEY}"}
    r = post(server, "/v1/chat", {"message": "hi", "mode": "rag", "index": "facts"}, headers=limited)
    assert r.status_code == 403
    r = post(server, "/v1/chat", {"message": "hi", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400
    r = post(server, "/v1/chat", {"message": "hi", "params": {"temperature": -1}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "params.temperature"


def test_long_conversation_never_overflows(server):
    filler = " ".join(["word"] * 600)
    messages = []
    for i in range(30):
        messages += [{"role": "user", "content": f"{i} {filler}"}, {"role": "assistant", "content": filler}]
    messages.append({"role": "user", "content": "Say OK."})
    r = post(server, "/v1/chat", {"messages": messages, "params": {"max_tokens": 8}})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] < 3000


def test_rag_model_through_the_openai_client(server):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key=APP_KEY, max_retries=0)
    ids = [m.id for m in client.models.list().data]
    assert "rag:facts" in ids and "react:facts" in ids
    out = client.chat.completions.create(model="rag:facts", temperature=0, max_tokens=30,
                                         messages=[{"role": "user", "content": "What is FAISS?"}])
    extra = out.model_extra
    assert extra["sources"][0]["title"] == "FAISS" and out.choices[0].message.content
    chunks = list(client.chat.completions.create(model="rag:facts", temperature=0, max_tokens=30, stream=True,
                                                 messages=[{"role": "user", "content": "What is FAISS?"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == out.choices[0].message.content
    assert chunks[-1].model_extra["sources"][0]["chunk_id"] == extra["sources"][0]["chunk_id"]
    limited = OpenAI(base_url=f"{server.url}/v1", api_key=LIMITED_KEY, max_retries=0)
    assert "rag:facts" not in [m.id for m in limited.models.list().data]
