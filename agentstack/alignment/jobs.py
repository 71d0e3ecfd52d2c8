"""Alignment jobs as rows of the ``alignment_jobs`` table (migration in ``agentstack/db.py``).

The server creates a row (``queued``) and starts a worker process; the worker moves it through its
stages and writes metrics, the candidate version and the gate decision; the server's monitor marks
it ``failed`` if the worker dies without finishing, and records the promotion. Both sides only
read and write rows here, so the API needs no in-memory state and survives restarts.

Status: ``queued`` → ``running`` → ``succeeded`` | ``failed`` | ``cancelled`` (``cancelling``
while a cancel is in progress). A job that ran to the end is ``succeeded`` whether or not the gate
passed its candidate: see ``gate.passed``. Stage (while running): ``preparing_data``, ``revising``,
``training_reward_model``, ``training``, ``registering``, ``gating``, ``done``.

This module knows nothing about processes or HTTP.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from agentstack.errors import ConflictError, NotFoundError
from agentstack.history.store import new_id
from agentstack.storage.database import Database
from agentstack.storage.schema import alignment_jobs as J

ACTIVE = ("queued", "running", "cancelling")
TERMINAL = ("succeeded", "failed", "cancelled")
STATUSES = ACTIVE + TERMINAL
STAGES = ("queued", "preparing_data", "revising", "training_reward_model", "training", "registering", "gating",
          "done")
_JSON = ("spec", "data", "metrics", "gate", "promotion")


@dataclass
class Job:
    id: str
    method: str
    status: str
    spec: dict[str, Any]
    created_by: str
    created_at: float
    updated_at: float
    stage: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    pid: int | None = None
    current_version: str | None = None
    version: str | None = None
    error: str | None = None
    data: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None
    promotion: dict[str, Any] | None = None
    lane: str = "alignment"
    host: str | None = None
    replica_id: str | None = None
    heartbeat_at: float | None = None
    log_tail: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def public(self, *, detail: bool = False) -> dict[str, Any]:
        out = {"id": self.id, "method": self.method, "status": self.status, "stage": self.stage,
               "created_by": self.created_by, "created_at": self.created_at, "updated_at": self.updated_at,
               "started_at": self.started_at, "finished_at": self.finished_at, "current_version": self.current_version,
               "version": self.version, "error": self.error, "promotion": self.promotion,
               "gate": _gate_summary(self.gate), "metrics": {"latest": (self.metrics or {}).get("latest")}}
        if detail:
            out.update({"spec": self.spec, "data": self.data, "metrics": self.metrics or {}, "gate": self.gate,
                        "pid": self.pid, "host": self.host, "replica_id": self.replica_id,
                        "heartbeat_at": self.heartbeat_at, "log_tail": self.log_tail})
        return out


def _gate_summary(gate: dict[str, Any] | None) -> dict[str, Any] | None:
    if not gate:
        return None
    return {"passed": gate.get("passed"), "summary": gate.get("summary"), "at": gate.get("at")}


def jobs_dir(settings: Any) -> Path:
    """Where job directories (settings, log, data) live: under the data directory of the replica
    that started the job."""
    return settings.data_dir / "alignment" / "jobs"


class JobStore:
    def __init__(self, db: Database, jobs_dir: Path):
        self.db = db
        self.jobs_dir = Path(jobs_dir)

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def log_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "log.txt"

    def create(self, *, method: str, spec: dict[str, Any], created_by: str, **fields: Any) -> Job:
        """A new ``queued`` job; :class:`ConflictError` while another job is active (any replica)."""
        job_id = new_id("job")
        now = time.time()
        try:
            with self.db.tx() as conn:
                conn.execute(J.insert().values(id=job_id, method=method, status="queued", stage="queued",
                                               spec_json=json.dumps(spec, default=str), created_by=created_by,
                                               created_at=now, updated_at=now, **fields))
        except sa.exc.IntegrityError:
            running = self.active()
            other = running[0] if running else None
            raise ConflictError(f"alignment job {other.id if other else '?'} is {other.status if other else 'active'}"
                                "; one job runs at a time",
                                fix=f"wait for it, or cancel it: POST /v1/admin/alignment/jobs/"
                                    f"{other.id if other else '<id>'}/cancel") from None
        self.job_dir(job_id).mkdir(parents=True, exist_ok=True)
        return self.get(job_id)

    def update(self, job_id: str, *, only_if_active: bool = False, **fields: Any) -> bool:
        """Set columns (``spec``/``data``/``metrics``/``gate``/``promotion`` as JSON). With
        ``only_if_active`` nothing changes once the job has reached a terminal status; returns
        whether a row changed."""
        if not fields:
            return False
        values: dict[str, Any] = {}
        for key, value in fields.items():
            column = f"{key}_json" if key in _JSON else key
            values[column] = json.dumps(value, default=str) if key in _JSON and value is not None else value
        values["updated_at"] = time.time()
        stmt = J.update().where(J.c.id == job_id).values(**values)
        if only_if_active:
            stmt = stmt.where(J.c.status.in_(ACTIVE))
        with self.db.tx() as conn:
            return conn.execute(stmt).rowcount > 0

    def beat(self, job_id: str) -> str | None:
        """The worker's heartbeat: stamp ``heartbeat_at`` and return the job's status (so the worker
        sees a cancel asked through any replica); None when the row is gone."""
        now = time.time()
        with self.db.tx() as conn:
            conn.execute(J.update().where(J.c.id == job_id, J.c.status.in_(ACTIVE)).values(heartbeat_at=now))
            return conn.execute(sa.select(J.c.status).where(J.c.id == job_id)).scalar()

    def get(self, job_id: str, *, log_lines: int = 0) -> Job:
        rows = self.db.query(J.select().where(J.c.id == job_id))
        if not rows:
            raise NotFoundError(f"alignment job {job_id!r} not found", param="job_id",
                                fix="list jobs with GET /v1/admin/alignment/jobs or `agentstack align jobs`")
        job = self._from_row(rows[0])
        if log_lines:
            job.log_tail = self.tail(job_id, log_lines)
        return job

    def list(self, *, status: str | None = None, limit: int = 50, offset: int = 0) -> list[Job]:
        stmt = J.select().order_by(J.c.created_at.desc()).limit(limit).offset(offset)
        if status:
            stmt = stmt.where(J.c.status == status)
        return [self._from_row(r) for r in self.db.query(stmt)]

    def active(self) -> list[Job]:
        return [self._from_row(r) for r in self.db.query(J.select().where(J.c.status.in_(ACTIVE))
                                                         .order_by(J.c.created_at))]

    def pending_promotions(self) -> list[Job]:
        rows = self.db.query(J.select().where(J.c.status == "succeeded", J.c.promotion_json.is_(None),
                                              J.c.version.is_not(None)).order_by(J.c.finished_at))
        return [self._from_row(r) for r in rows]

    def tail(self, job_id: str, lines: int = 100) -> list[str]:
        path = self.log_path(job_id)
        if not path.is_file():
            return []
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 200 * lines))
            text = f.read().decode("utf-8", errors="replace")
        return text.splitlines()[-lines:]

    @staticmethod
    def _from_row(row: Any) -> Job:
        data = dict(row)
        for key in _JSON:
            raw = data.pop(f"{key}_json")
            data[key] = json.loads(raw) if raw else None
        data["spec"] = data["spec"] or {}
        return Job(**data)
