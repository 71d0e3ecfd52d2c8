"""Starting a training process: directly, or under ``accelerate launch`` for DDP / DeepSpeed ZeRO.

``launcher = process`` runs ``python -m agentstack.alignment.train CONFIG.json`` (one process, CPU or
one GPU). ``launcher = accelerate`` runs

    accelerate launch --config_file ACCELERATE.yaml [--num_processes N] --main_process_port P \\
        -m agentstack.alignment.train CONFIG.json

and accelerate starts one process per device (``distributed_type: MULTI_GPU`` = DDP,
``DEEPSPEED`` = ZeRO with the config's stage); the same job code runs on every rank. On a
machine without GPUs a ``MULTI_GPU`` config with 2 processes runs DDP over gloo on the CPU, which
is how the test suite proves the path.

Every launched process gets the allowlisted environment of ``agentstack/child_env.py`` (no
secrets), the worker's thread limit (``OMP_NUM_THREADS``) and the offline flags;
it inherits the worker's process group and niceness, so cancelling the job stops it too.
``run`` waits for the process while calling ``on_poll`` about once a second (the worker copies the
metrics JSONL into the job row from there).

This module knows nothing about jobs or data.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentstack.config import Settings


class TrainingFailed(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command(config_path: Path, *, kind: str = "process", accelerate_config: Path | None = None,
            num_processes: int | None = None) -> list[str]:
    entry = ["-m", "agentstack.alignment.train", str(config_path)]
    if kind == "process":
        return [sys.executable, *entry]
    if kind != "accelerate":
        raise ValueError(f"unknown launcher {kind!r}; expected process or accelerate")
    if accelerate_config is None or not Path(accelerate_config).is_file():
        raise TrainingFailed(f"launcher=accelerate needs an accelerate config file, got {accelerate_config}; set "
                             "alignment.accelerate_config (see docs/alignment.md)")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config)]
    if num_processes:
        cmd += ["--num_processes", str(num_processes)]
    return [*cmd, "--main_process_port", str(free_port()), *entry]


def environment(threads: int) -> dict[str, str]:
    """A trainer's environment: the allowlist of ``agentstack/child_env.py`` (no secrets: a trainer
    reads its data and config from files) with the worker's thread limit and the offline flags."""
    from agentstack.child_env import child_environment

    return child_environment({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                              "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                              "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "ACCELERATE_DISABLE_RICH": "1"})


def run(config: dict[str, Any], config_path: Path, settings: Settings, *, log_file: Any,
        launcher: dict[str, Any] | None = None, on_poll: Callable[[], None] | None = None) -> dict[str, Any]:
    """Write ``config`` to ``config_path``, run the trainer, return its ``summary.json``."""
    launcher = launcher or {}
    a = settings.alignment
    config_path.write_text(json.dumps(config, indent=2, default=str), "utf-8")
    cmd = command(config_path, kind=launcher.get("kind") or a.launcher,
                  accelerate_config=launcher.get("config_file") or a.accelerate_config,
                  num_processes=launcher.get("num_processes") or a.num_processes)
    log_file.write(f"$ {' '.join(cmd)}\n")
    log_file.flush()
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=environment(a.worker_threads))
    try:
        while proc.poll() is None:
            time.sleep(1.0)
            if on_poll:
                on_poll()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if on_poll:
        on_poll()
    if proc.returncode != 0:
        raise TrainingFailed(f"training process exited with code {proc.returncode} (see the job log)")
    summary_path = Path(config["output_dir"]) / "summary.json"
    if not summary_path.is_file():
        raise TrainingFailed(f"training finished without writing {summary_path}")
    return json.loads(summary_path.read_text("utf-8"))
