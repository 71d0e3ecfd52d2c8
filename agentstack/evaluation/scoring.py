"""Suite metrics by name: per-example scores, corpus-level figures, and their aggregation.

A suite lists metrics by name (``rouge``, ``bleu`` …) or as ``{name: bleu, tokenize: zh}``. Each
name maps to a per-example scorer (numbers, stored in the run's checkpoint) and optionally a
corpus scorer (figures that are not means of per-example numbers: corpus BLEU and chrF, the
refusal rate with its Wilson interval). More metrics register with :func:`register_metric`.

Per-example scores are ``None`` where a metric does not apply (no reference); aggregates leave
those out and report the ``n`` they rest on.

This module knows nothing about engines, files or HTML.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agentstack.errors import InvalidRequestError
from agentstack.evaluation.datasets.base import Example
from agentstack.evaluation.metrics import text as textm
from agentstack.evaluation.metrics.retrieval import retrieval_scores
from agentstack.evaluation.metrics.stats import summarize
from agentstack.evaluation.safety import classify_refusal, refusal_rate
from agentstack.evaluation.systems import Prediction

Scores = dict[str, float | None]
PerExample = Callable[..., Scores | Awaitable[Scores]]
Corpus = Callable[..., dict[str, Any]]


@dataclass
class MetricDef:
    name: str
    per_example: PerExample
    corpus: Corpus | None = None
    needs_reference: bool = False


METRICS: dict[str, MetricDef] = {}


def register_metric(name: str, per_example: PerExample, corpus: Corpus | None = None,
                    needs_reference: bool = False) -> None:
    METRICS[name] = MetricDef(name, per_example, corpus, needs_reference)


@dataclass
class MetricSpec:
    name: str
    options: dict[str, Any]


def parse_metric_specs(items: list[str | dict[str, Any]]) -> list[MetricSpec]:
    specs = []
    for item in items:
        if isinstance(item, str):
            name, options = item, {}
        elif isinstance(item, dict) and "name" in item:
            name, options = item["name"], {k: v for k, v in item.items() if k != "name"}
        else:
            raise InvalidRequestError(f"metric entry {item!r} must be a name or a mapping with `name`",
                                      param="metrics")
        if name not in METRICS:
            raise InvalidRequestError(f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))}",
                                      param="metrics", fix="use one of the listed metrics (judges go under `judges`)")
        specs.append(MetricSpec(name, options))
    return specs


class ScoringContext:
    """Lazily built helpers some metrics need (the embedder for ``semantic``)."""

    def __init__(self, settings: Any = None, embedder: Any = None):
        self.settings = settings
        self._embedder = embedder

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from agentstack.embeddings import build_embedder

            if self.settings is None:
                raise InvalidRequestError("the semantic metric needs an embedder", param="metrics")
            self._embedder = build_embedder(self.settings.embedder)
        return self._embedder


async def score_example(specs: list[MetricSpec], example: Example, prediction: Prediction,
                        ctx: ScoringContext) -> Scores:
    out: Scores = {}
    for spec in specs:
        metric = METRICS[spec.name]
        if metric.needs_reference and not example.references:
            continue
        result = metric.per_example(example, prediction, ctx, **spec.options)
        if inspect.isawaitable(result):
            result = await result
        out.update(result)
    return out


def corpus_scores(specs: list[MetricSpec], pairs: list[tuple[Example, Prediction]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for spec in specs:
        metric = METRICS[spec.name]
        if metric.corpus is None:
            continue
        usable = [(e, p) for e, p in pairs if e.references or not metric.needs_reference]
        if usable:
            out.update(metric.corpus(usable, **spec.options))
    return out


def aggregate(records: list[dict[str, Any]], group_by: str | None = None) -> dict[str, Any]:
    """Summaries (n, mean, std, 95% CI, range) of every numeric per-example score; with
    ``group_by``, also per value of that example field."""
    by_key: dict[str, list[float | None]] = defaultdict(list)
    for rec in records:
        for key, value in (rec.get("scores") or {}).items():
            by_key[key].append(value)
    out: dict[str, Any] = {"overall": {k: summarize(v).as_dict() for k, v in sorted(by_key.items())}}
    if group_by:
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for rec in records:
            groups[str((rec.get("fields") or {}).get(group_by))].append(rec)
        out["groups"] = {g: aggregate(rs)["overall"] for g, rs in sorted(groups.items())}
    return out


# -- built-in metrics ----------------------------------------------------------------------------
def _exact(ex: Example, p: Prediction, ctx: ScoringContext) -> Scores:
    return {"exact_match": textm.exact_match(p.text, ex.references)}


def _token_f1(ex: Example, p: Prediction, ctx: ScoringContext) -> Scores:
    return {"token_f1": textm.token_f1(p.text, ex.references)}


def _rouge(ex: Example, p: Prediction, ctx: ScoringContext, stemmer: bool = True) -> Scores:
    return dict(textm.rouge(p.text, ex.references, stemmer=stemmer))


def _sentence_bleu(ex: Example, p: Prediction, ctx: ScoringContext, tokenize: str | None = None) -> Scores:
    return {"sentence_bleu": textm.sentence_bleu(p.text, ex.references, tokenize=tokenize)}


def _corpus_bleu(pairs: list[tuple[Example, Prediction]], tokenize: str | None = None) -> dict[str, Any]:
    b = textm.corpus_bleu([p.text for _, p in pairs], [e.references for e, _ in pairs], tokenize=tokenize)
    return {"bleu": b["score"], "bleu_precisions": b["precisions"], "bleu_bp": b["bp"],
            "bleu_signature": b["signature"], "bleu_n": len(pairs)}


def _sentence_chrf(ex: Example, p: Prediction, ctx: ScoringContext, word_order: int = 0) -> Scores:
    return {"sentence_chrf": textm.sentence_chrf(p.text, ex.references, word_order=word_order)}


def _corpus_chrf(pairs: list[tuple[Example, Prediction]], word_order: int = 0) -> dict[str, Any]:
    return {"chrf": textm.corpus_chrf([p.text for _, p in pairs], [e.references for e, _ in pairs],
                                      word_order=word_order), "chrf_n": len(pairs)}


def _refusal(ex: Example, p: Prediction, ctx: ScoringContext) -> Scores:
    v = classify_refusal(p.text)
    return {"refused": float(v.refused), "refused_partial": float(v.kind == "partial")}


def _refusal_corpus(pairs: list[tuple[Example, Prediction]]) -> dict[str, Any]:
    return {"refusal": refusal_rate(p.text for _, p in pairs).as_dict()}


def _pii_spans(pairs: list[tuple[Example, Prediction]], spans_field: str = "spans") -> dict[str, Any]:
    """Span-level PII detection against gold spans (``fields.spans``); the system returns its
    detected spans in ``prediction.extra["spans"]`` as ``{start, end, label}``."""
    from agentstack.evaluation.metrics.spans import span_report

    docs = [(e.fields.get(spans_field) or [], p.extra.get("spans") or []) for e, p in pairs]
    out: dict[str, Any] = {"pii_n": len(docs)}
    for mode in ("exact", "overlap"):
        for labelled in (True, False):
            r = span_report(docs, mode=mode, match_label=labelled)
            key = f"pii_{mode}" + ("" if labelled else "_any_label")
            out[key] = {"precision": r.micro.precision, "recall": r.micro.recall, "f1": r.micro.f,
                        "macro_f1": r.macro.f}
            if labelled and mode == "overlap":
                out["pii_overlap_per_label"] = {str(k): v.as_dict() for k, v in r.per_label.items()}
    return out


def _length(ex: Example, p: Prediction, ctx: ScoringContext) -> Scores:
    return {"answer_words": float(len(p.text.split()))}


async def _semantic(ex: Example, p: Prediction, ctx: ScoringContext) -> Scores:
    from agentstack.evaluation.metrics.semantic import cosine_matrix_rows

    emb = ctx.embedder
    texts = [p.text, ex.references[0]]
    vectors = await (emb.aencode(texts) if hasattr(emb, "aencode") else asyncio.to_thread(emb.encode, texts))
    return {"semantic_similarity": cosine_matrix_rows(vectors[:1], vectors[1:])[0]}


def _retrieval(ex: Example, p: Prediction, ctx: ScoringContext, relevant_field: str = "relevant_ids",
               ks: tuple[int, ...] = (1, 5, 10)) -> Scores:
    relevant = ex.fields.get(relevant_field)
    if relevant is None:
        return {}
    ranked = [s.get("id") for s in p.sources]
    return dict(retrieval_scores(ranked, relevant, tuple(ks)))


register_metric("exact_match", _exact, needs_reference=True)
register_metric("token_f1", _token_f1, needs_reference=True)
register_metric("rouge", _rouge, needs_reference=True)
register_metric("bleu", _sentence_bleu, _corpus_bleu, needs_reference=True)
register_metric("chrf", _sentence_chrf, _corpus_chrf, needs_reference=True)
register_metric("refusal", _refusal, _refusal_corpus)
register_metric("length", _length)
register_metric("pii_spans", lambda ex, p, ctx, **kw: {}, _pii_spans)
register_metric("semantic", _semantic, needs_reference=True)
register_metric("retrieval", _retrieval)
