"""Suites end to end on a scripted engine: systems, scoring, checkpoint and resume."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml
from eval_fakes import FakeEngine

from agentstack.errors import InvalidRequestError, NotFoundError
from agentstack.evaluation.client import EngineClient
from agentstack.evaluation.datasets.base import Example
from agentstack.evaluation.runner import read_checkpoint, run_suite
from agentstack.evaluation.suite import load_suite
from agentstack.evaluation.systems import (
    SYSTEMS,
    MapReduceConfig,
    MapReduceSystem,
    SystemContext,
    build_system,
    split_text,
)

pytestmark = pytest.mark.unit


def write_suite(tmp_path: Path, n: int = 6, **overrides) -> Path:
    rows = [{"qid": f"q{i}", "question": f"question {i} about the weather today",
             "answer": f"question {i} about the weather today", "lang": "de" if i % 2 else "fr"} for i in range(n)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    suite = {"name": "tiny", "dataset": {"adapter": "jsonl", "path": "data.jsonl",
                                         "options": {"fields": {"id": "qid", "input": "question",
                                                                "reference": "answer"}}},
             "system": {"kind": "plain", "prompt": "{input}", "params": {"max_tokens": 20}},
             "metrics": ["exact_match", "token_f1", "rouge", "bleu", "chrf", "refusal", "length"],
             "judges": ["fluency", "similarity", "groundedness"], "group_by": "lang", **overrides}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def run(settings, path: Path, engine: FakeEngine, html: bool = False, **kw):
    ctx = SystemContext(settings, client=EngineClient(engine, concurrency=4))
    return asyncio.run(run_suite(load_suite(path), settings, suite_dir=path.parent, ctx=ctx, html=html, **kw))


def test_suite_runs_scores_and_reports(settings, tmp_path):
    engine = FakeEngine()
    seen = []
    out = run(settings, write_suite(tmp_path), engine, progress=lambda d, t: seen.append((d, t)), html=True)
    r = out.report
    assert (r["n"], r["n_errors"], out.answered) == (6, 0, 6)
    assert seen[0] == (0, 6) and seen[-1] == (6, 6)
    overall = r["metrics"]["overall"]
    # "echo: question i about the weather today" against the reference without "echo:":
    # after normalisation ("the" dropped) 5 reference tokens, 6 predicted, 5 shared: P 5/6, R 1, F1 10/11
    assert overall["token_f1"]["mean"] == pytest.approx(10 / 11)
    assert overall["exact_match"]["mean"] == 0.0 and overall["exact_match"]["n"] == 6
    assert overall["refused"]["mean"] == 0.0
    assert overall["judge.fluency"]["mean"] == 3.0  # the fake judge's default score
    assert "judge.groundedness" not in overall  # no contexts: skipped, not failed
    assert r["judges"]["groundedness"]["skipped"] == 6 and r["judges"]["fluency"]["parse_failures"] == 0
    assert r["judges"]["fluency"]["trusted"] is False  # no agreement measured yet
    assert set(r["metrics"]["groups"]) == {"de", "fr"}
    assert 0 < r["corpus"]["bleu"] < 100 and r["corpus"]["bleu_n"] == 6
    assert r["corpus"]["refusal"]["n"] == 6
    assert r["timing"]["machine_start"]["cpu_count"] >= 1 and len(r["timing"]["machine_end"]["loadavg"]) == 3
    assert r["system"]["model"] == "fake-base" and r["judge_panel"]["mode"] == "structured"
    assert (out.run_dir / "report.json").exists() and (out.run_dir / "report.html").exists()
    assert out.run_dir.parent == settings.eval_path


def test_resume_after_interruption_skips_finished_examples(settings, tmp_path):
    path = write_suite(tmp_path, n=8)
    engine = FakeEngine(delay=0.01)
    ctx = SystemContext(settings, client=EngineClient(engine, concurrency=2))

    async def interrupted():
        task = asyncio.create_task(run_suite(load_suite(path), settings, suite_dir=tmp_path, ctx=ctx, html=False))
        while True:  # cancel as soon as three examples are checkpointed, as Ctrl-C would
            await asyncio.sleep(0.005)
            ckpts = list(settings.eval_path.glob("*/results.jsonl"))
            if ckpts and len(read_checkpoint(ckpts[0])) >= 3:
                task.cancel()
                break
        with pytest.raises(asyncio.CancelledError):
            await task
        return ckpts[0]

    ckpt = asyncio.run(interrupted())
    saved = read_checkpoint(ckpt)
    assert 3 <= len(saved) < 8
    with ckpt.open("a") as f:
        f.write('{"id": "q7", "scores": {')  # a torn last line, as after a kill -9
    engine2 = FakeEngine()
    out = run(settings, path, engine2)
    assert out.answered == 8 - len(saved)
    assert out.report["n"] == 8 and out.report["timing"]["sessions"] == 2
    # The interrupted session's time and count were kept, so the cost per example covers both.
    sessions = json.loads((ckpt.parent / "run.json").read_text())["sessions"]
    assert sessions[0]["answered"] >= 3 and sessions[0]["wall_s"] > 0 and sessions[0].get("finished_at") is None
    timing = out.report["timing"]
    assert timing["total_wall_s"] == pytest.approx(sessions[0]["wall_s"] + sessions[1]["wall_s"])
    assert timing["wall_s_per_example"] == pytest.approx(
        timing["total_wall_s"] / (sessions[0]["answered"] + sessions[1]["answered"]))
    answered_inputs = {r.messages[-1]["content"] for r in engine2.requests if r.structured is None}
    assert not answered_inputs & {f"question {i[1:]} about the weather today" for i in saved}


def test_limit_extends_and_errors_are_retried(settings, tmp_path):
    path = write_suite(tmp_path, n=6)
    first = run(settings, path, FakeEngine(fail_on="question 1"), limit=3)
    assert (first.report["n"], first.errors, first.report["dataset"]["selected"]) == (2, 1, 3)
    assert "ContextLengthError" in first.report["errors"][0]["error"]
    second = run(settings, path, FakeEngine())  # the failed example and the three new ones
    assert (second.answered, second.report["n"], second.errors) == (4, 6, 0)
    assert second.run_dir == first.run_dir
    fresh = run(settings, path, FakeEngine(), limit=2, fresh=True)
    assert fresh.answered == 2 and fresh.report["timing"]["sessions"] == 1


def test_a_changed_prompt_is_a_new_run(settings, tmp_path):
    a = run(settings, write_suite(tmp_path), FakeEngine(), limit=1)
    b = run(settings, write_suite(tmp_path, system={"kind": "plain", "prompt": "Q: {input}"}), FakeEngine(), limit=1)
    assert a.run_dir != b.run_dir and b.answered == 1


def test_suite_validation_errors(tmp_path, settings):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndataset: {path: d.jsonl}\njudges: [tone]\n")
    with pytest.raises(InvalidRequestError, match="unknown judge"):
        load_suite(bad)
    with pytest.raises(NotFoundError):
        load_suite(tmp_path / "missing.yaml")
    path = write_suite(tmp_path, metrics=["perplexity"])
    with pytest.raises(InvalidRequestError, match="unknown metric 'perplexity'"):
        run(settings, path, FakeEngine())
    path = write_suite(tmp_path, system={"kind": "plain", "prompt": "{question} in {nope}"}, metrics=[])
    out = run(settings, path, FakeEngine(), limit=1)
    assert "{nope}" in out.report["errors"][0]["error"]
    with pytest.raises(InvalidRequestError, match="unknown system kind 'retrieval'"):
        build_system({"kind": "retrieval"}, SystemContext(settings, client=EngineClient(FakeEngine())))


def test_system_registry_takes_new_kinds(settings, tmp_path):
    from agentstack.evaluation.systems import Prediction, register_system

    class Constant:
        kind = "constant"

        async def answer(self, example):
            return Prediction(text="question 0 about the weather today", sources=[{"id": "d1"}])

        def describe(self):
            return {"kind": self.kind, "model": None}

    register_system("constant")(lambda config, ctx: Constant())
    try:
        path = write_suite(tmp_path, system={"kind": "constant"}, judges=[], metrics=["exact_match"])
        out = run(settings, path, FakeEngine())
        assert out.report["metrics"]["overall"]["exact_match"]["mean"] == pytest.approx(1 / 6)
    finally:
        SYSTEMS.pop("constant")


def test_split_text_cuts_at_lines():
    text = "\n".join(f"line {i:02d}" for i in range(10))  # 10 lines of 7 chars
    pieces = split_text(text, 20)
    assert all(len(p) <= 20 for p in pieces) and "\n".join(pieces) == text
    assert split_text("x" * 50, 20) == ["x" * 20, "x" * 20, "x" * 10]


def test_map_reduce_condenses_long_contexts():
    def reply(request):
        user = request.messages[-1]["content"]
        return "note" if user.startswith("NOTES FOR") else "final answer"

    engine = FakeEngine(reply=reply)
    system = MapReduceSystem(EngineClient(engine), MapReduceConfig(
        prompt="Q: {input}\n{context}", map_prompt="NOTES FOR {input}\n{context}", max_input_tokens=300,
        chunk_tokens=150))
    short = asyncio.run(system.answer(Example(id="s", input="q", contexts=["short context"])))
    assert short.text == "final answer" and [s["stage"] for s in short.steps] == ["stuff"]
    long_ctx = "\n".join(f"speaker {i}: something was said here" for i in range(100))  # ~3.6k chars
    pred = asyncio.run(system.answer(Example(id="l", input="q", contexts=[long_ctx])))
    stages = [s["stage"] for s in pred.steps]
    assert stages[0] == "map" and stages[-1] == "reduce"
    maps = [r for r in engine.requests if r.messages[-1]["content"].startswith("NOTES FOR")]
    assert len(maps) == pred.steps[0]["chunks"] >= 5
    assert all(len(r.messages[-1]["content"]) <= 150 * 4 * 1.2 for r in maps)
    assert pred.text == "final answer" and pred.prompt_tokens > 0 and pred.contexts == [long_ctx]


def test_pii_span_metric_from_system_spans(settings, tmp_path):
    from agentstack.evaluation.systems import Prediction, register_system

    rec = {"full_text": "Ann met Bob in Paris", "masked": "", "template_id": 1, "spans": [
        {"entity_type": "PERSON", "entity_value": "Ann", "start_position": 0, "end_position": 3},
        {"entity_type": "PERSON", "entity_value": "Bob", "start_position": 8, "end_position": 11},
        {"entity_type": "GPE", "entity_value": "Paris", "start_position": 15, "end_position": 20}]}
    (tmp_path / "synth_dataset_v2.json").write_text(json.dumps([rec]))

    class Detector:  # finds Ann exactly, half of Bob, and calls Paris a PERSON
        kind = "detector"

        async def answer(self, example):
            return Prediction(text="", extra={"spans": [{"start": 0, "end": 3, "label": "PERSON"},
                                                        {"start": 8, "end": 10, "label": "PERSON"},
                                                        {"start": 15, "end": 20, "label": "PERSON"}]})

        def describe(self):
            return {"kind": self.kind}

    register_system("detector")(lambda config, ctx: Detector())
    try:
        path = tmp_path / "pii.yaml"
        path.write_text(yaml.safe_dump({"name": "pii", "dataset": {"adapter": "presidio", "path": "."},
                                        "system": {"kind": "detector"}, "metrics": ["pii_spans"]}))
        corpus = run(settings, path, FakeEngine()).report["corpus"]
    finally:
        SYSTEMS.pop("detector")
    assert corpus["pii_exact"]["precision"] == pytest.approx(1 / 3) and corpus["pii_exact"]["recall"] == pytest.approx(1 / 3)
    assert corpus["pii_overlap"]["f1"] == pytest.approx(2 / 3)  # Ann and Bob match; Paris has the wrong label
    assert corpus["pii_overlap_any_label"]["f1"] == pytest.approx(1.0)
    assert corpus["pii_overlap_per_label"]["GPE"]["recall"] == 0.0


def test_example_suites_are_valid(settings):
    from agentstack.evaluation.datasets import ADAPTERS
    from agentstack.evaluation.scoring import parse_metric_specs

    files = sorted((Path(__file__).parents[2] / "bench" / "suites").glob("*.yaml"))
    assert len(files) >= 5
    ctx = SystemContext(settings, client=EngineClient(FakeEngine()))
    for f in files:
        suite = load_suite(f)
        assert suite.dataset.adapter in ADAPTERS and suite.dataset.path.startswith("{datasets}/")
        parse_metric_specs(suite.metrics)
        assert build_system(suite.system, ctx).describe()["kind"] == suite.system["kind"]


def test_sampling_defaults_to_greedy_unless_set():
    c = MapReduceConfig.model_validate({"params": {"max_tokens": 5}, "map_params": {"top_p": 0.9}})
    assert c.params.temperature == 0.0 and c.params.max_tokens == 5 and c.map_params.temperature == 0.0
    assert MapReduceConfig.model_validate({"params": {"temperature": 0.7}}).params.temperature == 0.7
    with pytest.raises(ValueError):
        MapReduceConfig.model_validate({"params": {"max_tokens": 5}, "typo": 1})


def test_a_failing_metric_is_an_example_error(settings, tmp_path):
    from agentstack.evaluation.scoring import METRICS, register_metric

    def boom(ex, p, ctx):
        if ex.id == "q1":
            raise RuntimeError("metric exploded")
        return {"ok": 1.0}

    register_metric("boom", boom)
    try:
        out = run(settings, write_suite(tmp_path, n=3, metrics=["boom"], judges=[]), FakeEngine())
    finally:
        METRICS.pop("boom")
    assert out.report["n"] == 2 and out.errors == 1
    assert out.report["errors"][0] == {"id": "q1", "error": "scoring: RuntimeError: metric exploded"}
