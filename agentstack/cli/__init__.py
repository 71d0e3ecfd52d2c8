"""The ``agentstack`` command. Each command group lives in its own module and is thin: parse,
call the library, print (rich for people, ``--json`` for scripts), exit with a meaningful code."""

from __future__ import annotations

from agentstack.cli.app import app, main

__all__ = ["app", "main"]
