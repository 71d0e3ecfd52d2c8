"""How far each judge agrees with human preference labels, and which judges may be trusted.

Human labels: HH-RLHF pairs (a conversation, the reply people *chose*, the one they *rejected*).
For a 1-5 judge, a pair is scored twice (question = the conversation, answer = each reply), on the
probability-weighted score when the panel measures it (else the 1-5 score): the judge *agrees*
when it scores the chosen reply higher, *disagrees* when lower, *ties* when equal;
a pair where either score failed to parse is left out and counted. Agreement = (agree + ties / 2)
/ n, with a Wilson 95% interval, so 0.5 is chance. The pairwise judge is measured the same way on
its verdict (both orders, see :meth:`JudgePanel.compare`).

Judges whose inputs the labels do not cover (groundedness needs a context, similarity a ground
truth) get no agreement figure, and so are never *trusted*: the alignment gate relies on a judge
only when its agreement is at least ``evaluation.judge_min_agreement``.

Results are stored per judge model in ``<data_dir>/eval/judges/<model>.json``.
This module knows nothing about suites or HTML.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agentstack.evaluation.datasets.base import Example
from agentstack.evaluation.judges.panel import JudgePanel
from agentstack.evaluation.metrics.stats import wilson_interval
from agentstack.storage.files import atomic_write_json, read_json

LABELLED_JUDGES = ("relevance", "coherence", "fluency")  # judges HH-RLHF pairs can check


def _tally(outcomes: list[str | None]) -> dict[str, Any]:
    agree = outcomes.count("agree")
    disagree = outcomes.count("disagree")
    ties = outcomes.count("tie")
    n = agree + disagree + ties
    rate = (agree + ties / 2) / n if n else None
    return {"n": n, "agree": agree, "disagree": disagree, "ties": ties, "failures": outcomes.count(None),
            "agreement": rate, "ci95": list(wilson_interval(agree + ties / 2, n)) if n else None,
            "decisive_accuracy": agree / (agree + disagree) if agree + disagree else None}


def _outcome(chosen: float | None, rejected: float | None) -> str | None:
    if chosen is None or rejected is None:
        return None
    return "agree" if chosen > rejected else "disagree" if chosen < rejected else "tie"


async def measure_agreement(panel: JudgePanel, pairs: Sequence[Example], judges: Sequence[str] = LABELLED_JUDGES,
                            pairwise: bool = True, progress: Callable[[int, int], None] | None = None
                            ) -> dict[str, Any]:
    """Agreement of each judge with the chosen/rejected labels of ``pairs`` (``hh_rlhf`` examples:
    ``input`` = conversation, ``fields.chosen``/``fields.rejected``)."""
    for name in judges:
        panel.rubric(name)
    outcomes: dict[str, list[str | None]] = {name: [] for name in judges}
    if pairwise:
        outcomes["pairwise"] = []
    done = 0

    async def one(ex: Example) -> None:
        nonlocal done
        chosen, rejected = ex.fields["chosen"], ex.fields["rejected"]
        jobs = [panel.score(n, question=ex.input, answer=a) for n in judges for a in (chosen, rejected)]
        if pairwise:
            jobs.append(panel.compare(ex.input, chosen, rejected))
        results = await asyncio.gather(*jobs)
        for i, name in enumerate(judges):
            outcomes[name].append(_outcome(results[2 * i].value, results[2 * i + 1].value))
        if pairwise:
            verdict = results[-1].outcome
            outcomes["pairwise"].append(None if verdict is None else
                                        {"a": "agree", "b": "disagree", "tie": "tie"}[verdict])
        done += 1
        if progress:
            progress(done, len(pairs))

    await asyncio.gather(*(one(ex) for ex in pairs))
    return {"model": panel.model, "engine": getattr(panel.client.engine, "kind", "?"), "mode": panel.mode,
            "basis": "expected" if panel.weighted and panel.mode == "structured" else "score",
            "n_pairs": len(pairs), "judges": {name: _tally(o) for name, o in outcomes.items()},
            "panel": panel.stats.as_dict()}


def _safe(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", model)


def agreement_path(eval_path: Path, model: str) -> Path:
    return Path(eval_path) / "judges" / f"{_safe(model)}.json"


def save_agreement(eval_path: Path, result: dict[str, Any]) -> Path:
    path = agreement_path(eval_path, result["model"])
    atomic_write_json(path, result)
    return path


def load_agreement(eval_path: Path, model: str) -> dict[str, Any] | None:
    return read_json(agreement_path(eval_path, model), None)


def trusted_judges(agreement: dict[str, Any] | None, min_agreement: float) -> list[str]:
    """Judges whose measured agreement reaches ``min_agreement`` (the gate's rule)."""
    if not agreement:
        return []
    return sorted(name for name, t in agreement.get("judges", {}).items()
                  if t.get("agreement") is not None and t["agreement"] >= min_agreement)


def judge_trust(settings: Any, model: str | None, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """For a report: each judge's stored agreement (or ``None``) and whether it is trusted."""
    if model is None:
        return {}
    stored = load_agreement(Path(settings.eval_path), model)
    threshold = settings.evaluation.judge_min_agreement
    trusted = set(trusted_judges(stored, threshold))
    out = {}
    for name in names:
        figure = ((stored or {}).get("judges") or {}).get(name)
        out[name] = {"agreement": figure.get("agreement") if figure else None,
                     "agreement_n": figure.get("n") if figure else None,
                     "trusted": name in trusted, "min_agreement": threshold}
    return out
