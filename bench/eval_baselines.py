"""Evaluation baselines: summarise the stored eval reports and judge agreement into bench/results.

The runs themselves are long CPU jobs done with the CLI (see docs/evaluation.md):

    agentstack eval run bench/suites/ntrex_en_de.yaml --limit 200 --concurrency 16
    agentstack eval run bench/suites/qmsum.yaml --concurrency 16
    agentstack eval agreement --limit 100 --concurrency 16

This script reads their reports from the data directory, prints a table, and writes
``bench/results/eval_baselines.json``: per suite n, errors, headline figures, time per example,
and the machine (CPU count, load average at start, end and sampled during the run), so a figure
taken on a busy machine can be recognised.

    .venv/bin/python bench/eval_baselines.py [--suite ntrex-en-de --suite qmsum]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def main() -> None:
    from agentstack.config import load_settings
    from agentstack.evaluation.judges.agreement import load_agreement
    from agentstack.evaluation.reports import headline, list_reports, load_report

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", action="append", default=None, help="Suite names (default: all).")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "eval_baselines.json")
    args = parser.parse_args()
    settings = load_settings()
    latest: dict[str, dict] = {}
    for row in list_reports(settings.eval_path):  # newest first
        if (args.suite is None or row["suite"] in args.suite) and row["suite"] not in latest:
            latest[row["suite"]] = row
    results = {"machine": {"cpu_count": os.cpu_count(), "loadavg_now": list(os.getloadavg())}, "suites": {},
               "judge_agreement": None}
    for name, row in latest.items():
        report = load_report(row["json_path"])
        t = report["timing"]
        results["suites"][name] = {
            "run_id": report["run_id"], "n": report["n"], "n_errors": report["n_errors"],
            "system": report["system"], "headline": headline(report),
            "judges": {k: {x: j.get(x) for x in ("n", "mean", "mean_expected", "parse_failures", "truncated",
                                                 "agreement", "trusted")} for k, j in report["judges"].items()},
            "usage": report.get("usage"),
            "timing": {k: t.get(k) for k in ("total_wall_s", "session_wall_s", "wall_s_per_example",
                                             "mean_latency_s", "concurrency", "machine_start", "machine_end",
                                             "loadavg_1m_during")},
            "finished_at": report["finished_at"]}
    model = next((r["judge_panel"]["model"] for r in (load_report(x["json_path"]) for x in latest.values())
                  if r.get("judge_panel")), None)
    if model:
        results["judge_agreement"] = load_agreement(settings.eval_path, model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"{'suite':<22} {'n':>4} {'err':>4} {'s/example':>10} {'load 1m (mean)':>15}  headline")
    for name, s in results["suites"].items():
        t = s["timing"]
        figures = ", ".join(f"{k}={v:.3g}" for k, v in s["headline"].items() if not k.endswith(".expected"))
        print(f"{name:<22} {s['n']:>4} {s['n_errors']:>4} {t['wall_s_per_example'] or 0:>10.1f} "
              f"{(t.get('loadavg_1m_during') or {}).get('mean', 0):>15.2f}  {figures}")
    if results["judge_agreement"]:
        for judge, a in results["judge_agreement"]["judges"].items():
            print(f"agreement {judge:<12} n={a['n']:>3} {a['agreement'] if a['agreement'] is not None else '-'}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
