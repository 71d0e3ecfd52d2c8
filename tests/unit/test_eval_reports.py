"""Stored reports: listing, comparing, HTML pages, and the `agentstack eval` commands."""

from __future__ import annotations

import asyncio
import json

import pytest
from eval_fakes import FakeEngine, default_reply
from test_eval_suite import write_suite
from typer.testing import CliRunner

from agentstack.errors import NotFoundError
from agentstack.evaluation.client import EngineClient
from agentstack.evaluation.html import render_comparison
from agentstack.evaluation.reports import compare_reports, gate_figures, list_reports, load_report
from agentstack.evaluation.runner import run_suite
from agentstack.evaluation.suite import load_suite
from agentstack.evaluation.systems import SystemContext

pytestmark = pytest.mark.unit


def versioned_reply(request):
    """The adapter answers exactly; the base model echoes with a prefix (so it scores lower)."""
    if request.model == "fake-adapter" and "strict evaluator" not in request.messages[0]["content"]:
        return request.messages[-1]["content"]
    return default_reply(request)


def _run(settings, path, model=None, html=False):
    suite = load_suite(path)
    if model:
        suite.system["model"] = model
    ctx = SystemContext(settings, client=EngineClient(FakeEngine(reply=versioned_reply), concurrency=4))
    return asyncio.run(run_suite(suite, settings, suite_dir=path.parent, ctx=ctx, html=html)).report


def test_list_load_and_compare(settings, tmp_path):
    path = write_suite(tmp_path, n=6, judges=[], metrics=["exact_match", "token_f1", "bleu"])
    a = _run(settings, path)
    b = _run(settings, path, model="fake-adapter")
    rows = list_reports(settings.eval_path)
    assert {r["run_id"] for r in rows} == {a["run_id"], b["run_id"]}
    row = next(r for r in rows if r["run_id"] == b["run_id"])
    assert row["n"] == 6 and row["system"]["model"] == "fake-adapter"
    assert row["headline"]["exact_match"] == 1.0 and row["headline"]["bleu"] == pytest.approx(100.0)
    assert row["json_path"].endswith("report.json")
    assert load_report(a["run_id"], settings.eval_path)["run_id"] == a["run_id"]
    assert load_report(row["json_path"])["run_id"] == b["run_id"]
    with pytest.raises(NotFoundError):
        load_report("nope", settings.eval_path)
    cmp = compare_reports(a, b)
    em = next(m for m in cmp["metrics"] if m["metric"] == "exact_match")
    assert (em["a"], em["b"], em["delta"], em["paired_n"]) == (0.0, 1.0, 1.0, 6)
    assert em["b_win_rate"] == 1.0 and em["b_win_rate_ci95"][0] > 0.5
    assert cmp["common_examples"] == 6 and cmp["same_suite"]
    bleu = next(m for m in cmp["metrics"] if m["metric"] == "bleu")
    assert bleu["delta"] > 0 and "paired_n" not in bleu  # a corpus figure has no per-example pairs


def test_gate_figures_leave_out_untrusted_judges():
    report = {"corpus": {"bleu": 20.0, "bleu_n": 5}, "metrics": {"overall": {
        "judge.fluency": {"mean": 3.0}, "judge.fluency.expected": {"mean": 2.5}, "judge.similarity": {"mean": 4.0},
        "chrf": {"mean": None}, "latency_s": {"mean": 1.0}}},
        "judges": {"fluency": {"trusted": False}, "similarity": {"trusted": True}}}
    assert gate_figures(report) == {"bleu": 20.0, "judge.similarity": 4.0}


def test_html_is_self_contained_and_escaped(settings, tmp_path):
    path = write_suite(tmp_path, n=3)
    rows = [json.loads(line) for line in (tmp_path / "data.jsonl").read_text().splitlines()]
    rows[0]["question"] = "<script>alert(1)</script>"
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = _run(settings, path, html=True)
    page = (settings.eval_path / report["run_id"] / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert page.count("data:image/png;base64,") >= 1
    assert "http://" not in page and "https://" not in page
    other = _run(settings, path, model="fake-adapter")
    side = render_comparison(report, other, compare_reports(report, other))
    assert "two runs side by side" in side and side.count("data:image/png;base64,") == 2


@pytest.fixture
def cli(monkeypatch):
    import agentstack.engines

    engines: list[FakeEngine] = []

    def build(settings, metrics=None):
        engines.append(FakeEngine(reply=versioned_reply, fail_on=monkeypatch_fail.get("text")))
        return engines[-1]

    monkeypatch_fail: dict = {}
    monkeypatch.setattr(agentstack.engines, "build_engine", build)
    from agentstack.cli import commands  # noqa: F401
    from agentstack.cli.app import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args))

    invoke.fail = monkeypatch_fail
    invoke.engines = engines
    return invoke


def test_cli_run_list_compare(cli, tmp_path, settings):
    path = write_suite(tmp_path, n=4, judges=["fluency"])
    res = cli("eval", "run", str(path), "--limit", "3", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["n"] == 3 and out["judges"]["fluency"]["n"] == 3 and cli.engines[-1].closed
    assert out["timing"]["machine_end"]["loadavg"]
    res = cli("eval", "run", str(path))  # resumes: one new example; human output
    assert res.exit_code == 0, res.output
    assert "n=4" in res.stdout and "report.html" in res.stdout
    listed = json.loads(cli("eval", "list", "--json").stdout)
    assert len(listed) == 1 and listed[0]["n"] == 4
    run_id = listed[0]["run_id"]
    html = tmp_path / "cmp.html"
    res = cli("eval", "compare", run_id, listed[0]["json_path"], "--json", "--html", str(html))
    assert res.exit_code == 0 and html.exists()
    assert all(m["delta"] == 0 for m in json.loads(res.stdout)["metrics"])
    res = cli("eval", "compare", run_id, run_id)
    assert res.exit_code == 0 and "B − A" in res.stdout


def test_cli_exit_codes(cli, tmp_path):
    path = write_suite(tmp_path, n=3, judges=[])
    cli.fail["text"] = "question 1"
    res = cli("eval", "run", str(path), "--json")
    assert res.exit_code == 1 and json.loads(res.stdout)["n_errors"] == 1
    assert cli("eval", "run", str(tmp_path / "missing.yaml")).exit_code == 2
    bad = write_suite(tmp_path, metrics=["nope"])
    res = cli("eval", "run", str(bad))
    assert res.exit_code == 2 and "unknown metric" in res.output
    assert cli("eval", "compare", "x", "y").exit_code == 2
    assert cli("eval", "agreement", "--data", str(tmp_path / "none")).exit_code == 2
