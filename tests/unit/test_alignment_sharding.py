"""The trainers' checks around sharded runs, on stand-in accelerator objects (the real runs are in
tests/integration/test_alignment_sharded.py): a launch that asked for sharding it did not get is
refused before training, and a saved adapter that does not match the trained weights fails."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.unit


def _trainer(kind: str, zero: dict | None = None, fsdp_version: int = 2):
    from accelerate.utils import DistributedType

    acc = SimpleNamespace(distributed_type=DistributedType[kind],
                          deepspeed_plugin=SimpleNamespace(deepspeed_config={"zero_optimization": zero or {}}),
                          state=SimpleNamespace(fsdp_plugin=SimpleNamespace(fsdp_version=fsdp_version)))
    return SimpleNamespace(accelerator=acc)


def test_fsdp_that_accelerate_turned_into_ddp_is_refused(monkeypatch):
    from agentstack.alignment.trainers.common import sharding

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    for kind in ("MULTI_CPU", "NO"):  # with use_cpu, and without: accelerate enables FSDP only on GPUs
        with pytest.raises(RuntimeError, match=f"asks for FSDP, but accelerate set up {kind}"):
            sharding(_trainer(kind))
    assert sharding(_trainer("FSDP")) == {"distributed_type": "FSDP", "fsdp_version": 2}


def test_zero3_that_cannot_gather_is_refused_before_training(monkeypatch):
    from agentstack.alignment.trainers.common import sharding

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(RuntimeError, match="zero3_save_16bit_model: true"):
        sharding(_trainer("DEEPSPEED", {"stage": 3}))
    ok = {"stage": 3, "stage3_gather_16bit_weights_on_model_save": True}
    assert sharding(_trainer("DEEPSPEED", ok)) == {"distributed_type": "DEEPSPEED", "zero_stage": 3}
    assert sharding(_trainer("DEEPSPEED", {"stage": 2}))["zero_stage"] == 2
    with pytest.raises(RuntimeError, match="asks for DeepSpeed, but accelerate set up MULTI_CPU"):
        sharding(_trainer("MULTI_CPU"))


def test_plain_runs_pass(monkeypatch):
    from agentstack.alignment.trainers.common import sharding

    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    assert sharding(_trainer("NO")) == {"distributed_type": "NO"}
    assert sharding(_trainer("MULTI_CPU")) == {"distributed_type": "MULTI_CPU"}


def test_saved_adapter_is_checked_against_the_trained_weights(tmp_path):
    import torch
    from safetensors.torch import save_file

    from agentstack.alignment.trainers.common import verify_saved

    trained = {"a.lora_A.weight": torch.randn(4, 8), "a.lora_B.weight": torch.randn(8, 4)}
    save_file(trained, str(tmp_path / "adapter_model.safetensors"))
    assert verify_saved(tmp_path, trained) == 2
    # What rank 0 wrote under ZeRO-3 before the gather: empty shards.
    save_file({"a.lora_A.weight": torch.empty(0), "a.lora_B.weight": torch.empty(0)},
              str(tmp_path / "adapter_model.safetensors"))
    with pytest.raises(RuntimeError, match=r"a.lora_A.weight: saved shape \(0,\), trained \(4, 8\)"):
        verify_saved(tmp_path, trained)
    save_file({"a.lora_A.weight": trained["a.lora_A.weight"] + 1e-3}, str(tmp_path / "adapter_model.safetensors"))
    with pytest.raises(RuntimeError, match="2 tensors.*a.lora_B.weight: missing; a.lora_A.weight: saved values differ"):
        verify_saved(tmp_path, trained)


def test_parameter_changes_come_from_the_gathered_state():
    import torch

    from agentstack.alignment.trainers.common import changed_parameters

    before = {"x": torch.zeros(2, 2), "y": torch.ones(3)}
    change = changed_parameters({"x": torch.full((2, 2), 0.5), "y": torch.ones(3), "frozen": torch.ones(1)}, before)
    assert change == {"trainable_tensors": 2, "changed_tensors": 1, "max_abs_delta": 0.5}
    with pytest.raises(RuntimeError, match="1 trainable tensors are missing"):
        changed_parameters({"x": torch.zeros(2, 2)}, before)
