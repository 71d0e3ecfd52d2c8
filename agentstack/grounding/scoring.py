"""The signals: how well one claim is supported by the evidence, and whether it answers the
question. Pure functions over texts and unit vectors (cosine = inner product); the embedder that
made the vectors is the caller's business.

Support of a claim (0..1):
    ``w_sim * sim + (1 - w_sim) * lex``, where ``sim`` is the best cosine between the claim and
    one evidence sentence, and ``lex`` the share of the claim's content words found in the evidence;
    a claim with a number that appears in neither the evidence nor the question scores 0, and each
    name (a capitalised word) found in neither costs ``name_penalty``.

Answerability of a claim (0..1): the cosine between the question and the claim (all-MiniLM-L6-v2
was trained on question-answer pairs), times 0 when the claim only restates the question (fewer
than ``min_novelty`` of its content words are new) and times ``type_penalty`` when the question
asks for a date, number, person or place and the claim holds none.

The weights and thresholds are tuned on ClapNQ (bench/grounding.py); docs/benchmarks.md has the
figures of each signal, alone and together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agentstack.grounding.text import Claim, answer_type, content_words, names, numbers, type_match, words


@dataclass(frozen=True)
class Weights:
    w_sim: float = 0.5
    name_penalty: float = 0.15
    min_novelty: float = 0.2
    type_penalty: float = 0.5


@dataclass
class EvidenceSet:
    """The passages a claim may rest on, as sentences. ``source`` numbers are citation numbers
    (0 for the question itself in ReAct, where restating the question is allowed)."""

    question: str
    sentences: list[str]
    source_of: list[int]
    vectors: np.ndarray  # one unit row per sentence
    question_vector: np.ndarray
    words: set[str] = field(default_factory=set)
    numbers: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)
    words_by_source: dict[int, set[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        full = " ".join([self.question, *self.sentences])
        self.words = content_words(full)
        self.numbers = numbers(full)
        self.names = {w.lower() for w in words(full)}
        for s, n in zip(self.sentences, self.source_of):
            self.words_by_source.setdefault(n, set()).update(content_words(s))


@dataclass
class ClaimScore:
    claim: Claim
    support: float
    answers: float
    sim: float
    lex: float
    question_sim: float
    novelty: float
    type_ok: float | None
    novel_numbers: list[str]
    novel_names: list[str]
    source: int | None  # the source holding the best-matching sentence
    evidence: str  # that sentence
    citation_support: dict[int, float]

    def public(self) -> dict:
        return {"text": self.claim.text, "support": round(self.support, 3), "answers": round(self.answers, 3),
                "signals": {"similarity": round(self.sim, 3), "overlap": round(self.lex, 3),
                            "question_similarity": round(self.question_sim, 3), "novelty": round(self.novelty, 3),
                            "type_match": self.type_ok, "unsupported_numbers": self.novel_numbers,
                            "unsupported_names": self.novel_names},
                "source": self.source, "evidence": self.evidence[:300],
                "citation_support": {str(k): round(v, 3) for k, v in self.citation_support.items()}}


def score_claim(claim: Claim, vector: np.ndarray, ev: EvidenceSet, weights: Weights) -> ClaimScore:
    body = claim.body
    sims = ev.vectors @ vector if len(ev.sentences) else np.zeros(0, dtype=np.float32)
    best = int(np.argmax(sims)) if len(sims) else -1
    sim = max(0.0, float(sims[best])) if best >= 0 else 0.0
    cw = content_words(body)
    lex = len(cw & ev.words) / len(cw) if cw else 0.0
    novel_numbers = sorted(numbers(body) - ev.numbers)
    novel_names = sorted(names(body) - ev.names)
    support = weights.w_sim * sim + (1 - weights.w_sim) * lex - weights.name_penalty * len(novel_names)
    if novel_numbers:
        support = 0.0
    support = min(1.0, max(0.0, support))

    qsim = max(0.0, float(ev.question_vector @ vector))
    qwords = content_words(ev.question)
    novelty = len(cw - qwords) / len(cw) if cw else 0.0
    kind = answer_type(ev.question)
    type_ok = type_match(kind, body, ev.question)
    answers = qsim
    if novelty < weights.min_novelty:
        answers = 0.0
    if type_ok == 0.0:
        answers *= weights.type_penalty

    citation_support = {}
    for n in claim.citations:
        idx = [i for i, s in enumerate(ev.source_of) if s == n]
        if not idx:
            continue
        csim = max(0.0, float(sims[idx].max()))
        clex = len(cw & ev.words_by_source.get(n, set())) / len(cw) if cw else 0.0
        citation_support[n] = weights.w_sim * csim + (1 - weights.w_sim) * clex
    return ClaimScore(claim=claim, support=support, answers=answers, sim=sim, lex=lex, question_sim=qsim,
                      novelty=novelty, type_ok=type_ok, novel_numbers=novel_numbers, novel_names=novel_names,
                      source=ev.source_of[best] if best >= 0 else None,
                      evidence=ev.sentences[best] if best >= 0 else "", citation_support=citation_support)


def best_sentences(ev: EvidenceSet, k: int, exclude_source: int = 0) -> list[tuple[int, float]]:
    """The ``k`` evidence sentences closest to the question (index, cosine), best first."""
    if not len(ev.sentences):
        return []
    sims = ev.vectors @ ev.question_vector
    order = [int(i) for i in np.argsort(-sims) if ev.source_of[int(i)] != exclude_source]
    return [(i, float(sims[i])) for i in order[:k]]
