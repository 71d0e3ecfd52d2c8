"""The training process: ``python -m agentstack.alignment.train CONFIG.json``.

The job worker (``worker.py``) writes a trainer config as JSON (``{"method": "dpo", ...fields}``)
and starts this module either directly (``alignment.launcher = process``) or under
``accelerate launch --config_file ...`` (``launcher = accelerate``: DDP or DeepSpeed ZeRO across
GPUs; every rank runs this same entry point and TRL/accelerate split the batches). Rank 0 writes
the adapter, ``summary.json`` and the metrics JSONL.

It never touches the database or the registry, and it dies with its parent (``PR_SET_PDEATHSIG``),
so killing a worker never leaves a training process behind. Before it trains it removes the JIT
build locks a killed DeepSpeed build left behind (``build_locks.py``), which would hang it.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("agentstack.alignment.train")


def die_with_parent(parent: int | None = None) -> None:
    """Ask Linux to SIGKILL this process when its parent exits (no-op elsewhere).

    ``parent``: the parent's pid as the parent knew it (a ``preexec_fn`` gets it from the parent);
    by default the parent seen before the request. If the parent is no longer that one once the
    request is in place, it died in between and this process exits. (Comparing with 1 would kill
    every child of a parent that is PID 1, as a container's command is.)"""
    if not sys.platform.startswith("linux"):
        return
    expected = os.getppid() if parent is None else parent
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        return
    if os.getppid() != expected:  # the parent died before prctl took effect
        os._exit(1)


def load_config(path: str | Path) -> tuple[str, Any]:
    from agentstack.alignment.trainers import config_class

    data = json.loads(Path(path).read_text("utf-8"))
    method = data.get("method")
    if not method:
        raise ValueError(f"{path}: the config names no `method`")
    return method, config_class(method).from_json(data)


def main(config_path: str) -> dict[str, Any]:
    from agentstack.alignment.trainers import run

    method, config = load_config(config_path)
    return run(method, config)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m agentstack.alignment.train",
                                     description="Train one alignment step from a JSON trainer config.")
    parser.add_argument("config", help="trainer config JSON written by the job worker")
    return parser.parse_args(argv)


if __name__ == "__main__":
    die_with_parent()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from agentstack.alignment.build_locks import clear_stale_build_locks

    try:
        clear_stale_build_locks()
    except Exception:  # noqa: BLE001 - a cleanup that fails must not stop training
        log.warning("checking for stale JIT build locks failed", exc_info=True)
    summary = main(parse_args().config)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"summary": summary}, default=str), flush=True)
