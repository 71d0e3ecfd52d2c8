"""The model registry (atomic versions, manifest last, hashes, deployments) and the job spec."""

from __future__ import annotations

import json

import pytest

from agentstack.errors import ConflictError, InvalidRequestError, NotFoundError

pytestmark = pytest.mark.unit


def fake_adapter(directory, value: float = 1.0):
    import torch
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "adapter_config.json").write_text(json.dumps({"r": 4, "peft_type": "LORA"}))
    save_file({"w": torch.full((2, 2), value)}, str(directory / "adapter_model.safetensors"))
    return directory


def test_register_list_verify(tmp_path):
    from agentstack.alignment.registry import ModelRegistry

    reg = ModelRegistry(tmp_path / "registry")
    v1 = reg.register(fake_adapter(tmp_path / "a1"), {"method": "dpo", "base_model": {"name": "base"}})
    v2 = reg.register(fake_adapter(tmp_path / "a2", 2.0), {"method": "kto"},
                      extra_dirs={"reward_model": fake_adapter(tmp_path / "rm")})
    assert (v1.name, v2.name) == ("v1-dpo", "v2-kto")
    assert [v.name for v in reg.list()] == ["v1-dpo", "v2-kto"]
    assert v1.metadata["version"] == "v1-dpo" and v1.metadata["base_model"]["name"] == "base"
    files = v2.manifest["files"]
    assert set(files) == {"adapter/adapter_config.json", "adapter/adapter_model.safetensors", "metadata.json",
                          "reward_model/adapter_config.json", "reward_model/adapter_model.safetensors"}
    assert v1.manifest["content_hash"] != v2.manifest["content_hash"]
    assert reg.verify("v2-kto").reward_model_dir is not None
    (v1.adapter_dir / "adapter_model.safetensors").write_bytes(b"tampered")
    with pytest.raises(ConflictError, match="does not match its manifest"):
        reg.verify("v1-dpo")
    with pytest.raises(NotFoundError):
        reg.get("v9-dpo")
    with pytest.raises(NotFoundError):
        reg.get("../../etc")


def test_incomplete_versions_are_invisible_and_cleaned(tmp_path):
    from agentstack.alignment.registry import ModelRegistry

    reg = ModelRegistry(tmp_path / "registry")
    leftover = reg.versions_dir / ".tmp-v1-dpo-dead"
    leftover.mkdir(parents=True)
    no_manifest = reg.versions_dir / "v7-dpo"
    no_manifest.mkdir()
    assert reg.list() == [] and not reg.exists("v7-dpo")
    v = reg.register(fake_adapter(tmp_path / "a"), {"method": "dpo"})
    assert v.name == "v1-dpo" and not leftover.exists()


def test_register_refuses_pickled_or_missing_adapters(tmp_path):
    from agentstack.alignment.registry import ModelRegistry

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_config.json").write_text("{}")
    (bad / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(InvalidRequestError, match="safetensors"):
        ModelRegistry(tmp_path / "registry").register(bad, {"method": "dpo"})


def test_gate_file_is_kept_beside_the_version(tmp_path):
    from agentstack.alignment.registry import ModelRegistry

    reg = ModelRegistry(tmp_path / "registry")
    v = reg.register(fake_adapter(tmp_path / "a"), {"method": "dpo"})
    assert v.gate is None
    reg.write_gate(v.name, {"passed": True, "summary": "PASS"})
    assert reg.get(v.name).summary()["gate"]["passed"] is True
    reg.verify(v.name)  # the gate file is an addendum, not part of the content hash


def test_job_spec_validation_and_overrides(settings):
    from pydantic import ValidationError

    from agentstack.alignment.spec import JobSpec

    spec = JobSpec.model_validate({"method": "kto", "thresholds": {"min_examples": 8}, "gate": {"max_kl": 0.3},
                                   "data_window": {"days": 1}})
    assert spec.preferences(settings).min_examples == 8 and spec.preferences(settings).min_pairs == 50
    assert spec.gate_settings(settings).max_kl == 0.3
    since, until = spec.data_window.resolve(now=86400 * 10)
    assert (since, until) == (86400 * 9, None)
    assert spec.should_promote(settings) is settings.alignment.auto_promote
    for bad in ({"method": "ppo"}, {"thresholds": {"min_pairs": 0}}, {"thresholds": {"nope": 1}},
                {"gate": {"max_ppl_ratio": 0.9}}, {"method": "sft"}, {"hyperparameters": {"beta": -1}},
                {"data_window": {"since": 10, "until": 5}}, {"method": "kto", "data": {"feedback": False}}):
        with pytest.raises(ValidationError):
            JobSpec.model_validate(bad)
