"""Each trainer trains SmolLM2-135M with LoRA for two steps and its trainable parameters change
(TRL's habit: tiny real models, assert the parameters moved). The runs use this process's compute
worker, not a child process, to stay within the suite's time budget; the job path, which runs the
same code in a training process, is tested in test_alignment_job.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import MODEL_CACHE

pytestmark = pytest.mark.integration

PAIRS = [{"prompt": [{"role": "user", "content": f"Name a colour, number {i}."}], "chosen": "Blue.",
          "rejected": "Well, there are many colours and it is hard to choose just one of them."} for i in range(6)]


@pytest.fixture(scope="module")
def model_dir(embedded_engine) -> str:
    return str(embedded_engine.model_dir)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("train-data")

    def write(name, rows):
        (d / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        return d / name

    unpaired = [{"prompt": p["prompt"], "completion": p["chosen"] if i % 2 else p["rejected"], "label": bool(i % 2)}
                for i, p in enumerate(PAIRS)]
    return {"pairs": write("pairs.jsonl", PAIRS), "unpaired": write("unpaired.jsonl", unpaired),
            "prompts": write("prompts.jsonl", [{"prompt": p["prompt"]} for p in PAIRS]),
            "sft": write("sft.jsonl", [{"prompt": p["prompt"], "completion": p["chosen"]} for p in PAIRS]),
            "dir": d}


def train(method: str, model_dir: str, out: Path, train_file: Path, **extra):
    from agentstack.alignment.trainers import config_class, run
    from agentstack.compute import worker

    config = config_class(method)(model_dir=model_dir, output_dir=str(out), train_file=str(train_file),
                                  metrics_file=str(out / "metrics.jsonl"), max_steps=2, batch_size=2, max_length=96,
                                  lora_r=4, lora_alpha=8, **extra)
    return worker().run(run, method, config)


def assert_trained(summary: dict, out: Path, subdir: str = "adapter") -> None:
    params = summary["parameters"]
    assert summary["steps"] == 2
    assert params["trainable_tensors"] > 0 and params["changed_tensors"] == params["trainable_tensors"], params
    saved = out / subdir
    assert (saved / "adapter_model.safetensors").is_file() and not list(saved.glob("*.bin"))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]


def test_dpo_changes_the_lora_and_logs_reward_margins(model_dir, files, tmp_path):
    summary = train("dpo", model_dir, tmp_path, files["pairs"], beta=0.1)
    assert_trained(summary, tmp_path)
    assert "rewards/margins" in summary["final"] and summary["beta"] == 0.1


def test_kto_on_unpaired_thumbs_logs_its_kl_estimate(model_dir, files, tmp_path):
    summary = train("kto", model_dir, tmp_path, files["unpaired"])
    assert_trained(summary, tmp_path)
    assert "kl" in summary["final"]


def test_reward_model_then_rloo_with_kl_penalty(model_dir, files, tmp_path):
    rm = train("reward", model_dir, tmp_path / "rm", files["pairs"], heldout_file=str(files["pairs"]))
    assert_trained(rm, tmp_path / "rm", "reward_model")
    assert rm["heldout"]["n"] == len(PAIRS) and 0.0 <= rm["heldout"]["accuracy"] <= 1.0
    policy = train("rlhf", model_dir, tmp_path / "rl", files["prompts"],
                   reward_model_dir=str(tmp_path / "rm" / "reward_model"), num_generations=2,
                   max_completion_length=8, beta=0.05)
    assert_trained(policy, tmp_path / "rl")
    assert policy["final_kl"] is not None and "reward" in policy["final"]


def test_rlhf_refuses_a_zero_kl_coefficient(model_dir, files, tmp_path):
    from agentstack.alignment.trainers.rlhf import RLHFTrainingConfig

    with pytest.raises(ValueError, match="beta must be > 0"):
        RLHFTrainingConfig(model_dir=model_dir, output_dir=str(tmp_path), train_file=str(files["prompts"]),
                           reward_model_dir="x", beta=0.0)


def test_a_trained_adapter_loads_into_the_engine(model_dir, files, tmp_path, embedded_engine):
    import asyncio

    from agentstack.engines.base import ChatRequest
    from agentstack.engines.params import SamplingParams

    train("sft", model_dir, tmp_path, files["sft"])
    asyncio.run(embedded_engine.load_adapter("t-sft", tmp_path / "adapter"))
    try:
        out = asyncio.run(embedded_engine.chat(ChatRequest(messages=[{"role": "user", "content": "Hi"}],
                                                           model="t-sft", params=SamplingParams(max_tokens=4))))
        assert out.model_version == "t-sft"
    finally:
        asyncio.run(embedded_engine.unload_adapter("t-sft"))
    assert MODEL_CACHE.exists()
