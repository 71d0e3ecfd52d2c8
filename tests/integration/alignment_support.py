"""Helpers shared by the alignment integration tests: small fast settings, seeded conversations
with votes, random LoRA adapters registered as versions, and polling a job."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import APP_KEY, OPERATOR_KEY

FIX = Path(__file__).parents[1] / "fixtures" / "alignment"
APP = {"Authorization": f"Bearer {APP_KEY}"}
OP = {"Authorization": f"Bearer {OPERATOR_KEY}"}

PII_PROMPT = "I'm Johanna Lindqvist (johanna.lindqvist@corp.se). Tell me something about the number {i}."


def fast_alignment(**overrides: Any) -> dict[str, Any]:
    """``alignment`` settings for tests: small gate sets from tests/fixtures, short generations."""
    gate = {"advbench_path": str(FIX / "advbench"), "xstest_path": str(FIX / "xstest"),
            "general_prompts": str(FIX / "general_small.jsonl"), "safety_limit": 2, "xstest_limit": 2,
            "heldout_limit": 2, "max_new_tokens": 16, "safety_max_new_tokens": 16, "win_rate_scorer": "none",
            "max_kl": 1.0, "max_ppl_ratio": 2.0, **overrides.pop("gate", {})}
    return {"worker_threads": 1, "poll_s": 0.3, "cancel_grace_s": 5.0, "gate": gate, **overrides}


@contextlib.contextmanager
def alignment_server(engine: Any, data_dir: Path, **alignment: Any) -> Iterator[Any]:
    """A live server on the shared engine with these ``alignment`` settings. On exit the base
    model serves again and every adapter the module loaded is unloaded, so the next module starts
    from the base."""
    from server.app import create_app
    from tests.conftest import LiveServer, make_settings

    settings = make_settings(data_dir, alignment=alignment)
    with LiveServer(create_app(settings, engine=engine)) as srv:
        try:
            yield srv
        finally:
            router = srv.app.state.services.router
            if router.active != engine.base_name:
                router.activate(engine.base_name)
            for name in [v for v in router.versions() if v != engine.base_name]:
                asyncio.run(engine.unload_adapter(name))


def seed_siblings(db: Any, n: int, *, key: str = "app1", users: int = 3) -> list[tuple[str, str, str]]:
    """``n`` prompts (with PII in them), each with a short and a long sibling answer. Returns
    (response id, user, rating) for the votes a user who likes short answers would cast."""
    from agentstack.history.store import ResponseRecord, ResponseStore

    store = ResponseStore(db)
    votes = []
    for i in range(n):
        user = f"user{i % users}"
        msgs = [{"role": "user", "content": PII_PROMPT.format(i=i)}]
        long = (f"The number {i} is a number, and numbers like {i} are interesting because they count things, "
                "and counting things is what numbers are for.")
        answers = [f"{i} is a number.", long]
        for j, text in enumerate(answers):
            rid = f"resp-{key}-{i}-{j}"
            store.record(ResponseRecord(id=rid, key_id=key, user_id=user, endpoint="chat.completions",
                                        model="agentstack", model_version="SmolLM2-135M-Instruct", messages=msgs,
                                        params={"max_tokens": 64}, answer=text,
                                        parent_id=None if j == 0 else f"resp-{key}-{i}-0"))
            votes.append((rid, user, "up" if j == 0 else "down"))
    return votes


def vote_all(url: str, votes: list[tuple[str, str, str]]) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        for rid, user, rating in votes:
            r = client.post("/v1/feedback", json={"response_id": rid, "rating": rating},
                            headers={**APP, "X-User-Id": user})
            assert r.status_code == 200, r.text


def tiny_job(**overrides: Any) -> dict[str, Any]:
    spec = {"method": "dpo", "hyperparameters": {"max_steps": 2, "batch_size": 2, "max_length": 96, "lora_r": 4,
                                                 "lora_alpha": 8},
            "thresholds": {"min_pairs": 4, "heldout_fraction": 0.2}}
    for key, value in overrides.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) and isinstance(spec.get(key), dict) else value
    return spec


def wait_job(url: str, job_id: str, *, until: Any = None, timeout: float = 400) -> dict[str, Any]:
    """Poll the job until ``until(job)`` (default: ended, with its promotion recorded if it succeeded)."""
    def done(job: dict[str, Any]) -> bool:
        return job["status"] in ("failed", "cancelled") or (job["status"] == "succeeded" and bool(job["promotion"]))

    until = until or done
    deadline = time.monotonic() + timeout
    while True:
        job = httpx.get(f"{url}/v1/admin/alignment/jobs/{job_id}", headers=OP, params={"log_lines": 60},
                        timeout=60).json()
        if until(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} did not get there in {timeout} s: {job['status']} "
                                 f"{job['stage']}\n" + "\n".join(job.get("log_tail") or []))
        time.sleep(0.3)


def trainer_pids(job_id: str) -> list[int]:
    """Live training processes of the job (their command line names the job's config file)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "agentstack.alignment.train" in cmd and job_id in cmd:
                pids.append(int(proc.name))
    return pids


def random_adapter(engine: Any, path: Path, *, seed: int = 0, scale: float = 1.0, **config: Any) -> Path:
    """A real LoRA on the base model with random (non-zero) weights, multiplied by ``scale``;
    ``config`` overrides peft ``LoraConfig`` fields (r, use_dora, modules_to_save, ...)."""
    from agentstack.compute import worker

    def build() -> None:
        import torch
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(seed)
        base = copy.deepcopy(engine._versions[engine.base_name].module)
        options = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"], "init_lora_weights": False,
                   **config}
        model = get_peft_model(base, LoraConfig(**options))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.mul_(scale)
        model.save_pretrained(str(path))

    worker().run(build)
    return path


def register(registry_root: Path, adapter: Path, *, passed: bool | None = True, method: str = "test") -> str:
    """Register ``adapter`` as a version; ``passed`` writes a gate decision (None: never gated)."""
    from agentstack.alignment.registry import ModelRegistry

    reg = ModelRegistry(registry_root)
    version = reg.register(adapter, {"method": method, "base_model": {"name": "SmolLM2-135M-Instruct"}})
    if passed is not None:
        reg.write_gate(version.name, {"passed": passed, "summary": "PASS (test)" if passed else "REJECT (test)"})
    return version.name
