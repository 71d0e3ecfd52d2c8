"""Training beyond one process, on the CPU, through the production launcher (``launch.run``).

* DDP: the shipped ``cpu_ddp.yaml``, 2 processes over gloo. Every rank holds the whole model, so
  its saved adapter is the reference for the sharded run.
* DeepSpeed ZeRO-3: the shipped ``zero3.yaml`` settings on DeepSpeed's CPU accelerator over gloo,
  launched as **two machines** of one process each on loopback: the job's side (machine rank 0)
  through ``launch.run``, the other machine through ``python -m agentstack.alignment.launch follow
  --machine-rank 1``. Two changes, in a DeepSpeed JSON: bf16 "auto" (it follows the trainer: fp32
  on the CPU), and ``stage3_param_persistence_threshold`` 0. DeepSpeed keeps parameters under that
  threshold (default 1e5 elements) whole on every rank, which would hide small LoRA tensors from
  sharding; at 0 every LoRA tensor is partitioned, so rank 0 holds empty shards and the adapter
  can only be right if it was gathered before saving. It must equal the DDP run's adapter (same
  seed, data and global batch).

FSDP is not here: accelerate enables it only on GPUs (on the CPU it would silently train DDP, which
the trainers now refuse); see docs/alignment.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONFIGS = Path(__file__).parents[2] / "agentstack" / "alignment" / "accelerate"
LORA_R = 16


def _config(model_dir: Path, root: Path) -> dict:
    rows = [{"prompt": [{"role": "user", "content": f"Name a colour ({i})."}], "chosen": "Blue.",
             "rejected": "There are so many colours that I could not possibly choose one."} for i in range(8)]
    data = root / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = root / "run"
    out.mkdir(parents=True)
    return {"method": "dpo", "model_dir": str(model_dir), "output_dir": str(out), "train_file": str(data),
            "metrics_file": str(out / "metrics.jsonl"), "max_steps": 2, "batch_size": 1, "max_length": 64,
            "lora_r": LORA_R, "lora_alpha": 2 * LORA_R, "threads": 1, "device": "cpu"}


def _adapter(summary: dict) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(summary["adapter"]) / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def ddp_run(embedded_engine, tmp_path_factory):
    from agentstack.alignment import launch
    from agentstack.config import Settings

    root = tmp_path_factory.mktemp("ddp")
    log = root / "log.txt"
    with log.open("w") as f:
        summary = launch.run(_config(embedded_engine.model_dir, root), root / "config.json", Settings(), log_file=f,
                             launcher={"kind": "accelerate", "config_file": CONFIGS / "cpu_ddp.yaml"})
    return summary, log.read_text()


def test_two_process_gloo_ddp_dpo(ddp_run):
    summary, log = ddp_run
    assert "accelerate.commands.launch" in log
    assert (summary["world_size"], summary["backend"], summary["distributed_type"]) == (2, "gloo", "MULTI_CPU"), \
        log[-2000:]
    params = summary["parameters"]
    assert summary["steps"] == 2 and params["changed_tensors"] == params["trainable_tensors"] > 0
    assert (summary["saved_tensors"], summary["sharded_tensors"]) == (params["trainable_tensors"], 0)
    adapter = _adapter(summary)
    assert len(adapter) == params["trainable_tensors"]
    # lora_B starts at zero: every one of them moved away from its initial value.
    assert all(t.abs().max() > 0 for k, t in adapter.items() if "lora_B" in k)


def test_zero3_across_two_machines_saves_the_gathered_adapter(ddp_run, embedded_engine, tmp_path):
    pytest.importorskip("deepspeed", reason="DeepSpeed is a dev dependency (pip install -e '.[dev]')")
    import torch
    import yaml

    from agentstack.alignment import launch
    from agentstack.alignment.spec import Launcher
    from agentstack.config import Settings

    shipped = yaml.safe_load((CONFIGS / "zero3.yaml").read_text())
    zero = shipped["deepspeed_config"]
    assert (zero["zero_stage"], zero["zero3_save_16bit_model"]) == (3, True)
    ds_json = tmp_path / "zero3.json"
    ds_json.write_text(json.dumps({
        "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto", "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto", "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"},
        "zero_optimization": {"stage": zero["zero_stage"], "stage3_gather_16bit_weights_on_model_save": True,
                              "offload_optimizer": {"device": zero["offload_optimizer_device"]},
                              "offload_param": {"device": zero["offload_param_device"]},
                              "stage3_param_persistence_threshold": 0}}))
    # With a DeepSpeed JSON, accelerate refuses mixed_precision in the YAML: "auto" there follows the
    # trainer (fp32 on the CPU).
    cpu_zero3 = tmp_path / "cpu_zero3.yaml"
    cpu_zero3.write_text(yaml.safe_dump({**{k: v for k, v in shipped.items() if k != "mixed_precision"},
                                         "deepspeed_config": {
        "deepspeed_config_file": str(ds_json), "deepspeed_multinode_launcher": zero["deepspeed_multinode_launcher"],
        "zero3_init_flag": zero["zero3_init_flag"]}}))
    launcher = Launcher.model_validate({"kind": "accelerate", "config_file": str(cpu_zero3), "num_processes": 2,
                                        "num_machines": 2, "main_process_ip": "127.0.0.1",
                                        "main_process_port": launch.free_port()}).model_dump()
    config_path = tmp_path / "policy.json"
    follower_log = (tmp_path / "follower.txt").open("w")
    follower = subprocess.Popen([sys.executable, "-m", "agentstack.alignment.launch", "follow", "--machine-rank", "1",
                                 "--wait", "120", str(config_path)], stdout=follower_log, stderr=subprocess.STDOUT)
    log = tmp_path / "log.txt"
    try:
        with log.open("w") as f:
            summary = launch.run(_config(embedded_engine.model_dir, tmp_path), config_path, Settings(), log_file=f,
                                 launcher=launcher)
        assert follower.wait(timeout=120) == 0, (tmp_path / "follower.txt").read_text()[-3000:]
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
        follower_log.close()
    text = log.read_text()
    assert "--num_machines 2 --machine_rank 0 --main_process_ip 127.0.0.1" in text
    assert (summary["world_size"], summary["backend"]) == (2, "gloo"), text[-2000:]
    assert (summary["distributed_type"], summary["zero_stage"]) == ("DEEPSPEED", 3)
    params = summary["parameters"]
    assert summary["steps"] == 2 and params["changed_tensors"] == params["trainable_tensors"] > 0
    assert summary["saved_tensors"] == params["trainable_tensors"]

    # Rank 0 held only shards of every LoRA tensor: the saved values come from the gather.
    assert summary["sharded_tensors"] == params["trainable_tensors"]

    saved, reference = _adapter(summary), _adapter(ddp_run[0])
    assert saved.keys() == reference.keys()
    for name, tensor in saved.items():
        assert tensor.shape == reference[name].shape, name
        assert tensor.abs().max() > 0, name
        torch.testing.assert_close(tensor, reference[name], rtol=1e-3, atol=2e-6, msg=name)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's")
def test_a_killed_follower_leaves_no_launcher_waiting_for_its_peers(tmp_path):
    """Machine rank 1 whose rank 0 never comes: its ``accelerate launch`` dials rank 0 and waits. Killing
    the follower (SIGKILL, as a timeout or an operator does) must take the launcher with it."""
    import os
    import signal
    import time

    from agentstack.alignment import launch

    config_path = tmp_path / "policy.json"
    config_path.write_text(json.dumps({"method": "dpo", "launcher": {
        "kind": "accelerate", "accelerate_config": str(CONFIGS / "cpu_ddp.yaml"), "num_processes": 2,
        "num_machines": 2, "main_process_ip": "127.0.0.1", "main_process_port": launch.free_port()}}))
    follower = subprocess.Popen([sys.executable, "-m", "agentstack.alignment.launch", "follow", "--machine-rank", "1",
                                 str(config_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (launcher := _children(follower.pid)):
            assert follower.poll() is None and time.monotonic() < deadline, "the follower started no launcher"
            time.sleep(0.2)
        assert "accelerate.commands.launch" in Path(f"/proc/{launcher[0]}/cmdline").read_text()
        time.sleep(3)  # the launcher is up and dialling rank 0
        assert _children(follower.pid) == launcher
    finally:
        follower.kill()
        follower.wait()
    deadline = time.monotonic() + 30
    while Path(f"/proc/{launcher[0]}").exists():
        stat = Path(f"/proc/{launcher[0]}/stat").read_text() if Path(f"/proc/{launcher[0]}").exists() else ""
        if stat.split(")")[-1].split()[:1] == ["Z"]:  # dead, waiting for init to reap it
            break
        if time.monotonic() > deadline:
            os.kill(launcher[0], signal.SIGKILL)
            pytest.fail("the launcher outlived its follower by 30 s")
        time.sleep(0.2)
