"""The training launcher's command lines (one process, accelerate on one machine, several machines)
and the job spec's launcher fields that feed them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

CONFIGS = Path(__file__).parents[2] / "agentstack" / "alignment" / "accelerate"
ZERO3 = CONFIGS / "zero3.yaml"


def _launcher(**fields):
    from agentstack.alignment.spec import JobSpec

    return JobSpec.model_validate({"launcher": fields}).launcher


def test_multi_machine_launcher_is_accepted():
    launcher = _launcher(kind="accelerate", config_file=str(ZERO3), num_processes=16, num_machines=2,
                         main_process_ip="10.0.0.1", main_process_port=29500)
    assert (launcher.num_machines, launcher.main_process_ip, launcher.main_process_port) == (2, "10.0.0.1", 29500)
    assert _launcher(num_machines=4, main_process_ip="trainer-0.trainers.ml.svc", main_process_port=29500)
    assert _launcher().num_machines == 1  # one machine unless asked


@pytest.mark.parametrize(("fields", "message"), [
    ({"num_machines": 2}, "needs launcher.main_process_ip and launcher.main_process_port"),
    ({"num_machines": 2, "main_process_ip": "h"}, "needs launcher.main_process_port"),
    ({"num_machines": 2, "kind": "process", "main_process_ip": "h", "main_process_port": 29500},
     "needs launcher.kind 'accelerate'"),
    ({"num_machines": 3, "main_process_ip": "h", "main_process_port": 29500, "num_processes": 4},
     "must be a multiple of launcher.num_machines (3)"),
    ({"num_machines": 2, "main_process_ip": "h", "main_process_port": 29500, "num_processes": 1},
     "must be a multiple of launcher.num_machines (2)"),
    ({"main_process_ip": "10.0.0.1"}, "only used with launcher.num_machines > 1"),
    ({"num_machines": 2, "main_process_ip": "a b; rm -rf /", "main_process_port": 29500}, "main_process_ip"),
    ({"num_machines": 2, "main_process_ip": "h", "main_process_port": 80}, "main_process_port"),
    ({"num_machines": 0}, "num_machines"),
    ({"machine_rank": 1}, "machine_rank"),  # the job's worker is always rank 0; others use `follow`
])
def test_bad_launcher_fields_are_refused_with_the_fix(fields, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as e:
        _launcher(**fields)
    assert message in str(e.value)


def test_command_lines(tmp_path):
    from agentstack.alignment import launch

    cfg = tmp_path / "policy.json"
    entry = ["-m", "agentstack.alignment.train", str(cfg)]
    assert launch.command(cfg) == [sys.executable, *entry]
    single = launch.command(cfg, kind="accelerate", accelerate_config=ZERO3, num_processes=4)
    assert single[:8] == [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ZERO3),
                          "--num_processes", "4", "--main_process_port"]
    assert int(single[8]) > 0 and single[9:] == entry and "--num_machines" not in single
    node1 = launch.command(cfg, kind="accelerate", accelerate_config=ZERO3, num_processes=16, num_machines=2,
                           machine_rank=1, main_process_ip="10.0.0.1", main_process_port=29500)
    assert node1 == [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ZERO3),
                     "--num_processes", "16", "--num_machines", "2", "--machine_rank", "1",
                     "--main_process_ip", "10.0.0.1", "--main_process_port", "29500", *entry]


@pytest.mark.parametrize(("fields", "message"), [
    ({"kind": "process", "num_machines": 2}, "needs launcher kind 'accelerate'"),
    ({"kind": "accelerate", "accelerate_config": None}, "needs an accelerate config file"),
    ({"kind": "accelerate", "accelerate_config": ZERO3, "num_machines": 2}, "needs main_process_ip"),
    ({"kind": "accelerate", "accelerate_config": ZERO3, "num_machines": 2, "main_process_ip": "h",
      "main_process_port": 29500, "machine_rank": 2}, "machine_rank must be in [0, 1]"),
    ({"kind": "accelerate", "accelerate_config": ZERO3, "num_machines": 2, "main_process_ip": "h",
      "main_process_port": 29500, "num_processes": 3}, "multiple of num_machines (2)"),
])
def test_command_refuses_what_cannot_start(tmp_path, fields, message):
    from agentstack.alignment import launch

    with pytest.raises(launch.TrainingFailed, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        launch.command(tmp_path / "c.json", **fields)


def test_spec_settings_and_follower_agree(tmp_path, settings):
    """What a job asks for, resolved over the settings, is what the worker runs as rank 0 and what a
    follower machine reads back from the step config to run as its own rank."""
    from agentstack.alignment import launch

    spec = _launcher(kind="accelerate", config_file=str(ZERO3), num_processes=4, num_machines=2,
                     main_process_ip="10.0.0.1", main_process_port=29500)
    resolved = launch.resolve(settings, spec.model_dump())
    assert resolved == {"kind": "accelerate", "accelerate_config": str(ZERO3), "num_processes": 4,
                        "num_machines": 2, "main_process_ip": "10.0.0.1", "main_process_port": 29500}
    cfg = tmp_path / "policy.json"
    cfg.write_text(json.dumps({"method": "dpo", "launcher": resolved}))
    rank0 = launch.command(cfg, **resolved)
    rank1 = launch.follower_command(cfg, 1)
    assert rank0[rank0.index("--machine_rank") + 1] == "0" and rank1[rank1.index("--machine_rank") + 1] == "1"
    rank1[rank1.index("--machine_rank") + 1] = "0"
    assert rank0 == rank1  # identical but for the rank
    with pytest.raises(launch.TrainingFailed, match="rank 0 is the job's worker"):
        launch.follower_command(cfg, 0)
    single = tmp_path / "single.json"
    single.write_text(json.dumps({"method": "dpo", "launcher": launch.resolve(settings, {})}))
    with pytest.raises(launch.TrainingFailed, match="not launched on several machines"):
        launch.follower_command(single, 1)
    assert launch.resolve(settings, {})["kind"] == settings.alignment.launcher


def test_follow_waits_then_says_why(tmp_path):
    from agentstack.alignment import launch

    with pytest.raises(launch.TrainingFailed, match="did not appear within 0 s"):
        launch.follow([tmp_path / "absent.json"], 1, wait_s=0)
    assert launch.main(["follow", "--machine-rank", "1", str(tmp_path / "absent.json")]) == 2


def test_follow_runs_the_steps_that_exist_in_order(tmp_path, monkeypatch):
    """A job without a reward model writes only policy.json: the follower skips reward.json."""
    from agentstack.alignment import launch

    ran = []
    monkeypatch.setattr(launch.subprocess, "call", lambda cmd, **kw: ran.append(cmd[-1]) or 0)
    resolved = {"kind": "accelerate", "accelerate_config": str(ZERO3), "num_processes": 2, "num_machines": 2,
                "main_process_ip": "127.0.0.1", "main_process_port": 29500}
    reward, policy = tmp_path / "reward.json", tmp_path / "policy.json"
    policy.write_text(json.dumps({"method": "dpo", "launcher": resolved}))
    assert launch.follow([reward, policy], 1, wait_s=5) == 0
    assert ran == [str(policy)]
    reward.write_text(json.dumps({"method": "reward", "launcher": resolved}))
    ran.clear()
    assert launch.follow([reward, policy], 1) == 0 and ran == [str(reward), str(policy)]


def test_step_config_with_its_launcher_loads(tmp_path):
    """The worker writes the launcher into the step config; the trainer's config loader ignores it."""
    from agentstack.alignment.train import load_config

    cfg = tmp_path / "policy.json"
    cfg.write_text(json.dumps({"method": "dpo", "model_dir": "m", "output_dir": "o", "train_file": "t",
                               "launcher": {"kind": "accelerate", "num_machines": 2}}))
    method, config = load_config(cfg)
    assert method == "dpo" and config.output_dir == "o"


def test_training_environment_finds_the_interpreters_tools(monkeypatch):
    """DeepSpeed compiles its ops with the `ninja` installed beside the interpreter (a pip dependency),
    which a bare PATH does not reach."""
    import os

    from agentstack.alignment import launch

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    env = launch.environment(2)
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert env["PATH"].endswith("/usr/bin:/bin") and env["OMP_NUM_THREADS"] == "2"
    monkeypatch.setenv("PATH", env["PATH"])
    assert launch.environment(1)["PATH"] == env["PATH"]  # not added twice
