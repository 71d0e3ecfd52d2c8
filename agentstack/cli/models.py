"""`agentstack models`: list a running server's models; `agentstack models quantize`: requantise the
served GGUF and run the gate's quality checks on it."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from agentstack.cli.app import app

models_app = typer.Typer(help="The served models, and model files for the llamacpp engine.",
                         invoke_without_command=True)
app.add_typer(models_app, name="models")


@models_app.callback()
def models(ctx: typer.Context, url: str = typer.Option(None, help="Server URL."),
           key: str = typer.Option(None, help="API key."),
           as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List the models a running server offers (the alias first, then each loaded version)."""
    if ctx.invoked_subcommand is not None:
        return
    from agentstack.cli.client import ApiClient, ApiError, fail
    from agentstack.cli.serve import _settings

    client = ApiClient(_settings(), url, key)
    try:
        data = client.get("/v1/models")["data"]
    except ApiError as exc:
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("model", "parent", "context", "note")
    for card in data:
        note = f"→ {card['active_version']}" if card.get("active_version") else ""
        table.add_row(card["id"], card.get("parent") or "", str(card.get("max_model_len") or ""), note)
    Console().print(table)


@models_app.command("quantize")
def quantize(fmt: str = typer.Argument(..., help="Target format: F32, F16, BF16, Q8_0, Q5_1, Q5_0, Q4_1 or Q4_0."),
             out: Path = typer.Option(None, "--out", help="Output .gguf; default: beside the model cache."),
             limit: int = typer.Option(None, "--limit", help="Use only the first N prompts of each check set."),
             skip_checks: bool = typer.Option(False, "--skip-checks", help="Write the file without the checks "
                                              "(it is then marked unchecked and should not be served)."),
             as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Requantise the configured model (engine.model, or the shipped SmolLM2) to FORMAT, then run the
    evaluation gate's quality checks against it. Exit code 1 when a check fails."""
    from agentstack.config import load_settings
    from agentstack.engines.llamacpp.model_file import resolve_gguf
    from agentstack.engines.llamacpp.quality import check
    from agentstack.engines.llamacpp.quantize import cached, requantize

    settings = load_settings()
    source, _ = resolve_gguf(settings.engine.model)
    if out is None:
        target = cached(source, fmt, settings.model_cache)
    else:
        requantize(source, out, fmt)
        target = out
    record = json.loads(target.with_name(target.name + ".json").read_text()) if target != source else {}
    result = {"file": str(target), "format": fmt.upper(), "bytes": target.stat().st_size, "source": str(source)}
    if not skip_checks:
        result["quality"] = check(settings, source, target, limit=limit)
        record["quality"] = result["quality"]
        if target != source:
            target.with_name(target.name + ".json").write_text(json.dumps(record, indent=2))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo(f"wrote {target} ({result['bytes'] / 1e6:.1f} MB, {result['format']})")
        for c in result.get("quality", {}).get("checks", []):
            typer.echo(f"  {c['name']:11} {c['status']:7} {c.get('value', '')!s:.6} threshold {c.get('threshold', '-')}")
        if "quality" in result:
            verdict = "passed" if result["quality"]["passed"] else "FAILED"
            typer.echo(f"quality checks {verdict}; serve it with AGENTSTACK_ENGINE__MODEL={target}")
    if "quality" in result and not result["quality"]["passed"]:
        raise typer.Exit(1)
