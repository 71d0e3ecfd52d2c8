"""The multi-process path: the same DPO training under ``accelerate launch`` with the shipped
2-process config, DDP over gloo on the CPU (on GPU hosts the same job runs with ddp.yaml or a
DeepSpeed ZeRO config). Both ranks train; rank 0 saves the adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONFIGS = Path(__file__).parents[2] / "agentstack" / "alignment" / "accelerate"


def test_two_process_gloo_ddp_dpo(embedded_engine, tmp_path, settings):
    from agentstack.alignment import launch

    rows = [{"prompt": [{"role": "user", "content": f"Name a colour ({i})."}], "chosen": "Blue.",
             "rejected": "There are so many colours that I could not possibly choose one."} for i in range(8)]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    config = {"method": "dpo", "model_dir": str(embedded_engine.model_dir), "output_dir": str(out),
              "train_file": str(data), "metrics_file": str(out / "metrics.jsonl"), "max_steps": 2, "batch_size": 1,
              "max_length": 64, "lora_r": 4, "lora_alpha": 8, "threads": 1, "device": "cpu"}
    out.mkdir()
    log = tmp_path / "log.txt"
    with log.open("w") as f:
        summary = launch.run(config, tmp_path / "config.json", settings, log_file=f,
                             launcher={"kind": "accelerate", "config_file": CONFIGS / "cpu_ddp.yaml"})
    text = log.read_text()
    assert "accelerate.commands.launch" in text
    assert (summary["world_size"], summary["backend"]) == (2, "gloo"), text[-2000:]
    params = summary["parameters"]
    assert summary["steps"] == 2 and params["changed_tensors"] == params["trainable_tensors"] > 0
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
