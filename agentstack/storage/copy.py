"""Copying every row of one main database into another: how an existing SQLite deployment moves to
PostgreSQL (``agentstack db migrate --from sqlite:///.../agentstack.db``).

Both databases are first brought to the newest schema; the target must hold no conversations,
responses, feedback, audit entries or jobs (nothing is merged or overwritten). What an earlier
``agentstack db migrate`` carried into it from files (served version, deployments, eval report
metadata) is replaced by the source's. Rows are copied table by table in foreign-key order, in batches, inside
one transaction on the target, so a failed copy leaves the target empty; the source is only read.
Serial ids keep their values and the target's sequences are moved past them. Runtime rows (replica
heartbeats, leases) are not copied.

This module knows nothing about what the tables mean.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from agentstack.errors import ConflictError
from agentstack.storage import schema
from agentstack.storage.database import Database, redact

TABLES = (schema.conversations, schema.responses, schema.feedback, schema.audit_log, schema.alignment_jobs,
          schema.model_state, schema.deployments, schema.eval_reports, schema.state_imports)
SERIAL = {"audit_log": "id", "deployments": "id"}
DATA = (schema.conversations, schema.responses, schema.feedback, schema.audit_log, schema.alignment_jobs)
BATCH = 1000


def copy_rows(source: Database, target: Database) -> dict[str, int]:
    """Copy every row of :data:`TABLES` from ``source`` into the empty ``target``; returns counts."""
    with target.read() as conn:
        filled = [t.name for t in DATA if conn.execute(sa.select(sa.func.count()).select_from(t)).scalar()]
    if filled:
        raise ConflictError(f"the target database {redact(target.url)} already holds rows in {filled}",
                            fix="copy into a new, empty database (after `agentstack db migrate` created its schema)")
    counts: dict[str, int] = {}
    with target.tx() as out, source.read() as src:
        for table in reversed(TABLES):
            out.execute(table.delete())
        for table in TABLES:
            n = 0
            result = src.execution_options(yield_per=BATCH).execute(table.select())
            for rows in result.mappings().partitions(BATCH):
                out.execute(table.insert(), [dict(r) for r in rows])
                n += len(rows)
            counts[table.name] = n
        if target.is_postgres:
            for name, column in SERIAL.items():
                out.execute(sa.text(f"SELECT setval(pg_get_serial_sequence('{name}', '{column}'), "
                                    f"coalesce((SELECT max({column}) FROM {name}), 0) + 1, false)"))
    return counts


def describe(counts: dict[str, Any]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items() if n) or "no rows"
