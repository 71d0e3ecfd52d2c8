"""The server's side of alignment jobs: submit, list, cancel, and a monitor that notices ended or
lost workers and promotes passed candidates.

``submit`` validates the spec against the settings, refuses a second concurrent job (409) and a
round with too little data (a quick count without scrubbing; the worker checks again after the
guards), writes the job's settings and starts ``python -m agentstack.alignment.worker`` in a new
session with the worker's thread limit. Training never runs in the server process.

The monitor (an asyncio task in the server's loop, every ``alignment.poll_s``) runs on one replica
at a time: the one holding the ``monitor`` lease in the database, renewed every pass; when that
replica dies its lease lapses and another takes over. It also runs the auto-promotion and the
retention purge, so neither happens twice. Each pass:

* a worker that exited while its job was still active (a child of this replica, or a pid on this
  host that is gone), or whose heartbeat row is older than ``alignment.worker_timeout_s`` (any
  host) → the job is ``failed`` ("worker exited with signal 9", "worker lost"), or ``cancelled``
  if a cancel was pending; its log stays in the job directory;
* a cancel not honoured within ``alignment.cancel_grace_s`` → SIGKILL to the worker's group (when
  the worker runs on this host; elsewhere the worker kills itself, see ``worker.py``);
* a ``succeeded`` job whose candidate passed the gate and that asked to be promoted → promoted
  through the :class:`~agentstack.alignment.deploy.Deployer` (audited as the job's submitter).

Cancel works from any replica: it sets ``cancelling`` in the row, which the worker reads with its
heartbeat and stops; the local SIGTERM is a shortcut when the worker runs here.

A worker outlives the replica that started it (it runs in its own session and talks only to the
database and the registry): the replica that holds the monitor lease adopts it by its heartbeat,
and promotes its candidate when it passes, exactly as its starter would have.

This module knows nothing about HTTP; routes call it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agentstack import background
from agentstack.alignment.jobs import Job, JobStore, jobs_dir
from agentstack.alignment.spec import JobSpec
from agentstack.audit import AuditLog
from agentstack.config import Settings
from agentstack.errors import ConflictError, InvalidRequestError
from agentstack.state.records import Lease, new_replica_id
from agentstack.storage.database import Database

log = logging.getLogger(__name__)


def _alive(pid: int | None, job_id: str) -> bool:
    """Is ``pid`` still our worker for ``job_id`` (not a recycled pid)?"""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return "agentstack.alignment.worker" in cmdline and job_id in cmdline


# The secrets a worker uses, passed in its environment by name (see ``_spawn``).
WORKER_SECRETS = {"AGENTSTACK_PRIVACY__HASH_SALT": ("privacy", "hash_salt"),
                  "AGENTSTACK_ENGINE__API_KEY": ("engine", "api_key"),
                  "AGENTSTACK_DATABASE__URL": ("database", "url")}


def worker_settings(settings: Settings) -> dict[str, Any]:
    """The settings a worker needs, written to its job directory (mode 0600). No secret is in
    it: those a worker uses travel in its environment (``WORKER_SECRETS``), and every other
    secret setting is set to none, so that a worker does not read it from a config file either."""
    from agentstack.child_env import secret_setting_vars
    from agentstack.config import ENV_PREFIX

    data = settings.model_dump(mode="json")
    for env in secret_setting_vars():
        *parents, leaf = env[len(ENV_PREFIX):].lower().split("__")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        if env in WORKER_SECRETS:
            node.pop(leaf, None)  # the environment supplies it
        else:
            node[leaf] = [] if isinstance(node.get(leaf), list) else None
    return data


class JobManager:
    def __init__(self, settings: Settings, db: Database, audit: AuditLog, deployer: Any = None,
                 replica_id: str | None = None):
        self.settings = settings
        self.db = db
        self.audit = audit
        self.deployer = deployer
        self.replica_id = replica_id or new_replica_id()
        self.host = socket.gethostname()
        self.jobs = JobStore(db, jobs_dir(settings))
        self.lease = Lease(db, "monitor", self.replica_id,
                           max(settings.state.replica_timeout_s, 3 * settings.alignment.poll_s))
        self._procs: dict[str, subprocess.Popen] = {}
        self._cancel_at: dict[str, float] = {}
        self._task: asyncio.Task | None = None
        self._last_purge = 0.0

    # -- submit / cancel --------------------------------------------------------------------------
    def submit(self, spec: JobSpec, *, key_id: str) -> Job:
        try:
            prefs = spec.preferences(self.settings)
            spec.gate_settings(self.settings)
        except ValueError as exc:
            raise InvalidRequestError(f"invalid thresholds: {exc}", param="thresholds") from None
        spec.check()
        self._check_servable(spec)
        running = self.jobs.active()  # answers early; the rule itself is the database's, below
        if running:
            raise ConflictError(f"alignment job {running[0].id} is {running[0].status}; one job runs at a time",
                                fix=f"wait for it, or cancel it: POST /v1/admin/alignment/jobs/{running[0].id}/cancel")
        self._precheck(spec, prefs)
        # the database refuses a second active job (partial unique index): ConflictError, any replica
        job = self.jobs.create(method=spec.method, spec=spec.model_dump(mode="json"), created_by=key_id,
                               host=self.host, replica_id=self.replica_id)
        job_dir = self.jobs.job_dir(job.id)
        settings_path = job_dir / "settings.json"
        settings_path.write_text(json.dumps(worker_settings(self.settings), indent=2), "utf-8")
        os.chmod(settings_path, 0o600)
        self._spawn(job, settings_path)
        return self.jobs.get(job.id)

    def _check_servable(self, spec: JobSpec) -> None:
        """Refuse, before anything trains, a job whose result the engine could not serve: an
        adapter vLLM would refuse, or no local copy of the base weights behind a vLLM engine."""
        from agentstack.engines.adapter_limits import check_job_lora
        from agentstack.engines.embedded.weights import hub_cache_dir

        engine = self.settings.engine
        vllm = engine.kind == "openai"
        check_job_lora(spec.hyperparameters.lora_r, spec.hyperparameters.lora_targets,
                       max_rank=engine.max_lora_rank, vllm=vllm)
        base = self.settings.alignment.base_model
        if vllm and (not base or not (Path(base).expanduser().exists() or hub_cache_dir(base))):
            raise InvalidRequestError(
                "engine.kind is openai, so training needs a local copy of the served base model, and "
                + ("alignment.base_model is not set" if not base else f"alignment.base_model={base} does not exist"),
                param="alignment.base_model",
                fix="set AGENTSTACK_ALIGNMENT__BASE_MODEL to the directory of the weights vLLM serves")

    def _precheck(self, spec: JobSpec, prefs: Any) -> None:
        """Refuse at once when even an optimistic count (no scrubbing, before deduplication and
        caps) is below the threshold. Constitutional data is counted as its prompt limit."""
        if not spec.data.feedback or spec.method == "sft":
            return
        from agentstack.alignment.preferences import PreferenceBuilder, require
        from agentstack.feedback.scrub import TextScrubber
        from agentstack.feedback.store import FeedbackStore

        builder = PreferenceBuilder(FeedbackStore(self.db), TextScrubber(self.settings, enabled=False),
                                    prefs.model_copy(update={"heldout_fraction": 0.0}),
                                    modes=tuple(spec.data.modes) if spec.data.modes else None)
        since, until = spec.data_window.resolve()
        data = builder.build(since, until)
        bonus = 0
        if spec.data.revisions:
            bonus += min(spec.data.revision_limit, data.stats.get("down", 0))
        if spec.data.constitution:
            bonus += spec.data.constitution.limit
        if spec.method == "dpo" and bonus and len(data.pairs) + bonus >= prefs.min_pairs:
            return
        require(spec.method, data, prefs)

    def _spawn(self, job: Job, settings_path: Path) -> None:
        from agentstack.child_env import child_environment

        threads = str(self.settings.alignment.worker_threads)
        secrets = {}  # the only secrets a worker gets: PII salt (scrubbing), engine key (vLLM), database URL
        for env, (section, name) in WORKER_SECRETS.items():
            value = getattr(getattr(self.settings, section), name)
            if value is not None:
                secrets[env] = value.get_secret_value()
        env = child_environment({"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
                                 "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                                 "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}, secrets=secrets)
        log_path = self.jobs.log_path(job.id)
        with log_path.open("ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "agentstack.alignment.worker", job.id, str(settings_path)],
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=True)  # same cwd: relative paths in the settings agree
        self._procs[job.id] = proc
        self.jobs.update(job.id, pid=proc.pid)
        log.info("started worker pid %d for job %s (%s)", proc.pid, job.id, job.method)

    def cancel(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if not job.active:
            raise ConflictError(f"job {job_id} is already {job.status}", fix="only queued or running jobs can be "
                                "cancelled")
        self.jobs.update(job_id, status="cancelling", only_if_active=True)
        self._cancel_at[job_id] = time.monotonic()
        self._signal(job, signal.SIGTERM)  # here; a worker on another host reads the row at its heartbeat
        return self.jobs.get(job_id)

    def _here(self, job: Job) -> bool:
        return job.host in (None, self.host)

    def _signal(self, job: Job, sig: int) -> None:
        if not self._here(job) or not _alive(job.pid, job.id):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(job.pid, sig)  # the worker leads its own session: this reaches its trainers too

    # -- monitor ---------------------------------------------------------------------------------
    def check(self) -> list[str]:
        """One monitor pass over the active jobs; returns the ids that ended (sync: DB and /proc)."""
        ended = []
        for job in self.jobs.active():
            proc = self._procs.get(job.id)
            if proc is not None:
                exited = proc.poll() is not None
            elif job.pid and self._here(job):
                exited = not _alive(job.pid, job.id)
            else:  # on another host, or not started yet: its heartbeat row decides
                exited = self._silent(job)
            if job.status == "cancelling" and not exited:
                started = self._cancel_at.setdefault(job.id, time.monotonic())
                if time.monotonic() - started > self.settings.alignment.cancel_grace_s:
                    log.warning("job %s did not stop within %.0f s of its cancel; killing it", job.id,
                                self.settings.alignment.cancel_grace_s)
                    self._signal(job, signal.SIGKILL)
            if not exited:
                continue
            code = proc.returncode if proc is not None else None
            self._procs.pop(job.id, None)
            self._signal(job, signal.SIGKILL)  # leftovers of the worker's group, if any
            job = self.jobs.get(job.id)
            if job.active:
                how = (f"worker lost (no heartbeat for {self.settings.alignment.worker_timeout_s:.0f} s)"
                       if code is None and not self._here(job) else
                       "worker lost (the server restarted and the worker is gone)" if code is None else
                       f"worker exited with signal {-code}" if code < 0 else f"worker exited with code {code}")
                if job.status == "cancelling":
                    self.jobs.update(job.id, status="cancelled", finished_at=time.time(),
                                     error=f"cancelled by an operator ({how})")
                else:
                    self.jobs.update(job.id, status="failed", finished_at=time.time(),
                                     error=f"{how} during stage {job.stage}; see the job log")
                log.warning("job %s ended abnormally: %s", job.id, how)
            ended.append(job.id)
        return ended

    def _silent(self, job: Job) -> bool:
        """No heartbeat within ``alignment.worker_timeout_s`` (a queued job: since it was created)."""
        last = job.heartbeat_at or job.started_at or job.created_at
        return time.time() - last > self.settings.alignment.worker_timeout_s

    async def promote_passed(self) -> None:
        """Promote candidates of succeeded jobs that passed the gate and asked for it; record every
        job's promotion outcome once."""
        for job in await asyncio.to_thread(self.jobs.pending_promotions):
            spec = JobSpec.model_validate(job.spec)
            passed = bool((job.gate or {}).get("passed"))
            if not passed:
                outcome = {"status": "rejected_by_gate", "at": time.time()}
            elif not spec.should_promote(self.settings):
                outcome = {"status": "not_requested", "at": time.time()}
            elif self.deployer is None:
                outcome = {"status": "no_server", "at": time.time()}
            else:
                try:
                    result = await self.deployer.promote(job.version, key_id=job.created_by, job_id=job.id,
                                                         reason="gate passed")
                    outcome = {"status": "promoted", "at": time.time(), **result}
                except Exception as exc:  # recorded on the job and in the audit log
                    log.exception("auto-promotion of %s failed", job.version)
                    outcome = {"status": "failed", "at": time.time(), "error": str(exc)}
                await asyncio.to_thread(self.audit.record, key_id=job.created_by, action="model.promote",
                                        target=job.version, detail={"job_id": job.id, "auto": True, **outcome},
                                        outcome="ok" if outcome["status"] == "promoted" else "error")
            await asyncio.to_thread(self.jobs.update, job.id, promotion=outcome)

    async def _loop(self) -> None:
        while True:
            try:
                if await asyncio.to_thread(self.lease.acquire):  # one replica at a time; lapses if it dies
                    await self._holding_lease(self._pass())
            except asyncio.CancelledError:
                raise
            except Exception:  # the monitor must outlive any one bad pass
                log.exception("alignment monitor pass failed")
            await asyncio.sleep(self.settings.alignment.poll_s)

    async def _pass(self) -> None:
        await asyncio.to_thread(self.check)
        await self.promote_passed()
        await self._maybe_purge()

    async def _holding_lease(self, work: Any) -> None:
        """Run ``work`` while renewing the monitor lease, so a long pass (a promotion waits for every
        replica) keeps it; if this replica dies mid-pass the lease lapses and the next holder redoes
        what was not recorded (a promotion outcome is written only after the promotion)."""
        async def renew() -> None:
            while True:
                await asyncio.sleep(max(0.2, self.lease.ttl_s / 3))
                await asyncio.to_thread(self.lease.acquire)

        renewer = background.start(None, renew(), "monitor-lease")
        try:
            await work
        finally:
            await background.stop(renewer)

    async def _maybe_purge(self) -> None:
        privacy = self.settings.privacy
        if not (privacy.retention_days or privacy.chat_retention_days) or \
                time.time() - self._last_purge < privacy.retention_check_hours * 3600:
            return
        from agentstack.feedback.privacy import purge_expired, purge_unrated_chat

        self._last_purge = time.time()
        for action, purge, days in (("privacy.retention_purge", purge_expired, privacy.retention_days),
                                    ("privacy.chat_retention_purge", purge_unrated_chat, privacy.chat_retention_days)):
            counts = await asyncio.to_thread(purge, self.db, days)
            if any(v for k, v in counts.items() if k != "cutoff"):
                await asyncio.to_thread(self.audit.record, key_id="system", action=action, detail=counts)

    def start(self) -> None:
        self._task = background.start(self._task, self._loop(), "alignment-monitor")

    async def aclose(self) -> None:
        await background.stop(self._task)
        self._task = None
        for proc in self._procs.values():  # reap finished children; running workers carry on
            proc.poll()
        with contextlib.suppress(Exception):  # let another replica take over the monitor at once
            await asyncio.to_thread(self.lease.release)
