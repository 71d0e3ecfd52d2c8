"""`agentstack eval`: run suites, list and compare reports, measure judge agreement.

Thin: parse, call :mod:`agentstack.evaluation`, print (rich for people, ``--json`` for scripts).
Exit codes: 0 all examples scored; 1 partial (some examples failed, or interrupted: re-run the
same command to resume); 2 usage error (bad suite, unknown adapter, missing data or report).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import typer

from agentstack.cli.app import app
from agentstack.errors import AgentstackError, InvalidRequestError, NotFoundError

eval_app = typer.Typer(name="eval", help="Evaluation suites, reports and judges.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")

USAGE_ERRORS = (InvalidRequestError, NotFoundError)


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _settings(datasets_dir: Path | None = None) -> Any:
    from agentstack.config import load_settings

    try:
        settings = load_settings()
    except AgentstackError as exc:
        raise _fail(str(exc), 2) from None
    if datasets_dir is not None:
        settings = settings.model_copy(update={"evaluation": settings.evaluation.model_copy(
            update={"datasets_dir": datasets_dir})})
    return settings


class _Bar:
    """A rich progress bar on stderr, fed by (done, total) callbacks."""

    def __init__(self, label: str):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 console=Console(stderr=True), transient=False)
        self.task: Any = None

    def __enter__(self) -> _Bar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, done: int, total: int) -> None:
        if self.task is None:
            self.task = self.progress.add_task("", total=total)
        self.progress.update(self.task, completed=done, total=total)


def _print_run(report: dict[str, Any], run_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    timing = report["timing"]
    console.print(f"[bold]{report['suite']['name']}[/] run {report['run_id']}: n={report['n']}, "
                  f"errors={report['n_errors']}, {timing['wall_s_per_example'] or 0:.2f} s/example "
                  f"(concurrency {timing['concurrency']}, load {timing['machine_end']['loadavg']})")
    table = Table("metric", "n", "mean", "95% CI")
    for key, s in report["metrics"]["overall"].items():
        ci = s["ci95"]
        table.add_row(key, str(s["n"]), f"{s['mean']:.4f}" if s["mean"] is not None else "–",
                      f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "–")
    for key, value in report["corpus"].items():
        if isinstance(value, (int, float)) and not key.endswith(("_n", "_bp")):
            table.add_row(key, str(report["corpus"].get(f"{key}_n", report["n"])), f"{value:.4f}", "")
        elif isinstance(value, dict) and "rate" in value:
            ci = value["ci95"]
            table.add_row(f"{key} rate", str(value["n"]), f"{value['rate']:.4f}" if value["rate"] is not None
                          else "–", f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "–")
    console.print(table)
    if report["judges"]:
        jt = Table("judge", "n", "mean", "parse failures", "agreement", "trusted")
        for name, j in report["judges"].items():
            jt.add_row(name, str(j["n"]), f"{j['mean']:.3f}" if j["mean"] is not None else "–",
                       str(j["parse_failures"]), f"{j['agreement']:.3f}" if j.get("agreement") is not None else "–",
                       "yes" if j.get("trusted") else "no")
        console.print(jt)
    console.print(f"report: {run_dir / 'report.json'}\n        {run_dir / 'report.html'}")


@eval_app.command("run")
def run(suite_file: Path = typer.Argument(..., help="Suite YAML file."),
        limit: int = typer.Option(None, "--limit", min=1, help="Use only the first N examples."),
        fresh: bool = typer.Option(False, "--fresh", help="Discard this run's checkpoint and start over."),
        concurrency: int = typer.Option(None, min=1, help="Engine requests in flight (default: settings)."),
        datasets_dir: Path = typer.Option(None, help="Root of the public datasets ({datasets} in suites)."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable summary on stdout.")) -> None:
    """Run a suite (resuming an interrupted run of the same suite and system)."""
    from agentstack.evaluation.reports import summary
    from agentstack.evaluation.runner import run_suite
    from agentstack.evaluation.suite import load_suite
    from agentstack.evaluation.systems import SystemContext

    settings = _settings(datasets_dir)
    try:
        suite = load_suite(suite_file)
    except AgentstackError as exc:
        raise _fail(str(exc), 2) from None

    async def go(bar: _Bar) -> Any:
        ctx = SystemContext(settings, concurrency=concurrency or suite.concurrency)
        try:
            return await run_suite(suite, settings, suite_dir=suite_file.parent, ctx=ctx, limit=limit, fresh=fresh,
                                   progress=bar)
        finally:
            await ctx.aclose()

    try:
        with _Bar(suite.name) as bar:
            outcome = asyncio.run(go(bar))
    except USAGE_ERRORS as exc:
        raise _fail(str(exc), 2) from None
    except AgentstackError as exc:
        raise _fail(str(exc), 1) from None
    except KeyboardInterrupt:
        raise _fail("interrupted; finished examples are saved: run the same command again to resume", 1) from None
    report = outcome.report
    if as_json:
        typer.echo(json.dumps({**summary(report, outcome.run_dir), "judges": report["judges"],
                               "corpus": report["corpus"], "timing": report["timing"]}, indent=2, default=str))
    else:
        _print_run(report, outcome.run_dir)
    raise typer.Exit(1 if outcome.errors else 0)


@eval_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List stored reports, newest first."""
    from agentstack.evaluation.reports import list_reports

    rows = list_reports(_settings().eval_path)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("run", "suite", "model", "n", "errors", "finished", "headline")
    for r in rows:
        head = ", ".join(f"{k}={v:.3g}" for k, v in list(r["headline"].items())[:4])
        table.add_row(r["run_id"], r["suite"] or "", r["system"].get("model") or "", str(r["n"]), str(r["n_errors"]),
                      r["finished_at"] or "", head)
    Console().print(table)


