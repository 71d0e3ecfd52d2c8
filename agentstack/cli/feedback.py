"""`agentstack feedback stats | export`.

Thin: calls a running server (``GET /v1/feedback/stats``, ``GET /v1/admin/feedback/export``) with the
configured key; an operator key sees every app's votes and may export. The export is JSONL, every
text PII-scrubbed by the server and users pseudonymised. Exit codes: 0 ok, 1 the server could not
do it, 2 usage error.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from agentstack.cli.align import JsonOpt, KeyOpt, UrlOpt, call, client, emit
from agentstack.cli.app import app
from agentstack.cli.client import ApiError, fail

OutputOpt = typer.Option(None, "--output", "-o", help="JSONL file to write (default: stdout).")
feedback_app = typer.Typer(name="feedback", help="Thumbs feedback: statistics and export.", no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")


@feedback_app.command("stats")
def stats(since: str = typer.Option(None, "--since", help="Votes cast from (ISO 8601 or Unix seconds)."),
          until: str = typer.Option(None, "--until", help="Votes cast before."),
          bucket: str = typer.Option("day", "--bucket", help="Time bucket: hour, day or week."),
          key_id: str = typer.Option(None, "--key-id", help="Operators: one app key only."),
          url: str = UrlOpt, key: str = KeyOpt, as_json: bool = JsonOpt) -> None:
    """Votes and up-ratio per model version, overall and over time."""
    params: dict[str, Any] = {k: v for k, v in {"since": since, "until": until, "bucket": bucket,
                                                "key_id": key_id}.items() if v is not None}
    data = call(client(url, key).get, "/v1/feedback/stats", params=params)
    if as_json:
        emit(data)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    total = data["total"]
    console.print(f"{total['total']} votes: {total['up']} up, {total['down']} down (up ratio {total['up_ratio']})")
    table = Table("model version", "up", "down", "up ratio", "corrections")
    for v in data["versions"]:
        table.add_row(v["model_version"], str(v["up"]), str(v["down"]), str(v["up_ratio"]), str(v["corrections"]))
    console.print(table)
    series = Table(data["bucket"], "model version", "up", "down", "up ratio")
    for row in data["series"][-30:]:
        series.add_row(row["period"], row["model_version"], str(row["up"]), str(row["down"]), str(row["up_ratio"]))
    console.print(series)


@feedback_app.command("export")
def export(output: Path = OutputOpt,
           since: str = typer.Option(None, "--since", help="Votes cast from (ISO 8601 or Unix seconds)."),
           until: str = typer.Option(None, "--until", help="Votes cast before."),
           model_version: str = typer.Option(None, "--model-version", help="Only votes on this version."),
           url: str = UrlOpt, key: str = KeyOpt) -> None:
    """Write every vote with its prompt and answer as PII-scrubbed JSONL."""
    params = {k: v for k, v in {"since": since, "until": until, "model_version": model_version}.items()
              if v is not None}
    api = client(url, key)
    try:
        response = api._send("GET", "/v1/admin/feedback/export", params=params)
    except ApiError as exc:
        raise fail(exc.args[0], 2 if exc.status in (400, 404, 422) else 1) from None
    text = response.text
    if output is None:
        sys.stdout.write(text)
        return
    from agentstack.storage.files import atomic_write_text

    atomic_write_text(output, text)
    typer.echo(f"wrote {text.count(chr(10))} records to {output}", err=True)


