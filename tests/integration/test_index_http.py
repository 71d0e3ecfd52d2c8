"""The index routes on a real server on loopback: read access per app key, operator writes, and a
server that picks up versions written by another process without a restart."""

from __future__ import annotations

import base64

import httpx
import pytest

from agentstack.config import load_settings
from agentstack.index.manager import IndexManager
from agentstack.index.spec import IndexSpec
from agentstack.index.testing import make_pdf

pytestmark = pytest.mark.integration

APP, OPERATOR, LIMITED = "app-key-0123456789abcdef", "op-key-0123456789abcdef", "limited-key-0123456789ab"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_index_routes(live_server, tmp_path):
    data = tmp_path / "server-data"  # the data dir the live_server fixture gives the app
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "cats.md").write_text("# Cats\n\nCats purr and chase mice.\n")
    (corpus / "ships.md").write_text("# Ships\n\nSailing ships use the wind; steamships burn coal.\n")
    outside = IndexManager(load_settings(data_dir=data))  # a CLI-like writer in another "process"
    no_pii = IndexSpec.model_validate({"pii": {"enabled": False}})
    outside.create("kb", spec=no_pii, paths=[corpus])
    outside.create("demo", spec=no_pii, paths=[corpus / "ships.md"])

    with live_server() as srv, httpx.Client(base_url=srv.url, timeout=120) as http:
        listed = http.get("/v1/indexes", headers=auth(APP)).json()["data"]
        assert {r["name"] for r in listed} == {"kb", "demo"}
        assert [r["name"] for r in http.get("/v1/indexes", headers=auth(LIMITED)).json()["data"]] == ["demo"]

        r = http.post("/v1/indexes/kb/search", headers=auth(APP), json={"query": "animals that purr", "k": 1})
        assert r.status_code == 200 and r.json()["data"][0]["title"] == "Cats"
        assert http.post("/v1/indexes/kb/search", headers=auth(LIMITED), json={"query": "x"}).status_code == 403
        assert http.post("/v1/indexes/kb/search", json={"query": "x"}).status_code == 401
        for body, status, param in (({"query": ""}, 400, "query"), ({"query": "x", "k": 0}, 400, "k"),
                                    ({"query": "x" * 3000}, 400, "query"), ({"query": "x", "mode": "fuzzy"}, 422, "mode")):
            r = http.post("/v1/indexes/kb/search", headers=auth(APP), json=body)
            assert r.status_code == status and r.json()["error"]["param"] == param, r.text
        r = http.post("/v1/indexes/nope/search", headers=auth(APP), json={"query": "x"})
        assert r.status_code == 404 and "agentstack index list" in r.json()["error"]["message"]
        docs = http.get("/v1/indexes/kb/documents", headers=auth(APP)).json()
        assert docs["total"] == 2 and {d["title"] for d in docs["data"]} == {"Cats", "Ships"}

        upload = {"documents": [{"name": "bread.txt", "text": "Knead the dough and let the yeast work."},
                                {"name": "leaf.pdf", "content_base64": base64.b64encode(
                                    make_pdf(["Leaves turn sunlight into sugar."])).decode()},
                                {"name": "bad.txt", "content_base64": base64.b64encode(b"caf\xe9").decode()}],
                  "metadata": {"source_system": "tests"}}
        assert http.post("/v1/indexes/kb/documents", headers=auth(APP), json=upload).status_code == 403
        r = http.post("/v1/indexes/kb/documents", headers=auth(OPERATOR), json=upload)
        report = r.json()
        assert r.status_code == 200 and len(report["added"]) == 2 and not report["ok"]
        assert report["failed"] == [{"source": "upload:bad.txt", "code": "encoding", "reason": report["failed"][0][
            "reason"]}] and "utf-8" in report["failed"][0]["reason"]
        hits = http.post("/v1/indexes/kb/search", headers=auth(APP),
                         json={"query": "yeast dough", "mode": "bm25", "filters": {"source_system": "tests"}}).json()
        assert hits["data"][0]["source"] == "upload:bread.txt"

        (corpus / "owls.md").write_text("# Owls\n\nOwls hunt at night and hoot.\n")
        outside.add("kb")  # written outside the server: visible on the next query, no restart
        r = http.post("/v1/indexes/kb/search", headers=auth(APP), json={"query": "nocturnal hooting bird", "k": 1})
        assert r.json()["data"][0]["title"] == "Owls"

        assert http.delete("/v1/indexes/kb/documents/upload:bread.txt", headers=auth(APP)).status_code == 403
        r = http.delete("/v1/indexes/kb/documents/upload:bread.txt", headers=auth(OPERATOR))
        assert r.status_code == 200 and len(r.json()["deleted"]) == 1
        assert http.delete("/v1/indexes/kb/documents/upload:bread.txt", headers=auth(OPERATOR)).status_code == 404
        assert http.get("/v1/indexes/kb/stats", headers=auth(APP)).status_code == 403
        stats = http.get("/v1/indexes/kb/stats", headers=auth(OPERATOR)).json()
        assert stats["documents"] == 4 and stats["embedder"]["id"] == "sentence-transformers/all-MiniLM-L6-v2"
        assert http.get("/v1/indexes/kb/verify", headers=auth(OPERATOR)).json()["ok"]
        rebuilt = http.post("/v1/indexes/kb/rebuild", headers=auth(OPERATOR)).json()
        assert len(rebuilt["updated"]) == 4
        assert http.post("/v1/indexes/kb/rebuild", headers=auth(APP)).status_code == 403
        audit = srv.app.state.services.audit.list(action="index.upload")
        assert audit and audit[0]["key_id"] == "op1" and audit[0]["outcome"] == "partial"
