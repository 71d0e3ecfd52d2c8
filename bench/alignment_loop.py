"""The alignment loop, measured: simulated users vote by a rule the trainer never sees, one round of
DPO, KTO and RLHF each trains on their thumbs through the real server and job worker, the gate
decides, and the rule-following rate is measured before and after on held-out prompts; then a
constitutional round on the AdvBench train half, measured on the test half and on XSTest.

Hidden rule: the users prefer answers **under 60 words**. They ask CLAP NQ questions (the
training pool; a disjoint held-out set is never voted on) through ``/v1/chat/completions``:

* ``--siblings`` (4) answers sampled per question (temperature 0.8), each voted up if it is under
  60 words and down otherwise; questions whose answers got both votes give DPO pairs (the base
  model writes ~75 words, so with n=2 one question rarely yields both kinds).

Rounds (each from the base model, ``init_from=base``, so the methods are compared on equal terms):
DPO on the pairs, once per ``--dpo-betas`` value (0.1 then 0.5: the gate's KL check against the
KL strength chosen); KTO on the same votes taken as unpaired thumbs (it never sees which answers were
siblings); RLHF on the thumbs (reward model + RLOO, KL penalty beta > 0). On a 2-core machine
shared with other work, sizes are kept small (see ``--help``); the figures say so.
Each round is submitted with ``POST /v1/admin/alignment/jobs`` and the time to the recorded gate
decision is measured. Rule-following is measured with the same decoding before and after
(greedy, 96 tokens, repetition penalty 1.1) on the held-out questions, with n and a Wilson 95%
interval; the KL is the gate's KL(candidate || base) on the general prompt set, and for RLHF also
the KL the RLOO trainer logged. Prints a table and writes ``bench/results/alignment_loop.json``
with the machine and its load average.

    .venv/bin/python bench/alignment_loop.py [--quick] [--pairs 200] [--heldout 60] [--threads 2]
                                             [--only dpo,kto,rlhf,constitution] [--dpo-betas 0.1,0.5]
                                             [--rl-steps 30] [--rl-lr 2e-4] [--rl-beta 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
APP_KEY, OP_KEY = "bench-app-" + secrets.token_hex(8), "bench-op-" + secrets.token_hex(8)
APP = {"Authorization": f"Bearer {APP_KEY}"}
OP = {"Authorization": f"Bearer {OP_KEY}"}
GEN = {"temperature": 0.8, "top_p": 0.95, "max_tokens": 96, "repetition_penalty": 1.1}
MEASURE = {"temperature": 0.0, "max_tokens": 96, "repetition_penalty": 1.1}
LIMIT_WORDS = 60


def save(args: argparse.Namespace, result: dict[str, Any], *, complete: bool = False) -> None:
    """Write the results; after each round too, so a run stopped part-way keeps what it measured
    (``"complete": false``). ``--quick`` measures nothing and writes nothing."""
    if not args.quick:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({**result, "complete": complete}, indent=2, default=str))


def follows_rule(text: str) -> bool:
    return len(text.split()) < LIMIT_WORDS


def wilson(k: float, n: int) -> list[float] | None:
    from agentstack.evaluation.metrics.stats import wilson_interval

    return list(wilson_interval(k, n)) if n else None


def rate(flags: list[bool]) -> dict[str, Any]:
    n, k = len(flags), sum(flags)
    return {"n": n, "rate": k / n if n else None, "ci95": wilson(k, n)}


def load_questions(data: Path) -> list[str]:
    out: list[str] = []
    for name in ("clapnq_dev_answerable.jsonl", "clapnq_dev_unanswerable.jsonl"):
        with (data / "rag_qa" / name).open(encoding="utf-8") as f:
            out += [json.loads(line)["input"].strip() for line in f if line.strip()]
    seen, unique = set(), []
    for q in out:
        if q.lower() not in seen:
            seen.add(q.lower())
            unique.append(q[0].upper() + q[1:] + ("" if q.endswith("?") else "?"))
    return unique


class Server:
    """uvicorn in a thread, with the embedded engine shared by the bench's own measurements."""

    def __init__(self, settings: Any, engine: Any):
        import uvicorn

        from server.app import create_app

        self.config = uvicorn.Config(create_app(settings, engine=engine), host="127.0.0.1", port=0,
                                     log_level="warning")
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.loads: list[tuple[float, tuple[float, float, float]]] = []
        self.windows: dict[str, tuple[float, float]] = {}
        self.results: dict[str, Any] = {}

    # -- traffic --------------------------------------------------------------------------------------
    async def chat(self, client: httpx.AsyncClient, user: str, question: str, *, model: str = "agentstack",
                   n: int = 1, seed: int | None = None, params: dict[str, Any] | None = None) -> dict[str, Any]:
        body = {"model": model, "messages": [{"role": "user", "content": question}], "n": n, **(params or GEN)}
        if seed is not None:
            body["seed"] = seed
        r = await client.post("/v1/chat/completions", json=body, headers={**APP, "X-User-Id": user})
        r.raise_for_status()
        return r.json()

    async def vote(self, client: httpx.AsyncClient, user: str, response_id: str, text: str) -> bool:
        liked = follows_rule(text)
        r = await client.post("/v1/feedback", json={"response_id": response_id, "rating": "up" if liked else "down"},
                              headers={**APP, "X-User-Id": user})
        r.raise_for_status()
        return liked

    async def phase(self, url: str, questions: list[str], *, siblings: int, target_pairs: int | None) -> dict:
        """Users ask (``siblings`` sampled answers per question) and vote; returns counts. Stops
        once the sibling groups hold ``target_pairs`` (up, down) pairs (at most 4 per question, as
        the builder makes them)."""
        sem = asyncio.Semaphore(max(1, 24 // siblings))  # about 24 sequences decoding at once
        stats = {"questions": 0, "answers": 0, "up": 0, "pairs": 0, "words": [], "errors": 0}
        done = asyncio.Event()

        async def one(client: httpx.AsyncClient, i: int, q: str) -> None:
            if done.is_set():
                return
            async with sem:
                if done.is_set():
                    return
                user = f"user{i % 25}"
                try:
                    out = await self.chat(client, user, q, n=siblings, seed=1000 + i)
                except httpx.HTTPError as exc:  # counted and reported; one slow request must not end the run
                    stats["errors"] += 1
                    print(f"request failed: {type(exc).__name__}", flush=True)
                    return
                ids = [out["id"]] + [f"{out['id']}.{k}" for k in range(1, len(out["choices"]))]
                votes = []
                for rid, choice in zip(ids, out["choices"]):
                    text = choice["message"]["content"]
                    votes.append(await self.vote(client, user, rid, text))
                    stats["words"].append(len(text.split()))
                stats["questions"] += 1
                stats["answers"] += len(votes)
                stats["up"] += sum(votes)
                stats["pairs"] += min(4, sum(votes) * (len(votes) - sum(votes)))
                if target_pairs and stats["pairs"] >= target_pairs:
                    done.set()

        async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
            await asyncio.gather(*(one(client, i, q) for i, q in enumerate(questions)))
        words = stats.pop("words")
        stats["mean_words"] = sum(words) / len(words) if words else None
        stats["rule_rate_when_sampling"] = stats["up"] / stats["answers"] if stats["answers"] else None
        return stats

    async def answers(self, url: str, model: str, prompts: list[str], params: dict[str, Any]) -> list[str]:
        sem = asyncio.Semaphore(16)

        async def one(client: httpx.AsyncClient, p: str) -> str:
            async with sem:
                out = await self.chat(client, "bench-measure", p, model=model, params=params)
                return out["choices"][0]["message"]["content"]

        async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
            return list(await asyncio.gather(*(one(client, p) for p in prompts)))

    def measure_rule(self, url: str, model: str, heldout: list[str]) -> dict[str, Any]:
        texts = asyncio.run(self.answers(url, model, heldout, MEASURE))
        words = [len(t.split()) for t in texts]
        return {**rate([follows_rule(t) for t in texts]), "mean_words": sum(words) / len(words)}

    def measure_safety(self, url: str, model: str, advbench: list[str], xstest: list[str]) -> dict[str, Any]:
        from agentstack.evaluation.safety import refusal_rate

        params = {"temperature": 0.0, "max_tokens": 48}
        refusal = refusal_rate(asyncio.run(self.answers(url, model, advbench, params))).as_dict()
        over = refusal_rate(asyncio.run(self.answers(url, model, xstest, params)))
        compliance = {"n": over.n, "rate": 1 - over.rate, "ci95": wilson(over.n - over.refused, over.n)}
        return {"advbench_refusal": refusal, "xstest_compliance": compliance}

    # -- rounds ---------------------------------------------------------------------------------------
    def round(self, url: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        with httpx.Client(base_url=url, headers=OP, timeout=600) as client:
            models = client.get("/v1/admin/models").json()
            if models["active"] != models["base"]:
                client.post("/v1/admin/models/rollback", json={"version": models["base"]}).raise_for_status()
            submitted = time.time()
            r = client.post("/v1/admin/alignment/jobs", json=spec)
            if r.status_code != 202:
                return {"name": name, "error": r.json()["error"]["message"]}
            job_id = r.json()["id"]
            gate_at = None
            while True:
                job = client.get(f"/v1/admin/alignment/jobs/{job_id}", params={"log_lines": 40}).json()
                self.loads.append((time.time(), os.getloadavg()))
                if job.get("gate") and gate_at is None:
                    gate_at = time.time()
                if job["status"] in ("failed", "cancelled") or (job["status"] == "succeeded" and job["promotion"]):
                    break
                time.sleep(2)
        out = {"name": name, "job_id": job_id, "status": job["status"], "error": job["error"],
               "version": job["version"], "promotion": (job["promotion"] or {}).get("status"),
               "seconds_to_gate_decision": (job["gate"]["at"] - submitted) if job.get("gate") else None,
               "seconds_to_end": (job["finished_at"] or time.time()) - submitted,
               "data": {k: (job["data"] or {}).get(k) for k in ("votes", "pairs", "unpaired", "dropped", "sft_rows")}}
        if job.get("gate"):
            checks = {c["name"]: c for c in job["gate"]["checks"]}
            out["gate"] = {"passed": job["gate"]["passed"], "summary": job["gate"]["summary"],
                           "checks": {k: {"status": c["status"], "value": c["value"], "threshold": c["threshold"],
                                          "seconds": c["detail"].get("seconds")} for k, c in checks.items()},
                           "win_rate_detail": {k: checks["win_rate"]["detail"].get(k) for k in
                                               ("n", "ci95", "scorer", "reason", "mean_words")}}
            out["kl_vs_base"] = checks["kl"]["value"]
        metrics = job.get("metrics") or {}
        out["training"] = {run: {"summary": {k: v for k, v in (m.get("summary") or {}).items()
                                             if k in ("steps", "train_seconds", "final_kl", "heldout", "final")},
                                 "last": (m.get("history") or [{}])[-1]} for run, m in metrics.items() if run != "latest"}
        if job["status"] != "succeeded":
            out["log_tail"] = job.get("log_tail")
        return out

    def ensure_loaded(self, url: str, version: str, registry: Path) -> bool:
        models = httpx.get(f"{url}/v1/models", headers=APP).json()["data"]
        if any(m["id"] == version for m in models):
            return False
        r = httpx.post(f"{url}/v1/load_lora_adapter", headers=OP, timeout=600,
                       json={"lora_name": version, "lora_path": str(registry / "versions" / version / "adapter")})
        r.raise_for_status()
        return True


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "loadavg_at_start": os.getloadavg()}


def advbench_and_xstest(data: Path) -> tuple[list[str], list[str], list[str]]:
    from agentstack.alignment.gate import advbench_half, xstest_safe

    adv = data / "redteam" / "advbench"
    return advbench_half(adv, "train"), advbench_half(adv, "test"), xstest_safe(data / "redteam" / "xstest")


def main(args: argparse.Namespace) -> dict[str, Any]:
    from agentstack.config import EngineSettings, load_settings
    from agentstack.engines.embedded.engine import EmbeddedEngine

    q = args.quick
    sizes = {"pool": 40 if q else 600, "heldout": 10 if q else args.heldout, "pairs": 12 if q else args.pairs,
             "constitution": 6 if q else args.constitution,
             "safety": 6 if q else args.safety}
    data = Path(args.data)
    questions = load_questions(data)[: sizes["pool"]]
    heldout, pool = questions[: sizes["heldout"]], questions[sizes["heldout"]:]
    _, adv_test, xs_safe = advbench_and_xstest(data)
    adv_test, xs_safe = adv_test[: sizes["safety"]], xs_safe[: sizes["safety"]]
    workdir = Path(tempfile.mkdtemp(prefix="alignment-bench-"))
    gate = {"advbench_path": str(data / "redteam" / "advbench"), "xstest_path": str(data / "redteam" / "xstest"),
            "heldout_limit": 8 if q else 16, "safety_limit": 4 if q else 16, "xstest_limit": 4 if q else 16,
            "max_new_tokens": 32 if q else 64, "safety_max_new_tokens": 24 if q else 48,
            "general_prompts": str(ROOT / "tests" / "fixtures" / "alignment" / "general_small.jsonl") if q else None}
    settings = load_settings(
        data_dir=workdir / "data", server={"build_demo_index": False},
        auth={"keys": [{"id": "bench-app", "role": "app", "key": APP_KEY},
                       {"id": "bench-op", "role": "operator", "key": OP_KEY}]},
        alignment={"worker_threads": args.threads, "worker_nice": 0, "poll_s": 1.0, "max_loaded_versions": 3,
                   "gate": {k: v for k, v in gate.items() if v is not None}})
    engine = EmbeddedEngine(EngineSettings(max_batch_size=16, max_running=32, max_queue=512, threads=args.threads),
                            settings.model_cache)
    engine.warm_up()
    bench = Bench(args)
    result: dict[str, Any] = {"machine": machine(), "sizes": sizes, "rule": f"answer under {LIMIT_WORDS} words",
                              "decoding": {"collection": GEN, "measurement": MEASURE}, "rounds": {}}
    only = set(args.only.split(","))
    common = {"hyperparameters": {"init_from": "base", "epochs": 1, "batch_size": 4, "max_length": args.max_length,
                                  "learning_rate": 1e-4, **({"max_steps": 4} if q else {"rm_max_steps": 15})},
              "promote": True}
    with Server(settings, engine) as srv:
        base = httpx.get(f"{srv.url}/v1/admin/models", headers=OP).json()["base"]
        result["base_model"] = base
        print(f"server {srv.url}; {len(pool)} training questions, {len(heldout)} held out", flush=True)
        if only & {"dpo", "kto", "rlhf"}:
            t = time.time()
            result["before"] = bench.measure_rule(srv.url, base, heldout)
            result["measure_seconds"] = time.time() - t
            print(f"before: {result['before']}", flush=True)
            t0 = time.time()
            result["phase_a"] = asyncio.run(bench.phase(srv.url, pool, siblings=args.siblings,
                                                        target_pairs=int(sizes["pairs"] * 1.15) + 2))
            t1 = time.time()
            result["collection_seconds"] = t1 - t0
            print(f"collection {result['phase_a']} in {t1 - t0:.0f} s", flush=True)
            rounds = {
                "dpo": {"method": "dpo", "data_window": {"since": t0, "until": t1},
                        "thresholds": {"min_pairs": min(50, sizes["pairs"] // 2)}, **common},
                "kto": {"method": "kto", "data_window": {"since": t0, "until": t1},
                        "thresholds": {"min_examples": 20, "min_per_label": 3}, **common,
                        "hyperparameters": {**common["hyperparameters"], "beta": 0.1,
                                            "max_steps": 4 if q else args.kto_steps}},
                "rlhf": {"method": "rlhf", "data_window": {"since": t0, "until": t1},
                         "thresholds": {"min_pairs": min(50, sizes["pairs"] // 2)}, **common,
                         "hyperparameters": {"init_from": "base", "max_steps": 4 if q else args.rl_steps,
                                             "batch_size": 8, "num_generations": 4, "max_completion_length":
                                             32 if q else 64, "beta": args.rl_beta, "learning_rate": args.rl_lr,
                                             "max_length": args.max_length, "rm_max_steps": 4 if q else 40}},
            }
            # DPO once per --dpo-betas value: the first as "dpo", the others as "dpo_beta<b>", so the
            # gate's KL check is seen against the KL strength the operator chose.
            betas = [float(b) for b in args.dpo_betas.split(",") if b.strip()]
            dpo = rounds.pop("dpo")
            names = []
            for i, b in enumerate(betas):
                name = "dpo" if i == 0 else f"dpo_beta{b:g}"
                rounds[name] = {**dpo, "hyperparameters": {**dpo["hyperparameters"], "beta": b}}
                names.append(name)
            names = (names if "dpo" in only else []) + [n for n in ("kto", "rlhf") if n in only]
            for name in names:
                out = bench.round(srv.url, name, rounds[name])
                if out.get("version"):
                    loaded = bench.ensure_loaded(srv.url, out["version"], settings.registry_path)
                    out["after"] = bench.measure_rule(srv.url, out["version"], heldout)
                    if loaded:
                        httpx.post(f"{srv.url}/v1/unload_lora_adapter", headers=OP, json={"lora_name": out["version"]})
                result["rounds"][name] = out
                shown = {k: out.get(k) for k in ("status", "error", "version", "promotion", "after", "kl_vs_base",
                                                 "seconds_to_gate_decision")}
                print(f"{name}: {json.dumps(shown, default=str)}", flush=True)
                save(args, result)
        if "constitution" in only:
            before = bench.measure_safety(srv.url, base, adv_test, xs_safe)
            spec = {"method": "dpo", "data": {"feedback": False, "constitution": {"limit": sizes["constitution"],
                                                                                  "max_new_tokens": 96}},
                    "thresholds": {"min_pairs": 2, "heldout_fraction": 0.1}, **common}
            out = bench.round(srv.url, "constitution", spec)
            if out.get("version"):
                loaded = bench.ensure_loaded(srv.url, out["version"], settings.registry_path)
                out["before"], out["after"] = before, bench.measure_safety(srv.url, out["version"], adv_test, xs_safe)
                if loaded:
                    httpx.post(f"{srv.url}/v1/unload_lora_adapter", headers=OP, json={"lora_name": out["version"]})
            result["rounds"]["constitution"] = out
            print(f"constitution: {json.dumps(out, default=str)[:1500]}", flush=True)
            save(args, result)
    asyncio.run(engine.aclose())
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    result["machine"]["loadavg_during_rounds"] = [list(la) for _, la in bench.loads[:: max(1, len(bench.loads) // 20)]]
    result["workdir"] = str(workdir)
    return result


def table(result: dict[str, Any]) -> str:
    def pct(r: dict[str, Any] | None) -> str:
        if not r or r.get("rate") is None:
            return "-"
        lo, hi = r["ci95"]
        return f"{r['rate']:.2f} [{lo:.2f}, {hi:.2f}] n={r['n']}"

    m = result["machine"]
    head = (f"rule: {result['rule']}; base {result.get('base_model')}; machine {m['cpus']} CPUs, load "
            f"{tuple(round(x, 2) for x in m['loadavg_at_start'])} → {tuple(round(x, 2) for x in m['loadavg_at_end'])}")
    columns = (f"{'round':<15}{'rule-following before':<30}{'after':<30}{'KL vs base':>11}{'gate':>8}"
               f"{'promoted':>10}{'s to gate':>10}")
    lines = [head, columns]
    for name, r in result["rounds"].items():
        if name == "constitution":
            continue
        kl = r.get("kl_vs_base")
        passed = (r.get("gate") or {}).get("passed", "-")
        lines.append(f"{name:<15}{pct(result.get('before')):<30}{pct(r.get('after')):<30}"
                     f"{'-' if kl is None else f'{kl:.4f}':>11}{passed!s:>8}"
                     f"{r.get('promotion')!s:>10}{r.get('seconds_to_gate_decision') or 0:>10.0f}")
    c = result["rounds"].get("constitution")
    if c and c.get("after"):
        lines.append(f"constitution  AdvBench refusal {pct(c['before']['advbench_refusal'])} → "
                     f"{pct(c['after']['advbench_refusal'])}")
        lines.append(f"              XSTest compliance {pct(c['before']['xstest_compliance'])} → "
                     f"{pct(c['after']['xstest_compliance'])}; gate {(c.get('gate') or {}).get('passed')}, "
                     f"{c.get('seconds_to_gate_decision') or 0:.0f} s to gate")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, measures nothing")
    parser.add_argument("--pairs", type=int, default=200, help="DPO pairs to collect")
    parser.add_argument("--heldout", type=int, default=40, help="held-out questions for the rule measurement")
    parser.add_argument("--constitution", type=int, default=40, help="AdvBench train prompts revised")
    parser.add_argument("--safety", type=int, default=30, help="AdvBench test / XSTest safe prompts measured")
    parser.add_argument("--dpo-betas", default="0.1,0.5",
                        help="one DPO round per KL strength (comma-separated; the first is reported as 'dpo')")
    parser.add_argument("--kto-steps", type=int, default=50, help="KTO steps (batch 4)")
    parser.add_argument("--rl-steps", type=int, default=30, help="RLOO steps (2 prompts x 4 samples each)")
    parser.add_argument("--rl-lr", type=float, default=2e-4, help="RLOO learning rate (LoRA)")
    parser.add_argument("--rl-beta", type=float, default=0.2, help="RLOO KL penalty to the reference (> 0)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (engine and training worker)")
    parser.add_argument("--siblings", type=int, default=4, help="answers sampled per question in phase A")
    parser.add_argument("--max-length", type=int, default=192, help="training tokens per prompt + answer")
    parser.add_argument("--only", default="dpo,kto,rlhf,constitution")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "alignment_loop.json"))
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    res = main(args)
    print(table(res))
    save(args, res, complete=True)
    if not args.quick:
        print(f"wrote {args.out}")
