"""GET /v1/admin/eval/reports[/{run_id}[/html]] (server/routes/evaluation.py) over stored report
folders, on a small app with the real key store and error mapping (no model)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from agentstack.config import AuthSettings
from server import errors
from server.auth import KeyStore
from server.routes import evaluation
from server.sessions import SessionStore

pytestmark = pytest.mark.unit

OP = {"Authorization": "Bearer op-key-0123456789abcdef"}
APP = {"Authorization": "Bearer app-key-0123456789abcdef"}


def report(run_id: str, finished: str) -> dict:
    return {"schema": "agentstack.eval.report/1", "run_id": run_id, "suite": {"name": "tiny"},
            "created_at": finished, "finished_at": finished, "n": 3, "n_errors": 0,
            "system": {"kind": "plain", "model": "agentstack"}, "corpus": {"bleu": 12.5},
            "metrics": {"overall": {"rouge_l": {"mean": 0.4}}}}


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    eval_path = tmp_path / "eval"
    for run_id, finished, html in (("run-a", "2025-01-01T00:00:00Z", True), ("run-b", "2025-02-01T00:00:00Z", False)):
        (eval_path / run_id).mkdir(parents=True)
        (eval_path / run_id / "report.json").write_text(json.dumps(report(run_id, finished)))
        if html:
            (eval_path / run_id / "report.html").write_text("<!doctype html><p>tiny</p>")
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "report.json").write_text(json.dumps(report("secret", "2025-03-01T00:00:00Z")))
    auth = AuthSettings(keys=[{"id": "op1", "role": "operator", "key": OP["Authorization"][7:]},
                              {"id": "app1", "role": "app", "key": APP["Authorization"][7:]}])
    app = FastAPI()
    errors.install(app)
    app.state.services = SimpleNamespace(keys=KeyStore(auth), settings=SimpleNamespace(eval_path=eval_path))
    app.state.sessions = SessionStore(auth)
    app.include_router(evaluation.router)
    return TestClient(app)


def test_reports_are_listed_newest_first_without_server_paths(client):
    r = client.get("/v1/admin/eval/reports", headers=OP)
    assert r.status_code == 200, r.text
    rows = r.json()["data"]
    assert [row["run_id"] for row in rows] == ["run-b", "run-a"]
    assert [row["has_html"] for row in rows] == [False, True]
    assert rows[0]["headline"] == {"bleu": 12.5, "rouge_l": 0.4}
    assert not any("path" in key for row in rows for key in row)


def test_one_report_and_its_sandboxed_page(client):
    assert client.get("/v1/admin/eval/reports/run-a", headers=OP).json()["run_id"] == "run-a"
    page = client.get("/v1/admin/eval/reports/run-a/html", headers=OP)
    assert page.status_code == 200 and "tiny" in page.text
    assert page.headers["content-security-policy"].startswith("sandbox;")
    missing = client.get("/v1/admin/eval/reports/run-b/html", headers=OP)
    assert missing.status_code == 404 and "no HTML page" in missing.json()["error"]["message"]


def test_run_ids_cannot_leave_the_eval_folder(client):
    for ref in ("..%2Fsecret", "%2E%2E", ".hidden", "nope"):
        r = client.get(f"/v1/admin/eval/reports/{ref}", headers=OP)
        assert r.status_code == 404, (ref, r.text)


def test_reports_are_for_operators(client):
    assert client.get("/v1/admin/eval/reports", headers=APP).status_code == 403
    assert client.get("/v1/admin/eval/reports").status_code == 401
