"""Stored eval reports: writing, listing, loading and comparing them.

Each run lives in ``<data_dir>/eval/<run id>/`` with ``report.json`` (the figures, per-example
scores and the run's identity), ``report.html`` (self-contained: tables and base64 plots),
``results.jsonl`` (the checkpoint) and ``run.json`` (sessions, machine load). Each report's
metadata (its summary row) is also recorded in the main database's ``eval_reports`` table
(:func:`record_report`), so every replica lists the reports any of them ran.
:func:`list_reports` is what ``GET /v1/admin/eval/reports`` serves; :func:`compare_reports` is
behind ``agentstack eval compare``.

This module knows nothing about engines or how the figures were produced.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from agentstack.errors import InvalidRequestError, NotFoundError
from agentstack.evaluation.metrics.preference import win_rate_from_scores
from agentstack.evaluation.metrics.stats import bootstrap_ci
from agentstack.storage.files import atomic_write_json, atomic_write_text, read_json

HEADLINE_SKIP = {"latency_s", "judge_latency_s", "refused_partial"}


def write_report(run_dir: Path, report: dict[str, Any], html: bool = True) -> None:
    atomic_write_json(run_dir / "report.json", report)
    if html:
        from agentstack.evaluation.html import render_report

        atomic_write_text(run_dir / "report.html", render_report(report))


def headline(report: dict[str, Any]) -> dict[str, float]:
    """The report's key figures: corpus scores and the mean of every per-example metric."""
    out: dict[str, float] = {}
    for key, value in (report.get("corpus") or {}).items():
        if isinstance(value, (int, float)) and not key.endswith("_n") and not key.endswith("_bp"):
            out[key] = float(value)
        elif isinstance(value, dict) and value.get("rate") is not None:
            out[f"{key}_rate"] = float(value["rate"])
    for key, s in ((report.get("metrics") or {}).get("overall") or {}).items():
        if key not in HEADLINE_SKIP and s.get("mean") is not None:
            out[key] = float(s["mean"])
    return out


def gate_figures(report: dict[str, Any]) -> dict[str, float]:
    """The headline figures a promotion gate may rely on: every figure except the scores of judges
    that are not trusted (agreement with human labels below ``evaluation.judge_min_agreement``
    when the report was made, or never measured)."""
    untrusted = {name for name, j in (report.get("judges") or {}).items() if not j.get("trusted")}
    return {k: v for k, v in headline(report).items()
            if not (k.startswith("judge.") and k.split(".")[1] in untrusted)}


def summary(report: dict[str, Any], run_dir: Path | None = None) -> dict[str, Any]:
    system = report.get("system") or {}
    row = {"run_id": report.get("run_id"), "suite": (report.get("suite") or {}).get("name"),
           "created_at": report.get("created_at"), "finished_at": report.get("finished_at"),
           "n": report.get("n"), "n_errors": report.get("n_errors"),
           "system": {"kind": system.get("kind"), "model": system.get("model")},
           "headline": headline(report),
           "wall_s_per_example": (report.get("timing") or {}).get("wall_s_per_example")}
    if run_dir is not None:
        row["json_path"] = str(run_dir / "report.json")
        row["html_path"] = str(run_dir / "report.html")
    return row


def _stored(eval_path: Path | str) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in Path(eval_path).glob("*/report.json"):
        report = read_json(path, None)
        if isinstance(report, dict) and str(report.get("schema", "")).startswith("agentstack.eval.report/"):
            out.append((path.parent, report))
    return out


def report_row(run_dir: Path, report: dict[str, Any]) -> dict[str, Any]:
    """The ``eval_reports`` row of a report (its summary, without server paths)."""
    row = summary(report)
    return {"run_id": str(report.get("run_id") or run_dir.name), "suite": row.get("suite"),
            "created_at": row.get("created_at"), "finished_at": row.get("finished_at"),
            "summary_json": json.dumps(row, sort_keys=True, default=str), "run_dir": str(run_dir),
            "recorded_at": time.time()}


def report_rows(eval_path: Path | str) -> list[dict[str, Any]]:
    return [report_row(run_dir, report) for run_dir, report in _stored(eval_path)]


def record_report(db: Any, run_dir: Path, report: dict[str, Any]) -> None:
    """Insert or replace the report's metadata in the main database."""
    from agentstack.storage.schema import eval_reports

    row = report_row(run_dir, report)
    with db.tx() as conn:
        conn.execute(eval_reports.delete().where(eval_reports.c.run_id == row["run_id"]))
        conn.execute(eval_reports.insert().values(**row))


def list_reports(eval_path: Path | str, db: Any = None) -> list[dict[str, Any]]:
    """Summaries of the stored reports, newest first: those under ``eval_path`` (with their paths)
    and, given the main database ``db``, those any replica recorded there."""
    rows = {row["run_id"]: row for row in (summary(r, d) for d, r in _stored(eval_path))}
    if db is not None:
        from agentstack.storage.schema import eval_reports

        for rec in db.query(eval_reports.select()):
            rows.setdefault(rec["run_id"], json.loads(rec["summary_json"]))
    return sorted(rows.values(), key=lambda r: r.get("finished_at") or "", reverse=True)


def load_report(ref: str | Path, eval_path: Path | str | None = None) -> dict[str, Any]:
    """A report by file path, run directory, or run id (under ``eval_path``)."""
    candidates = [Path(ref), Path(ref) / "report.json"]
    if eval_path is not None:
        candidates.append(Path(eval_path) / str(ref) / "report.json")
    for path in candidates:
        if path.is_file():
            report = read_json(path, None)
            if not isinstance(report, dict) or "schema" not in report:
                raise InvalidRequestError(f"{path} is not an agentstack eval report", param="report")
            return report
    raise NotFoundError(f"no eval report at {ref}", param="report",
                        fix="give a report.json path or a run id listed by `agentstack eval list`")


def _per_example(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    out = {}
    for rec in report.get("examples") or []:
        if rec.get("error") is None:
            out[rec["id"]] = {k: v for k, v in (rec.get("scores") or {}).items() if isinstance(v, (int, float))}
    return out


def compare_reports(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Differences B − A for every figure both reports have; for per-example metrics also the
    paired view over the examples both scored: mean difference with a bootstrap 95% interval and
    the win rate of B over A (ties as halves, Wilson interval)."""
    ha, hb = headline(a), headline(b)
    ea, eb = _per_example(a), _per_example(b)
    common = sorted(set(ea) & set(eb))
    rows = []
    for key in sorted(set(ha) & set(hb)):
        row: dict[str, Any] = {"metric": key, "a": ha[key], "b": hb[key], "delta": hb[key] - ha[key]}
        paired = [(ea[i][key], eb[i][key]) for i in common if key in ea[i] and key in eb[i]]
        if paired:
            diffs = [y - x for x, y in paired]
            wr = win_rate_from_scores([y for _, y in paired], [x for x, _ in paired])
            row.update({"paired_n": len(paired), "paired_delta": sum(diffs) / len(diffs),
                        "paired_delta_ci95": bootstrap_ci(diffs), "b_win_rate": wr.rate,
                        "b_win_rate_ci95": list(wr.ci95) if wr.ci95 else None})
        rows.append(row)
    return {"a": {"run_id": a.get("run_id"), "system": a.get("system"), "n": a.get("n")},
            "b": {"run_id": b.get("run_id"), "system": b.get("system"), "n": b.get("n")},
            "same_suite": (a.get("suite") or {}).get("name") == (b.get("suite") or {}).get("name"),
            "common_examples": len(common), "metrics": rows}
