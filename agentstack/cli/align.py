"""`agentstack align run | jobs | status | cancel | models | promote | rollback | selectable`.

Thin: every command calls a running server's operator API (``/v1/admin/alignment/*``,
``/v1/admin/models*``) with an operator key (``--key`` or ``AGENTSTACK_CLIENT__API_KEY``), so the
server does the work and the audit log records who asked. Rich tables for people, ``--json`` for
scripts. Exit codes: 0 ok; 1 the operation ran but did not succeed (job failed or was cancelled,
gate rejected with ``--wait``, a job already running, server unreachable); 2 usage error (bad
spec, unknown job or version, too little data).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

from agentstack.cli.app import app
from agentstack.cli.client import ApiClient, ApiError, fail

align_app = typer.Typer(name="align", help="Alignment rounds: train on feedback, gate, promote, roll back.",
                        no_args_is_help=True)
app.add_typer(align_app, name="align")

UrlOpt = typer.Option(None, "--url", help="Server URL (default: AGENTSTACK_CLIENT__URL or the served address).")
KeyOpt = typer.Option(None, "--key", help="Operator API key (default: AGENTSTACK_CLIENT__API_KEY).")
JsonOpt = typer.Option(False, "--json", help="Print JSON for scripts.")
SpecOpt = typer.Option(None, "--spec", help="A JSON or YAML job spec; flags override it.")
SetOpt = typer.Option([], "--set", help="Any spec field: --set gate.max_kl=0.2 (repeatable).")


def client(url: str | None, key: str | None) -> ApiClient:
    from agentstack.config import load_settings
    from agentstack.errors import AgentstackError

    try:
        return ApiClient(load_settings(), url, key)
    except AgentstackError as exc:
        raise fail(str(exc), 2) from None


def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run an API call; errors become one line and exit 2 (the request was wrong) or 1."""
    try:
        return fn(*args, **kwargs)
    except ApiError as exc:
        raise fail(exc.args[0], 2 if exc.status in (400, 404, 422) else 1) from None


