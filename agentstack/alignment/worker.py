"""The job worker process: ``python -m agentstack.alignment.worker JOB_ID SETTINGS.json``.

The server's :class:`~agentstack.alignment.manager.JobManager` starts one per job, in its own
session (process group), with the thread limit in its environment; the worker lowers its own
priority (``alignment.worker_nice``) and runs the round (``pipeline.Round``), recording every
stage, metric and the gate decision in the job row. Its stdout and stderr are the job's log.

A heartbeat thread stamps the job row every ``state.heartbeat_s`` (liveness is that row, not a
pid, so any replica can judge it) and reads the status back: a cancel asked through any replica
(``cancelling``) becomes a SIGTERM to this process, and a SIGKILL of its process group if it has
not stopped ``alignment.cancel_grace_s`` later.

Endings: ``succeeded`` (the round ran to its gate decision), ``failed`` with the error (too
little data says how much is needed), ``cancelled`` on SIGTERM. If the worker is killed outright,
its heartbeat stops and the monitor (whichever replica holds it) marks the job failed. The worker
does not depend on the replica that started it: it runs in its own session and carries on if
that replica dies. Serving is never touched from here: promotion is the
server's, after it reads the decision.

Unless ``alignment.keep_datasets`` is on, the round's scrubbed data files are deleted when it
ends, so a user deleted later does not linger in old job directories.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path

log = logging.getLogger("agentstack.alignment.worker")


class JobCancelled(BaseException):
    """Raised in the main thread by SIGTERM (a BaseException so nothing swallows it)."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise JobCancelled()


def load_worker_settings(path: str | Path):
    from agentstack.config import load_settings

    return load_settings(**json.loads(Path(path).read_text("utf-8")))


def heartbeat(jobs, job_id: str, interval: float, grace: float, stop: threading.Event) -> None:
    """Beat until ``stop``; turn a ``cancelling`` status into SIGTERM, then SIGKILL after ``grace``."""
    cancel_seen: float | None = None
    while True:
        try:
            status = jobs.beat(job_id)
        except Exception as exc:  # noqa: BLE001  (a database hiccup must not end the job)
            log.warning("heartbeat failed: %s", exc)
            status = "running"
        if status == "cancelling":
            if cancel_seen is None:
                cancel_seen = time.monotonic()
                log.warning("job %s: cancel requested; stopping", job_id)
                os.kill(os.getpid(), signal.SIGTERM)
            elif time.monotonic() - cancel_seen > grace:
                log.error("job %s did not stop within %.0f s of its cancel; killing its process group", job_id, grace)
                os.killpg(os.getpgid(0), signal.SIGKILL)
        if stop.wait(interval):
            return


def run_job(job_id: str, settings_path: str) -> int:
    from agentstack.alignment.jobs import JobStore, jobs_dir
    from agentstack.db import open_db

    settings = load_worker_settings(settings_path)
    try:
        os.nice(settings.alignment.worker_nice)
    except OSError:
        log.warning("could not lower the worker's priority")
    db = open_db(settings)
    jobs = JobStore(db, jobs_dir(settings))
    job = jobs.get(job_id)
    if job.status != "queued":
        log.error("job %s is %s, not queued; nothing to do", job_id, job.status)
        return 2
    jobs.update(job_id, status="running", started_at=time.time(), pid=os.getpid(), host=socket.gethostname(),
                only_if_active=True)
    stop = threading.Event()
    threading.Thread(target=heartbeat, args=(jobs, job_id, settings.state.heartbeat_s,
                                             settings.alignment.cancel_grace_s, stop),
                     name="job-heartbeat", daemon=True).start()
    log.info("job %s: %s round, pid %d, nice %d, %d thread(s)", job_id, job.method, os.getpid(),
             settings.alignment.worker_nice, settings.alignment.worker_threads)
    from agentstack.alignment.pipeline import Round  # heavy: imported once the heartbeat runs
    from agentstack.alignment.preferences import InsufficientDataError
    rnd = None
    code = 0
    try:
        rnd = Round(settings, jobs.get(job_id), jobs)
        decision = rnd.run()
        jobs.update(job_id, status="succeeded", stage="done", finished_at=time.time(), only_if_active=True)
        log.info("job %s done: gate %s", job_id, decision.get("summary"))
    except JobCancelled:
        jobs.update(job_id, status="cancelled", finished_at=time.time(), error="cancelled by an operator")
        log.warning("job %s cancelled", job_id)
        code = 3
    except InsufficientDataError as exc:
        jobs.update(job_id, status="failed", finished_at=time.time(), error=str(exc), only_if_active=True)
        log.error("job %s refused: %s", job_id, exc.message)
        code = 1
    except Exception as exc:  # noqa: BLE001  (the job fails with its error; the traceback goes to its log)
        traceback.print_exc()
        jobs.update(job_id, status="failed", finished_at=time.time(), error=f"{type(exc).__name__}: {exc}",
                    only_if_active=True)
        code = 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop.set()
        if not settings.alignment.keep_datasets:
            shutil.rmtree(jobs.job_dir(job_id) / "data", ignore_errors=True)
        if rnd is not None:
            try:
                rnd.close()
            except Exception:  # closing must not change the job's outcome
                log.exception("closing the round failed")
    return code


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m agentstack.alignment.worker")
    parser.add_argument("job_id")
    parser.add_argument("settings", help="settings JSON written by the server for this job")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "filelock", "presidio-analyzer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, _on_sigterm)
    code = run_job(args.job_id, args.settings)
    sys.stdout.flush()
    os._exit(code)  # daemon compute threads need no goodbye


if __name__ == "__main__":
    main()
