"""The root Typer app; command groups register themselves here."""

from __future__ import annotations

import typer

app = typer.Typer(name="agentstack", help="Retrieval-augmented chat that learns from thumbs.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def main() -> None:
    from agentstack.cli import commands  # noqa: F401  (registers the command groups)

    app()