def emit(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else ""


def set_path(spec: dict[str, Any], dotted: str, raw: str) -> None:
    """``hyperparameters.max_steps=20`` → spec["hyperparameters"]["max_steps"] = 20 (JSON values)."""
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    node = spec
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def build_spec(spec_file: Path | None, sets: list[str], **flags: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if spec_file is not None:
        import yaml

        spec = yaml.safe_load(spec_file.read_text("utf-8")) or {}
    mapping = {"method": "method", "max_steps": "hyperparameters.max_steps", "epochs": "hyperparameters.epochs",
               "learning_rate": "hyperparameters.learning_rate", "beta": "hyperparameters.beta",
               "batch_size": "hyperparameters.batch_size", "since": "data_window.since",
               "until": "data_window.until", "days": "data_window.days", "min_pairs": "thresholds.min_pairs",
               "min_examples": "thresholds.min_examples", "max_per_user": "thresholds.max_per_user",
               "heldout_fraction": "thresholds.heldout_fraction", "promote": "promote", "revisions": "data.revisions"}
    for name, path in mapping.items():
        if flags.get(name) is not None:
            set_path(spec, path, json.dumps(flags[name]))
    if flags.get("constitution_limit"):
        set_path(spec, "data.constitution", json.dumps({"limit": flags["constitution_limit"]}))
    for item in sets:
        if "=" not in item:
            raise fail(f"--set expects KEY=VALUE, got {item!r}", 2)
        key, _, raw = item.partition("=")
        set_path(spec, key.strip(), raw.strip())
    return spec


def _print_job(job: dict[str, Any], log_lines: int = 0) -> None:
    from rich.console import Console

    console = Console()
    console.print(f"[bold]{job['id']}[/] {job['method']}  status [bold]{job['status']}[/]  stage {job.get('stage')}")
    console.print(f"  by {job['created_by']} at {_when(job['created_at'])}; serving {job.get('current_version')}"
                  f" → candidate {job.get('version') or '-'}")
    if job.get("error"):
        console.print(f"  [red]error:[/] {job['error']}")
    latest = (job.get("metrics") or {}).get("latest") or {}
    if latest:
        shown = {k: v for k, v in latest.items() if k in ("run", "step", "loss", "rewards/margins", "kl", "reward")}
        console.print(f"  latest metrics: {shown}")
    gate = job.get("gate") or {}
    if gate.get("checks"):
        from rich.table import Table

        table = Table("check", "status", "value", "threshold")
        for c in gate["checks"]:
            value = "-" if c.get("value") is None else f"{c['value']:.4g}"
            table.add_row(c["name"], c["status"], value, "" if c.get("threshold") is None else str(c["threshold"]))
        console.print(f"  gate: {'[green]PASS' if gate.get('passed') else '[red]REJECT'}[/]")
        console.print(table)
    elif gate:
        console.print(f"  gate: {gate.get('summary')}")
    if job.get("promotion"):
        console.print(f"  promotion: {job['promotion']}")
    for line in (job.get("log_tail") or [])[-log_lines:] if log_lines else []:
        console.print(line, markup=False, highlight=False)


def wait_for(api: ApiClient, job_id: str, as_json: bool) -> dict[str, Any]:
    """Poll until the job ends (and its promotion is recorded); a status line on stderr."""
    from rich.console import Console

    console = Console(stderr=True)
    last = None
    with console.status("waiting") as status:
        while True:
            job = call(api.get, f"/v1/admin/alignment/jobs/{job_id}", params={"log_lines": 0})
            latest = (job.get("metrics") or {}).get("latest") or {}
            line = f"{job['status']} · {job.get('stage')} · step {latest.get('step', '-')} loss {latest.get('loss', '-')}"
            if line != last and not as_json:
                status.update(line)
                last = line
            if job["status"] in ("failed", "cancelled") or (job["status"] == "succeeded" and job.get("promotion")):
                return job
            time.sleep(2)


@align_app.command("run")
def run(method: str = typer.Option(None, "--method", help="dpo (default), kto, rlhf or sft."),
        max_steps: int = typer.Option(None, "--max-steps", help="Optimizer steps."),
        epochs: float = typer.Option(None, "--epochs", help="Passes over the data (when --max-steps is unset)."),
        learning_rate: float = typer.Option(None, "--lr", help="Learning rate."),
        beta: float = typer.Option(None, "--beta", help="KL strength (DPO/KTO beta, RLHF KL coefficient)."),
        batch_size: int = typer.Option(None, "--batch-size", help="Examples per step."),
        since: str = typer.Option(None, "--since", help="Data window start (ISO 8601 or Unix seconds)."),
        until: str = typer.Option(None, "--until", help="Data window end."),
        days: float = typer.Option(None, "--days", help="Data window: the last N days."),
        min_pairs: int = typer.Option(None, "--min-pairs", help="Fewest training pairs (DPO, reward model)."),
        min_examples: int = typer.Option(None, "--min-examples", help="Fewest thumbs (KTO)."),
        max_per_user: int = typer.Option(None, "--max-per-user", help="Cap per end user."),
        heldout_fraction: float = typer.Option(None, "--heldout-fraction", help="Share of prompts held out."),
        revisions: bool = typer.Option(None, "--revisions/--no-revisions",
                                       help="Pair thumbs-down answers with their constitutional revisions."),
        constitution_limit: int = typer.Option(None, "--constitution", help="Add N AdvBench-train red-team pairs."),
        promote: bool = typer.Option(None, "--promote/--no-promote", help="Hot-swap in if the gate passes."),
        spec_file: Path = SpecOpt, sets: list[str] = SetOpt,
        wait: bool = typer.Option(False, "--wait", help="Wait for the gate decision (and promotion)."),
        url: str = UrlOpt, key: str = KeyOpt, as_json: bool = JsonOpt) -> None:
    """Start an alignment round on the server."""
    spec = build_spec(spec_file, sets, method=method, max_steps=max_steps, epochs=epochs,
                      learning_rate=learning_rate, beta=beta, batch_size=batch_size, since=since, until=until,
                      days=days, min_pairs=min_pairs, min_examples=min_examples, max_per_user=max_per_user,
                      heldout_fraction=heldout_fraction, revisions=revisions, constitution_limit=constitution_limit,
                      promote=promote)
    api = client(url, key)
    job = call(api.post, "/v1/admin/alignment/jobs", spec)
    if wait:
        job = wait_for(api, job["id"], as_json)
    if as_json:
        emit(job)
    else:
        _print_job(job)
    if wait and (job["status"] != "succeeded" or not (job.get("gate") or {}).get("passed")):
        raise typer.Exit(1)


@align_app.command("jobs")
def jobs(status: str = typer.Option(None, "--status", help="Only jobs with this status."),
         limit: int = typer.Option(20, "--limit", help="Most jobs shown."),
         url: str = UrlOpt, key: str = KeyOpt, as_json: bool = JsonOpt) -> None:
    """List alignment jobs, newest first."""
    params: dict[str, Any] = {"limit": limit, **({"status": status} if status else {})}
    data = call(client(url, key).get, "/v1/admin/alignment/jobs", params=params)["data"]
    if as_json:
        emit(data)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "method", "status", "stage", "candidate", "gate", "promotion", "created")
    for j in data:
        gate = j.get("gate") or {}
        table.add_row(j["id"], j["method"], j["status"], j.get("stage") or "", j.get("version") or "",
                      "" if not gate else ("pass" if gate.get("passed") else "reject"),
                      (j.get("promotion") or {}).get("status", ""), _when(j["created_at"]))
    Console().print(table)


@align_app.command("status")
def status(job_id: str = typer.Argument(..., help="The job id."),
           log: int = typer.Option(20, "--log", help="Lines of the job log to show (0 = none)."),
           url: str = UrlOpt, key: str = KeyOpt, as_json: bool = JsonOpt) -> None:
    """One job: stage, metrics, gate decision, promotion, log tail."""
    job = call(client(url, key).get, f"/v1/admin/alignment/jobs/{job_id}", params={"log_lines": max(log, 0)})
    if as_json:
        emit(job)
    else:
        _print_job(job, log)


@align_app.command("cancel")
def cancel(job_id: str = typer.Argument(..., help="The job id."), url: str = UrlOpt, key: str = KeyOpt,
           as_json: bool = JsonOpt) -> None:
    """Cancel a queued or running job (serving is untouched)."""
    job = call(client(url, key).post, f"/v1/admin/alignment/jobs/{job_id}/cancel")
    if as_json:
        emit(job)
    else:
        typer.echo(f"{job['id']}: {job['status']}")


@align_app.command("models")
def models(url: str = UrlOpt, key: str = KeyOpt, as_json: bool = JsonOpt) -> None:
    """Registered versions, which one serves, and the deployment history."""
    data = call(client(url, key).get, "/v1/admin/models")
    if as_json:
        emit(data)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("version", "method", "gate", "active", "loaded", "created", "data")
    for m in data["data"]:
        gate = m.get("gate") or {}
        table.add_row(m["version"], m.get("method") or "base", "" if not gate else
                      ("pass" if gate.get("passed") else "reject"), "*" if m["active"] else "",
                      "yes" if m["loaded"] else "", _when(m.get("created_at")),
                      "" if m.get("is_base") else f"{(m.get('data') or {}).get('pairs')} pairs")
    Console().print(table)


@align_app.command("promote")
def promote(version: str = typer.Argument(..., help="A registered version, e.g. v3-dpo."),
            force: bool = typer.Option(False, "--force", help="Promote even if the gate rejected it (audited)."),
            url: str = UrlOpt, key: str = KeyOpt, as_json: bool = JsonOpt) -> None:
    """Hot-swap the served model to VERSION."""
    result = call(client(url, key).post, f"/v1/admin/models/{version}/promote", {"force": force})
    if as_json:
        emit(result)
    else:
        typer.echo(f"serving {result['active']} (was {result['previous']})")


@align_app.command("rollback")
def rollback(version: str = typer.Argument(None, help="The version to return to (default: the previous)."),
             url: str = UrlOpt, key: str = KeyOpt, as_json: bool = JsonOpt) -> None:
    """Return the served model to an earlier version."""
    result = call(client(url, key).post, "/v1/admin/models/rollback", {"version": version})
    if as_json:
        emit(result)
    else:
        typer.echo(f"serving {result['active']} (was {result['previous']})")


@align_app.command("selectable")
def selectable(version: str = typer.Argument(..., help="A version, e.g. v3-dpo, or the base model."),
               off: bool = typer.Option(False, "--off", help="Stop app keys from selecting it."),
               url: str = UrlOpt, key: str = KeyOpt, as_json: bool = JsonOpt) -> None:
    """Let app keys ask for VERSION by name (they always get the active one), or stop them (audited)."""
    result = call(client(url, key).post, f"/v1/admin/models/{version}/selectable", {"selectable": not off})
    if as_json:
        emit(result)
    else:
        typer.echo(f"{version}: {'selectable' if result['selectable'] else 'not selectable'} by app keys")
