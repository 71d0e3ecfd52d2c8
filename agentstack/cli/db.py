"""`agentstack db migrate | status`: the main database's schema.

``migrate`` applies the pending Alembic migrations once (under a lock: a PostgreSQL advisory lock
or a file lock beside the SQLite file), carries file state of earlier releases into the database
(``registry/active.json``, ``deployments.jsonl``, eval report metadata) and prints what it did.
Run it before starting replicas of a new release: a replica on an older schema refuses to start
and names this command. ``migrate --from sqlite:///old/agentstack.db`` also copies every row of an
existing SQLite deployment into the (empty) database that ``database.url`` names: the way from one
machine to PostgreSQL (docs/scaling.md). ``status`` prints the revision the database is at and the one this
agentstack needs. Exit codes: 0 ok (status: current), 1 failure (status: not current).
"""

from __future__ import annotations

import json

import typer

from agentstack.cli.app import app
from agentstack.cli.client import fail

db_app = typer.Typer(name="db", help="The main database: migrations and schema status.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _settings():
    from agentstack.config import load_settings

    return load_settings()


@db_app.command("migrate")
def migrate(source: str = typer.Option(None, "--from", help="Also copy every row from this database (e.g. "
                                        "sqlite:////data/agentstack.db) into the empty one database.url names."),
            as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Apply pending migrations and carry file state over (safe to run again, and from several machines)."""
    from agentstack.db import LEGACY_MIGRATIONS, import_file_state
    from agentstack.errors import AgentstackError
    from agentstack.storage import migrate as migrations
    from agentstack.storage.database import Database, redact

    settings = _settings()
    db = Database(settings.database_url, pool_size=1)
    try:
        result = migrations.upgrade(db, legacy=LEGACY_MIGRATIONS)
        if source:
            from agentstack.storage.copy import copy_rows

            src = Database(source, pool_size=1)
            try:
                result["source"] = {"database": redact(source),
                                    "migrated": migrations.upgrade(src, legacy=LEGACY_MIGRATIONS)["to"]}
                result["copied"] = copy_rows(src, db)
            finally:
                src.close()
        result["imported"] = import_file_state(db, settings)
    except AgentstackError as exc:
        raise fail(f"{exc.message} ({exc.fix})" if exc.fix else exc.message) from None
    finally:
        db.close()
    result["database"] = redact(settings.database_url)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    moved = result["from"] != result["to"]
    typer.echo(f"{result['database']}: {'migrated ' + str(result['from']) + ' -> ' if moved else 'already at '}"
               f"{result['to']}")
    if "copied" in result:
        from agentstack.storage.copy import describe

        typer.echo(f"copied from {result['source']['database']}: {describe(result['copied'])}")
    for what, count in result["imported"].items():
        typer.echo(f"carried over from files: {what} = {count}")


@db_app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """The schema revision of the database and the one this agentstack needs."""
    from agentstack.storage import migrate as migrations
    from agentstack.storage.database import Database, redact

    settings = _settings()
    db = Database(settings.database_url, pool_size=1)
    try:
        have, want = migrations.current(db), migrations.head()
    finally:
        db.close()
    data = {"database": redact(settings.database_url), "current": have, "head": want, "up_to_date": have == want}
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        typer.echo(f"{data['database']}: at {have or '(no schema)'}, this agentstack needs {want}"
                   + ("" if have == want else f"; run `{migrations.MIGRATE_COMMAND}`"))
    if have != want:
        raise typer.Exit(1)
