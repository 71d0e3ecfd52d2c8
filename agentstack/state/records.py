"""Rows that keep replicas in step, in the main database: the served model version, the
deployment history, the replicas' heartbeats, and leases (named locks that expire).

* :class:`ModelState`: ``model_state`` holds, per served alias, the active and previous version, a
  version every replica should preload, and a generation that grows with every change.
* :class:`Deployments`: every promotion and rollback, appended (was ``registry/deployments.jsonl``).
* :class:`Replicas`: one row per running API process, its heartbeat, what it serves and has loaded.
  A replica whose heartbeat is older than ``state.replica_timeout_s`` counts as dead.
* :class:`Lease`: a named lock held until released or until its holder stops renewing it, so a
  dead holder's work is taken over (the job monitor; promotions).

Each write is one short transaction, the same on SQLite and PostgreSQL. This module knows
nothing about engines or HTTP.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from agentstack.storage.database import Database
from agentstack.storage.schema import deployments, leases, model_state, replicas


@dataclass(frozen=True)
class Served:
    active: str | None
    previous: str | None
    preload: str | None
    generation: int


class ModelState:
    def __init__(self, db: Database, alias: str):
        self.db = db
        self.alias = alias

    def get(self) -> Served:
        rows = self.db.query(model_state.select().where(model_state.c.alias == self.alias))
        if not rows:
            return Served(None, None, None, 0)
        r = rows[0]
        return Served(r["active"], r["previous"], r["preload"], int(r["generation"]))

    def _upsert(self, conn: sa.Connection, **values: Any) -> None:
        values["updated_at"] = time.time()
        changed = conn.execute(model_state.update().where(model_state.c.alias == self.alias).values(
            generation=model_state.c.generation + 1, **values)).rowcount
        if not changed:
            conn.execute(model_state.insert().values(alias=self.alias, generation=1, **values))

    def set_active(self, active: str, previous: str | None, conn: sa.Connection | None = None) -> None:
        """Point the alias at ``active`` (and clear any preload), in ``conn``'s transaction or its own."""
        if conn is not None:
            self._upsert(conn, active=active, previous=previous, preload=None)
            return
        with self.db.tx() as own:
            self._upsert(own, active=active, previous=previous, preload=None)

    def set_preload(self, version: str | None) -> None:
        with self.db.tx() as conn:
            self._upsert(conn, preload=version)


class Deployments:
    def __init__(self, db: Database):
        self.db = db

    def record(self, entry: dict[str, Any], conn: sa.Connection | None = None) -> None:
        from agentstack.db import deployment_row

        row = deployment_row({"at": time.time(), **entry})
        if conn is not None:
            conn.execute(deployments.insert().values(**row))
            return
        with self.db.tx() as own:
            own.execute(deployments.insert().values(**row))

    def list(self, limit: int | None = None) -> list[dict[str, Any]]:
        stmt = deployments.select().order_by(deployments.c.at, deployments.c.id)
        out = []
        for r in self.db.query(stmt):
            item = {k: r[k] for k in ("at", "action", "version", "previous", "key_id")}
            item.update(json.loads(r["detail_json"]) if r["detail_json"] else {})
            out.append(item)
        return out[-limit:] if limit else out


def new_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


class Replicas:
    def __init__(self, db: Database, replica_id: str, timeout_s: float):
        self.db = db
        self.id = replica_id
        self.timeout_s = timeout_s
        self.started_at = time.time()

    def beat(self, *, active: str | None, loaded: list[str]) -> None:
        values = {"heartbeat_at": time.time(), "active": active, "loaded_json": json.dumps(sorted(loaded))}
        with self.db.tx() as conn:
            if not conn.execute(replicas.update().where(replicas.c.id == self.id).values(**values)).rowcount:
                conn.execute(replicas.insert().values(id=self.id, host=socket.gethostname(), pid=os.getpid(),
                                                      started_at=self.started_at, **values))

    def live(self) -> list[dict[str, Any]]:
        cutoff = time.time() - self.timeout_s
        rows = self.db.query(replicas.select().where(replicas.c.heartbeat_at >= cutoff).order_by(replicas.c.id))
        return [{**dict(r), "loaded": json.loads(r["loaded_json"] or "[]")} for r in rows]

    def remove(self) -> None:
        self.db.execute(replicas.delete().where(replicas.c.id == self.id))

    def forget_dead(self, older_than_s: float = 3600.0) -> int:
        return self.db.execute(replicas.delete().where(replicas.c.heartbeat_at < time.time() - older_than_s))


class Lease:
    """A named lock in the database: :meth:`acquire` takes it if free, expired or already ours (and
    renews it); it lapses ``ttl_s`` after its holder last renewed it."""

    def __init__(self, db: Database, name: str, holder: str, ttl_s: float):
        self.db = db
        self.name = name
        self.holder = holder
        self.ttl_s = ttl_s

    def acquire(self) -> bool:
        now = time.time()
        with self.db.tx() as conn:
            taken = conn.execute(leases.update().where(
                leases.c.name == self.name, sa.or_(leases.c.holder == self.holder, leases.c.expires_at < now),
            ).values(holder=self.holder, expires_at=now + self.ttl_s,
                     acquired_at=sa.case((leases.c.holder == self.holder, leases.c.acquired_at), else_=now))).rowcount
            if taken:
                return True
            if conn.execute(sa.select(leases.c.name).where(leases.c.name == self.name)).first() is not None:
                return False
        try:
            with self.db.tx() as conn:
                conn.execute(leases.insert().values(name=self.name, holder=self.holder, expires_at=now + self.ttl_s,
                                                    acquired_at=now))
            return True
        except sa.exc.IntegrityError:  # another replica inserted it first
            return False

    def take_over(self, dead_holder: str) -> bool:
        """Take the lease from ``dead_holder`` (a replica known to be dead) before it lapses."""
        now = time.time()
        return self.db.execute(leases.update().where(leases.c.name == self.name, leases.c.holder == dead_holder)
                               .values(holder=self.holder, expires_at=now + self.ttl_s, acquired_at=now)) > 0

    def release(self) -> None:
        self.db.execute(leases.delete().where(leases.c.name == self.name, leases.c.holder == self.holder))

    def holder_now(self) -> str | None:
        rows = self.db.query(sa.select(leases.c.holder).where(leases.c.name == self.name,
                                                              leases.c.expires_at >= time.time()))
        return rows[0]["holder"] if rows else None
