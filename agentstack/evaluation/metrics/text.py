"""Text-overlap metrics: exact match, token F1, ROUGE-1/2/L, BLEU and chrF.

* ``exact_match`` and ``token_f1`` follow the SQuAD evaluation script: lower-case, drop punctuation
  and the articles a/an/the, collapse whitespace; token F1 counts shared tokens with multiplicity.
  With several references the best one counts.
* ROUGE comes from Google's ``rouge-score`` (the reimplementation of Lin's ROUGE-1.5.5 that most
  papers now quote): F-measure by default, Porter stemming on, English tokenisation.
* BLEU and chrF come from ``sacrebleu`` with its defaults (13a tokenisation, exponential smoothing;
  chrF with character 6-grams and beta 2), so the figures are comparable with published WMT ones.
  Corpus BLEU is *not* the mean of sentence BLEUs: use :func:`corpus_bleu` for the headline figure
  and :func:`sentence_bleu` only for per-example distributions.

Scores are on 0..1 except BLEU and chrF, which keep sacrebleu's 0..100 scale.
This module knows nothing about models or datasets.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _refs(references: str | Sequence[str]) -> list[str]:
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ValueError("at least one reference is needed")
    return refs


def exact_match(prediction: str, references: str | Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised reference, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(r) for r in _refs(references)))


def _token_f1(prediction: str, reference: str) -> float:
    pred = normalize_answer(prediction).split()
    ref = normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)  # both empty: agreement; one empty: none
    common = Counter(pred) & Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred)
    recall = same / len(ref)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, references: str | Sequence[str]) -> float:
    """SQuAD token F1 against the best-matching reference."""
    return max(_token_f1(prediction, r) for r in _refs(references))


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@lru_cache(maxsize=4)
def _rouge_scorer(types: tuple[str, ...], stemmer: bool):
    from agentstack.errors import require

    rouge_scorer = require("rouge_score.rouge_scorer", package="rouge-score")
    return rouge_scorer.RougeScorer(list(types), use_stemmer=stemmer)


def rouge(prediction: str, references: str | Sequence[str], types: Sequence[str] = ROUGE_TYPES,
          stemmer: bool = True, measure: str = "fmeasure") -> dict[str, float]:
    """ROUGE scores of one prediction; with several references, the best per type (as
    rouge-score's ``score_multi``). ``measure``: ``fmeasure``, ``precision`` or ``recall``."""
    if measure not in ("fmeasure", "precision", "recall"):
        raise ValueError(f"measure must be fmeasure, precision or recall, got {measure!r}")
    scorer = _rouge_scorer(tuple(types), stemmer)
    best: dict[str, float] = {t: 0.0 for t in types}
    for ref in _refs(references):
        scores = scorer.score(ref, prediction)  # rouge-score takes (target, prediction)
        for t in types:
            best[t] = max(best[t], float(getattr(scores[t], measure)))
    return best


def _sacrebleu():
    from agentstack.errors import require

    return require("sacrebleu")


def _transpose(references: Sequence[str | Sequence[str]]) -> list[list[str]]:
    """Per-example reference lists → sacrebleu's reference streams (one list per reference slot)."""
    per_example = [_refs(r) for r in references]
    width = max((len(r) for r in per_example), default=1)
    # sacrebleu accepts a variable number of references when the missing ones are None
    return [[r[i] if i < len(r) else None for r in per_example] for i in range(width)]  # type: ignore[misc]


def corpus_bleu(predictions: Sequence[str], references: Sequence[str | Sequence[str]],
                tokenize: str | None = None) -> dict[str, float | list[float] | str]:
    """Corpus BLEU (0..100) with its n-gram precisions, brevity penalty and sacrebleu signature.
    ``references[i]`` is the reference (or list of references) for ``predictions[i]``.
    ``tokenize``: sacrebleu tokenizer (``13a`` default; ``zh``, ``ja-mecab`` … for CJK targets)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    sb = _sacrebleu()
    bleu = sb.metrics.BLEU(**({"tokenize": tokenize} if tokenize else {}))
    result = bleu.corpus_score(list(predictions), _transpose(references))
    return {"score": float(result.score), "precisions": [float(p) for p in result.precisions],
            "bp": float(result.bp), "sys_len": int(result.sys_len), "ref_len": int(result.ref_len),
            "signature": str(bleu.get_signature())}


def sentence_bleu(prediction: str, references: str | Sequence[str], tokenize: str | None = None) -> float:
    """Sentence BLEU (0..100, sacrebleu's exponential smoothing and effective order)."""
    sb = _sacrebleu()
    bleu = sb.metrics.BLEU(effective_order=True, **({"tokenize": tokenize} if tokenize else {}))
    return float(bleu.sentence_score(prediction, _refs(references)).score)


def corpus_chrf(predictions: Sequence[str], references: Sequence[str | Sequence[str]],
                word_order: int = 0) -> float:
    """Corpus chrF (0..100; ``word_order=2`` gives chrF++)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    sb = _sacrebleu()
    return float(sb.metrics.CHRF(word_order=word_order).corpus_score(list(predictions),
                                                                      _transpose(references)).score)


def sentence_chrf(prediction: str, references: str | Sequence[str], word_order: int = 0) -> float:
    sb = _sacrebleu()
    return float(sb.metrics.CHRF(word_order=word_order).sentence_score(prediction, _refs(references)).score)
