"""Starting a training process: directly, or under ``accelerate launch`` for DDP / DeepSpeed ZeRO,
on one machine or several.

``launcher = process`` runs ``python -m agentstack.alignment.train CONFIG.json`` (one process, CPU or
one GPU). ``launcher = accelerate`` runs

    accelerate launch --config_file ACCELERATE.yaml [--num_processes N] --main_process_port P \\
        -m agentstack.alignment.train CONFIG.json

and accelerate starts one process per device (``distributed_type: MULTI_GPU`` = DDP,
``DEEPSPEED`` = ZeRO with the config's stage); the same job code runs on every rank. On a
machine without GPUs a ``MULTI_GPU`` config with 2 processes runs DDP over gloo on the CPU, and a
DeepSpeed config runs ZeRO over gloo on DeepSpeed's CPU accelerator; the test suite proves both.

Several machines (``num_machines`` > 1): the job's worker is machine rank 0 and adds
``--num_machines M --machine_rank 0 --main_process_ip IP --main_process_port P`` (``num_processes``
counts the processes of all machines). Every other machine runs the same command with its own rank,
which ``follow`` builds from the step config the worker writes (it carries the launcher):

    python -m agentstack.alignment.launch follow --machine-rank 1 --wait 3600 JOB_DIR/policy.json

The job directory (configs, data, output) must be on a volume every machine mounts at the same path.

Every launched process gets the allowlisted environment of ``agentstack/child_env.py`` (no
secrets), the worker's thread limit (``OMP_NUM_THREADS``) and the offline flags;
it inherits the worker's process group and niceness, so cancelling the job stops it too.
``run`` waits for the process while calling ``on_poll`` about once a second (the worker copies the
metrics JSONL into the job row from there).

This module knows nothing about jobs or data.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from agentstack.alignment.train import die_with_parent
from agentstack.config import Settings


class TrainingFailed(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command(config_path: Path, *, kind: str = "process", accelerate_config: Path | None = None,
            num_processes: int | None = None, num_machines: int | None = None, machine_rank: int = 0,
            main_process_ip: str | None = None, main_process_port: int | None = None) -> list[str]:
    """The command line of one training step (of one machine, when there are several)."""
    entry = ["-m", "agentstack.alignment.train", str(config_path)]
    machines = num_machines or 1
    if kind == "process":
        if machines > 1:
            raise TrainingFailed(f"num_machines={machines} needs launcher kind 'accelerate'; set launcher.kind or "
                                 "alignment.launcher (see docs/alignment.md)")
        return [sys.executable, *entry]
    if kind != "accelerate":
        raise ValueError(f"unknown launcher {kind!r}; expected process or accelerate")
    if accelerate_config is None or not Path(accelerate_config).is_file():
        raise TrainingFailed(f"launcher=accelerate needs an accelerate config file, got {accelerate_config}; set "
                             "alignment.accelerate_config (see docs/alignment.md)")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config)]
    if num_processes:
        cmd += ["--num_processes", str(num_processes)]
    if machines > 1:
        if not main_process_ip or not main_process_port:
            raise TrainingFailed(f"num_machines={machines} needs main_process_ip and main_process_port (rank 0's "
                                 "address, which every machine dials)")
        if not 0 <= machine_rank < machines:
            raise TrainingFailed(f"machine_rank must be in [0, {machines - 1}], got {machine_rank}")
        if num_processes and num_processes % machines:
            raise TrainingFailed(f"num_processes ({num_processes}) counts the processes of all machines: it must "
                                 f"be a multiple of num_machines ({machines})")
        cmd += ["--num_machines", str(machines), "--machine_rank", str(machine_rank),
                "--main_process_ip", main_process_ip]
    return [*cmd, "--main_process_port", str(main_process_port or free_port()), *entry]


def resolve(settings: Settings, launcher: dict[str, Any] | None) -> dict[str, Any]:
    """A job's launcher overrides (``JobSpec.launcher``) over the settings' defaults."""
    launcher = launcher or {}
    a = settings.alignment
    return {"kind": launcher.get("kind") or a.launcher,
            "accelerate_config": str(launcher.get("config_file") or a.accelerate_config or "") or None,
            "num_processes": launcher.get("num_processes") or a.num_processes,
            "num_machines": launcher.get("num_machines") or 1,
            "main_process_ip": launcher.get("main_process_ip"),
            "main_process_port": launcher.get("main_process_port")}


def environment(threads: int) -> dict[str, str]:
    """A trainer's environment: the allowlist of ``agentstack/child_env.py`` (no secrets: a trainer
    reads its data and config from files) with the worker's thread limit and the offline flags."""
    from agentstack.child_env import child_environment

    env = child_environment({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                             "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                             "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "ACCELERATE_DISABLE_RICH": "1"})
    # The interpreter's bin first: DeepSpeed compiles its ops on first use with the `ninja` there.
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = os.pathsep.join(p for p in (bin_dir, env.get("PATH", "")) if p)
    return env


