"""Threads: the llamacpp engine serving while an alignment job trains on the same 2 cores.

An alignment round's heavy part is its training process (``python -m agentstack.alignment.train``,
torch, niced, ``alignment.worker_threads`` threads), started exactly as the job worker starts it
(``launch.environment``). This script runs ``agentstack serve`` (llamacpp engine, 2 threads) and
measures 1 and 8 streaming clients

  * alone,
  * with a DPO training process running beside it,

under OpenMP's passive waiting (what ``import agentstack`` sets) and under active spin-waiting
(libgomp's default; ``OMP_WAIT_POLICY=ACTIVE``) for both processes, and reports the training
process's CPU seconds per second in each case (its progress; a step takes about a minute). Prints a table, writes ``bench/results/threads.json``.

    .venv/bin/python bench/threads.py [--tokens 64] [--repeats 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from serving import clients, free_port, machine, start_server  # noqa: E402


def dpo_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        prompt = [{"role": "user", "content": f"Tell me something about the number {i}."}]
        rows.append({"prompt": prompt, "chosen": f"{i} is a number.",
                     "rejected": f"The number {i} is a number, and numbers like {i} count things, which is what "
                                 "numbers are for, as everyone knows."})
    return rows


def start_training(work: Path, policy: str) -> tuple[subprocess.Popen, Path]:
    from agentstack.alignment.launch import environment
    from agentstack.config import load_settings
    from agentstack.engines.embedded.weights import resolve_model_dir

    settings = load_settings()
    model_dir, _ = resolve_model_dir(None, settings.model_cache)
    train = work / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in dpo_rows(64)))
    metrics = work / f"metrics-{policy}.jsonl"
    config = {"method": "dpo", "model_dir": str(model_dir), "output_dir": str(work / f"out-{policy}"),
              "train_file": str(train), "metrics_file": str(metrics), "max_steps": 10_000, "batch_size": 4,
              "max_length": 128, "threads": settings.alignment.worker_threads, "device": "cpu"}
    path = work / f"dpo-{policy}.json"
    path.write_text(json.dumps(config))
    env = {**environment(settings.alignment.worker_threads), "OMP_WAIT_POLICY": policy}
    nice = settings.alignment.worker_nice
    proc = subprocess.Popen([sys.executable, "-m", "agentstack.alignment.train", str(path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: os.nice(nice))
    return proc, metrics


def steps(metrics: Path) -> int:
    if not metrics.is_file():
        return 0
    return sum(1 for line in metrics.read_text().splitlines() if '"loss"' in line)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process has used: the training process's progress, finer than
    its steps (a DPO step on this box takes about a minute)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(url: str, tokens: int, repeats: int) -> dict:
    out = {}
    for n in (1, 8):
        runs = [asyncio.run(clients(url, n, tokens))["aggregate_tok_s"] for _ in range(repeats)]
        out[str(n)] = statistics.median(runs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=60, help="seconds the trainer gets to load first")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "threads.json")
    args = parser.parse_args()
    report = {"machine": machine(), "tokens": args.tokens, "repeats": args.repeats, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for policy in ("PASSIVE", "ACTIVE"):
            port = free_port()
            proc, _ = start_server(port, tmp, {"OMP_WAIT_POLICY": policy, "AGENTSTACK_ENGINE__THREADS": "2"})
            url = f"http://127.0.0.1:{port}"
            try:
                asyncio.run(clients(url, 1, 8))
                alone = measure(url, args.tokens, args.repeats)
                trainer, metrics = start_training(work, policy)
                try:
                    time.sleep(args.warmup)  # the trainer loads the model and tokenises its data
                    if trainer.poll() is not None:
                        raise RuntimeError(f"the training process exited ({trainer.returncode})")
                    c0, t0 = cpu_seconds(trainer.pid), time.monotonic()
                    together = measure(url, args.tokens, args.repeats)
                    rate = (cpu_seconds(trainer.pid) - c0) / (time.monotonic() - t0)
                    c1, t1 = cpu_seconds(trainer.pid), time.monotonic()
                    time.sleep(30)  # the trainer beside an idle server
                    idle_rate = (cpu_seconds(trainer.pid) - c1) / (time.monotonic() - t1)
                    trained = steps(metrics)
                finally:
                    trainer.kill()
                    trainer.wait(30)
            finally:
                proc.terminate()
                proc.wait(30)
            report["runs"][policy] = {"server_alone_tok_s": alone, "server_with_training_tok_s": together,
                                      "training_cpu_s_per_s_while_serving": rate,
                                      "training_cpu_s_per_s_server_idle": idle_rate, "training_steps_done": trained}
            print(policy, report["runs"][policy], flush=True)
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    m = report["machine"]
    print(f"\nload {m['loadavg_at_start'][0]:.2f} at start, {m['loadavg_at_end'][0]:.2f} at end")
    print(f"{'OpenMP wait':12} {'clients':>7} {'alone':>8} {'+ training':>11} {'ratio':>6}  training CPU s per s "
          "(serving / idle server)")
    for policy, run in report["runs"].items():
        for n in ("1", "8"):
            a, t = run["server_alone_tok_s"][n], run["server_with_training_tok_s"][n]
            print(f"{policy:12} {n:>7} {a:8.1f} {t:11.1f} {t / a:6.2f}  "
                  f"{run['training_cpu_s_per_s_while_serving']:.2f} / {run['training_cpu_s_per_s_server_idle']:.2f}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
