"""Run a suite: answer every example, score it, checkpoint it, then write the report.

Resumable by construction: each finished example is appended as one JSON line to
``<data_dir>/eval/<run id>/results.jsonl`` (flushed and fsynced) before the next is counted, keyed
by example id. The run id is the suite name plus a hash of everything that defines the run (suite,
system identity including the model version, judge model), so re-running the same command after
an interruption picks up where it stopped; examples that failed are tried again; a changed prompt
or model is a new run. ``--limit`` is not part of the identity: a larger limit extends a run.

Examples run concurrently (bounded by the engine client), so the embedded engine can batch them.
The report records ``n``, errors, wall time per example, and the load average at start and end,
since the machine may be shared.

This module knows nothing about HTML or the command line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentstack.evaluation.datasets.base import Example, load_examples
from agentstack.evaluation.judges.panel import JudgePanel
from agentstack.evaluation.scoring import (
    ScoringContext,
    aggregate,
    corpus_scores,
    parse_metric_specs,
    score_example,
)
from agentstack.evaluation.suite import Suite, dataset_path
from agentstack.evaluation.systems import Prediction, SystemContext, build_system, identity_hash
from agentstack.storage.files import atomic_write_json, read_json

log = logging.getLogger(__name__)
REPORT_SCHEMA = "agentstack.eval.report/1"
Progress = Callable[[int, int], None]  # (done, total)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def machine() -> dict[str, Any]:
    return {"cpu_count": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()]}


def read_checkpoint(path: Path) -> dict[str, dict[str, Any]]:
    """Latest record per example id; a torn last line (killed mid-write) is ignored."""
    records: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return records
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and "id" in rec:
                records[str(rec["id"])] = rec
    return records


class Checkpoint:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = asyncio.Lock()

    async def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        async with self._lock:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())


@dataclass
class RunOutcome:
    report: dict[str, Any]
    run_dir: Path
    answered: int  # examples answered in this session
    errors: int


def _clip(text: Any, n: int) -> Any:
    return text[:n] + "…" if isinstance(text, str) and len(text) > n else text


def _judge_inputs(suite: Suite, ex: Example, pred: Prediction) -> dict[str, Any]:
    try:
        question = suite.judge.question.format_map({**ex.fields, "input": ex.input})
    except KeyError:
        question = ex.input
    return {"question": question, "answer": pred.text, "context": "\n\n".join(pred.contexts),
            "ground_truth": ex.references[0] if ex.references else None}


async def _process(suite: Suite, system: Any, panel: JudgePanel | None, specs: list, scoring: ScoringContext,
                   ex: Example) -> dict[str, Any]:
    base = {"id": ex.id, "input": _clip(ex.input, 600), "reference": _clip(ex.references[0], 1200)
            if ex.references else None, "fields": {suite.group_by: ex.fields.get(suite.group_by)}
            if suite.group_by else {}}
    try:
        pred = await system.answer(ex)
    except Exception as exc:  # recorded, retried on resume
        log.warning("example %s failed: %s", ex.id, type(exc).__name__)
        return {**base, "error": f"{type(exc).__name__}: {exc}"[:500]}
    try:
        scores = await score_example(specs, ex, pred, scoring)
        judged: dict[str, Any] = {}
        if panel is not None and suite.judges:
            started = time.perf_counter()
            results = await panel.score_many(suite.judges, _judge_inputs(suite, ex, pred))
            for name, js in results.items():
                judged[name] = js.as_dict()
                if not (js.error or "").startswith("missing input"):
                    scores[f"judge.{name}"] = js.score
                    if panel.weighted and panel.mode == "structured":
                        scores[f"judge.{name}.expected"] = js.expected
            scores["judge_latency_s"] = time.perf_counter() - started
    except Exception as exc:  # a metric failed: also recorded and retried
        log.warning("scoring example %s failed: %s", ex.id, type(exc).__name__)
        return {**base, "error": f"scoring: {type(exc).__name__}: {exc}"[:500]}
    scores["latency_s"] = pred.latency_s
    stored = pred.as_dict()
    stored.pop("contexts")  # they can be long and are in the dataset; keep the count
    stored["n_contexts"] = len(pred.contexts)
    return {**base, "error": None, "prediction": stored, "scores": scores, "judges": judged}


def judge_summary(records: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    out = {}
    for name in names:
        rows = [(r.get("judges") or {}).get(name) for r in records]
        rows = [x for x in rows if x]
        scored = [x["score"] for x in rows if x.get("score") is not None]
        expected = [x["expected"] for x in rows if x.get("expected") is not None]
        out[name] = {"n": len(scored), "mean": sum(scored) / len(scored) if scored else None,
                     "mean_expected": sum(expected) / len(expected) if expected else None,
                     "parse_failures": sum(x.get("error") == "parse" for x in rows),
                     "engine_errors": sum((x.get("error") or "").startswith("engine") for x in rows),
                     "skipped": sum((x.get("error") or "").startswith("missing input") for x in rows),
                     "truncated": sum(bool(x.get("truncated")) for x in rows),
                     "structured": sum(bool(x.get("structured")) for x in rows),
                     "distribution": {str(s): scored.count(s) for s in range(1, 6)}}
    return out


async def run_suite(suite: Suite, settings: Any, *, suite_dir: Path = Path("."), ctx: SystemContext | None = None,
                    limit: int | None = None, fresh: bool = False, progress: Progress | None = None,
                    scoring: ScoringContext | None = None, html: bool = True) -> RunOutcome:
    """Run (or resume) ``suite``; returns the report, also written under ``settings.eval_path``
    (``report.json``, and ``report.html`` unless ``html=False``)."""
    from agentstack.evaluation.judges.agreement import judge_trust
    from agentstack.evaluation.reports import write_report

    path = dataset_path(suite, suite_dir, Path(settings.evaluation.datasets_dir))
    examples = load_examples(suite.dataset.adapter, path, limit=limit, **suite.dataset.options)
    specs = parse_metric_specs(suite.metrics)
    ctx = ctx or SystemContext(settings, concurrency=suite.concurrency)
    scoring = scoring or ScoringContext(settings)
    system = build_system(suite.system, ctx)
    panel = None
    if suite.judges:
        panel = JudgePanel(ctx.client, model=suite.judge.model or settings.evaluation.judge_model,
                           structured=suite.judge.structured, max_chars=suite.judge.max_chars,
                           max_context_chars=suite.judge.max_context_chars)
    identity = {"suite": suite.identity(), "system": system.describe(),
                "judge_model": panel.model if panel else None}
    run_id = f"{suite.name}-{identity_hash(identity)}"
    run_dir = Path(settings.eval_path) / run_id
    ckpt_path = run_dir / "results.jsonl"
    if fresh:
        for name in ("results.jsonl", "report.json", "report.html", "run.json"):
            (run_dir / name).unlink(missing_ok=True)
    done = read_checkpoint(ckpt_path)
    run_meta = read_json(run_dir / "run.json", None) or {"run_id": run_id, "created_at": now_iso(),
                                                          "identity": identity, "sessions": []}
    session = {"started_at": now_iso(), "machine_start": machine(), "limit": limit, "wall_s": 0.0, "answered": 0}
    run_meta["sessions"].append(session)
    atomic_write_json(run_dir / "run.json", run_meta)

    todo = [ex for ex in examples if (done.get(ex.id) or {}).get("error", "x") is not None]
    total = len(examples)
    finished = total - len(todo)
    if progress:
        progress(finished, total)
    checkpoint = Checkpoint(ckpt_path)
    gate = asyncio.Semaphore(ctx.concurrency)
    started = time.perf_counter()
    load_samples: list[float] = [os.getloadavg()[0]]

    async def one(ex: Example) -> None:
        nonlocal finished
        async with gate:
            record = await _process(suite, system, panel, specs, scoring, ex)
        await checkpoint.append(record)
        done[ex.id] = record
        load_samples.append(os.getloadavg()[0])
        finished += 1
        # The session's time so far, so a killed run still knows what its examples cost.
        session.update({"wall_s": time.perf_counter() - started, "answered": session["answered"] + 1})
        atomic_write_json(run_dir / "run.json", run_meta)
        if progress:
            progress(finished, total)

    await asyncio.gather(*(one(ex) for ex in todo))
    wall = time.perf_counter() - started
    session.update({"finished_at": now_iso(), "wall_s": wall, "answered": len(todo), "machine_end": machine()})
    atomic_write_json(run_dir / "run.json", run_meta)

    records = [done[ex.id] for ex in examples if ex.id in done]
    ok = [r for r in records if r.get("error") is None]
    by_id = {ex.id: ex for ex in examples}
    pairs = [(by_id[r["id"]], Prediction.from_dict(r["prediction"])) for r in ok]
    judges = judge_summary(ok, suite.judges)
    trust = judge_trust(settings, panel.model if panel else None, suite.judges)
    for name in judges:
        judges[name].update(trust.get(name, {}))
    latencies = [r["scores"].get("latency_s") for r in ok]
    total_wall = sum(s.get("wall_s") or 0.0 for s in run_meta["sessions"])
    total_answered = sum(s.get("answered") or 0 for s in run_meta["sessions"])
    report = {
        "schema": REPORT_SCHEMA, "run_id": run_id, "suite": suite.model_dump(), "system": system.describe(),
        "dataset": {"adapter": suite.dataset.adapter, "path": str(path), "selected": total, "limit": limit},
        "n": len(ok), "n_errors": len(records) - len(ok),
        "errors": [{"id": r["id"], "error": r["error"]} for r in records if r.get("error")][:50],
        "created_at": run_meta["created_at"], "finished_at": now_iso(),
        "metrics": aggregate(ok, suite.group_by), "corpus": corpus_scores(specs, pairs),
        "judges": judges, "judge_panel": ({**panel.describe(), **panel.stats.as_dict()} if panel else None),
        "timing": {"session_wall_s": wall, "answered_this_session": len(todo),
                   # over every session that answered something (interrupted ones included)
                   "wall_s_per_example": (total_wall / total_answered) if total_answered else None,
                   "total_wall_s": total_wall,
                   "mean_latency_s": sum(latencies) / len(latencies) if latencies else None,
                   "concurrency": ctx.concurrency, "sessions": len(run_meta["sessions"]),
                   "machine_start": session["machine_start"], "machine_end": session["machine_end"],
                   "loadavg_1m_during": {"min": min(load_samples), "max": max(load_samples),
                                         "mean": sum(load_samples) / len(load_samples), "samples": len(load_samples)}},
        "usage": ctx._client.usage() if ctx._client is not None else None,
        "examples": records,
    }
    write_report(run_dir, report, html=html)
    await asyncio.to_thread(_record, settings, run_dir, report)
    return RunOutcome(report, run_dir, len(todo), len(records) - len(ok))


def _record(settings: Any, run_dir: Path, report: dict[str, Any]) -> None:
    """Record the report's metadata in the main database (every replica lists it); a database
    that cannot be opened costs the listing, never the report."""
    if not hasattr(settings, "database_url"):
        return
    from agentstack.db import open_db
    from agentstack.evaluation.reports import record_report

    try:
        db = open_db(settings)
    except Exception as exc:  # noqa: BLE001  (the report files are written; say why it is not listed)
        log.warning("eval report %s not recorded in the database: %s", report.get("run_id"), exc)
        return
    try:
        record_report(db, run_dir, report)
    finally:
        db.close()