@eval_app.command("compare")
def compare(a: str = typer.Argument(..., help="Report A: report.json path, run dir or run id."),
            b: str = typer.Argument(..., help="Report B."),
            html: Path = typer.Option(None, "--html", help="Also write a side-by-side HTML page here."),
            as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Print the differences B − A, paired over the examples both runs scored."""
    from agentstack.evaluation.html import render_comparison
    from agentstack.evaluation.reports import compare_reports, load_report
    from agentstack.storage.files import atomic_write_text

    settings = _settings()
    try:
        ra, rb = load_report(a, settings.eval_path), load_report(b, settings.eval_path)
    except AgentstackError as exc:
        raise _fail(str(exc), 2) from None
    cmp = compare_reports(ra, rb)
    if html is not None:
        atomic_write_text(html, render_comparison(ra, rb, cmp))
    if as_json:
        typer.echo(json.dumps(cmp, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"A = {cmp['a']['run_id']} (n={cmp['a']['n']})\nB = {cmp['b']['run_id']} (n={cmp['b']['n']})\n"
                  f"examples in both: {cmp['common_examples']}" + ("" if cmp["same_suite"] else
                                                                  "  [yellow](different suites)[/]"))
    table = Table("metric", "A", "B", "B − A", "paired Δ 95% CI", "B win rate [95% CI]")
    for r in cmp["metrics"]:
        ci = r.get("paired_delta_ci95")
        wr = r.get("b_win_rate")
        wci = r.get("b_win_rate_ci95")
        table.add_row(r["metric"], f"{r['a']:.4f}", f"{r['b']:.4f}", f"{r['delta']:+.4f}",
                      f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "–",
                      f"{wr:.3f} [{wci[0]:.2f}, {wci[1]:.2f}]" if wr is not None and wci else "–")
    console.print(table)
    if html is not None:
        console.print(f"side by side: {html}")


@eval_app.command("agreement")
def agreement(data: Path = typer.Option(None, help="HH-RLHF file or directory (default: {datasets}/preference)."),
              limit: int = typer.Option(100, min=1, help="Pairs to judge."),
              judges: list[str] = typer.Option(None, "--judge", help="Judges to measure (default: all that apply)."),
              pairwise: bool = typer.Option(True, help="Also measure the pairwise preference judge."),
              concurrency: int = typer.Option(None, min=1, help="Engine requests in flight."),
              as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Measure each judge's agreement with human chosen/rejected labels (HH-RLHF) and store it."""
    from agentstack.evaluation.datasets import load_examples
    from agentstack.evaluation.judges.agreement import LABELLED_JUDGES, measure_agreement, save_agreement
    from agentstack.evaluation.judges.panel import JudgePanel
    from agentstack.evaluation.systems import SystemContext

    settings = _settings()
    path = data or Path(settings.evaluation.datasets_dir) / "preference"
    try:
        pairs = load_examples("hh_rlhf", path, limit=limit)
    except AgentstackError as exc:
        raise _fail(str(exc), 2) from None

    async def go(bar: _Bar) -> dict[str, Any]:
        ctx = SystemContext(settings, concurrency=concurrency)
        try:
            panel = JudgePanel(ctx.client, model=settings.evaluation.judge_model)
            return await measure_agreement(panel, pairs, tuple(judges or LABELLED_JUDGES), pairwise, progress=bar)
        finally:
            await ctx.aclose()

    try:
        with _Bar("judging pairs") as bar:
            result = asyncio.run(go(bar))
    except USAGE_ERRORS as exc:
        raise _fail(str(exc), 2) from None
    except AgentstackError as exc:
        raise _fail(str(exc), 1) from None
    result["dataset"] = str(path)
    saved = save_agreement(settings.eval_path, result)
    if as_json:
        typer.echo(json.dumps({**result, "path": str(saved)}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("judge", "n", "agreement", "95% CI", "ties", "failures", "trusted")
    threshold = settings.evaluation.judge_min_agreement
    for name, t in result["judges"].items():
        a = t["agreement"]
        table.add_row(name, str(t["n"]), f"{a:.3f}" if a is not None else "–",
                      f"[{t['ci95'][0]:.3f}, {t['ci95'][1]:.3f}]" if t["ci95"] else "–", str(t["ties"]),
                      str(t["failures"]), "yes" if a is not None and a >= threshold else "no")
    Console().print(f"judge model {result['model']} ({result['mode']}), {result['n_pairs']} pairs; "
                    f"trusted at agreement ≥ {threshold}")
    Console().print(table)
    Console().print(f"saved: {saved}")
