"""`agentstack serve`."""

from __future__ import annotations

import typer

from agentstack.cli.app import app


@app.command()
def serve(host: str = typer.Option(None, help="Address to bind (default: settings, 127.0.0.1)."),
          port: int = typer.Option(None, help="Port to bind (default: settings, 8000).")) -> None:
    """Serve the OpenAI-compatible API on the configured engine."""
    raise typer.Exit(0)