def run(config: dict[str, Any], config_path: Path, settings: Settings, *, log_file: Any,
        launcher: dict[str, Any] | None = None, on_poll: Callable[[], None] | None = None) -> dict[str, Any]:
    """Write ``config`` to ``config_path``, run the trainer, return its ``summary.json``."""
    resolved = resolve(settings, launcher)
    cmd = command(config_path, **resolved)
    # The launcher travels with the config, so that other machines can build their command (follow).
    config_path.write_text(json.dumps({**config, "launcher": resolved}, indent=2, default=str), "utf-8")
    log_file.write(f"$ {' '.join(cmd)}\n")
    if resolved["num_machines"] > 1:
        log_file.write(f"waiting for machines 1..{resolved['num_machines'] - 1}; on each run: python -m "
                       f"agentstack.alignment.launch follow --machine-rank <rank> {config_path}\n")
    log_file.flush()
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=environment(settings.alignment.worker_threads))
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


def follower_command(config_path: Path, machine_rank: int) -> list[str]:
    """The command of machine ``machine_rank`` (>= 1) for a step config written by :func:`run`."""
    resolved = json.loads(Path(config_path).read_text("utf-8")).get("launcher")
    if not resolved or (resolved.get("num_machines") or 1) < 2:
        raise TrainingFailed(f"{config_path} was not launched on several machines (its launcher: {resolved}); "
                             "set the job's launcher.num_machines")
    if machine_rank < 1:
        raise TrainingFailed("machine rank 0 is the job's worker; followers are ranks 1..num_machines-1")
    return command(Path(config_path), **{**resolved, "machine_rank": machine_rank})


def follow(config_paths: list[Path], machine_rank: int, *, wait_s: float = 0.0, threads: int = 1) -> int:
    """Run this machine's share of each step config in order (reward.json, then policy.json),
    waiting up to ``wait_s`` for each to appear; a step is skipped when a later one appears first
    (a job that trains no reward model writes no reward.json). Returns the first non-zero exit
    status, or 0."""
    for i, path in enumerate(config_paths):
        deadline = time.monotonic() + wait_s
        while not Path(path).is_file():
            if any(Path(later).is_file() for later in config_paths[i + 1:]):
                break
            if time.monotonic() >= deadline:
                raise TrainingFailed(f"{path} did not appear within {wait_s:.0f} s; is the job running, and is its "
                                     "directory on a volume this machine mounts at the same path?")
            time.sleep(1.0)
        if not Path(path).is_file():
            continue
        # The launcher dies with this process: a killed follower leaves no ranks waiting for their peers.
        code = subprocess.call(follower_command(Path(path), machine_rank), stdin=subprocess.DEVNULL,
                               env=environment(threads), preexec_fn=partial(die_with_parent, os.getpid()))
        if code:
            return code
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m agentstack.alignment.launch",
                                     description="Join a multi-machine training step as machine rank N.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("follow", help="run this machine's ranks of one or more step configs")
    f.add_argument("configs", nargs="+", type=Path, help="step config(s) the job wrote, e.g. JOB_DIR/policy.json")
    f.add_argument("--machine-rank", type=int, required=True, help="this machine's rank, 1..num_machines-1")
    f.add_argument("--wait", type=float, default=0.0, help="seconds to wait for each config to appear")
    f.add_argument("--threads", type=int, default=1, help="OMP/MKL threads per training process")
    args = parser.parse_args(argv)
    try:
        return follow(args.configs, args.machine_rank, wait_s=args.wait, threads=args.threads)
    except TrainingFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
