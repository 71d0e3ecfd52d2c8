"""The groundedness verifier: every claim of an answer scored against its evidence, and the decision.

One :class:`AnswerCheck` per answer, fed one finished sentence at a time (``add``) and closed with
``finish``; each returns the text that may be shown *now*. Nothing it has returned is ever changed
afterwards, so a streamed answer is never rewritten after display:

* ``rag``: sentences are held back until one of them is supported by the sources **and** answers
  the question; from then on each sentence is released as soon as it is checked. Unsupported
  sentences are removed (or kept and flagged, with ``unsupported="mark"``), and a citation of a
  source that does not support its sentence is dropped. If the answer ends with no supported
  sentence that answers the question, nothing has been shown, and the answer is the abstain message
  (or, with ``fallback="extract"``, the sources' sentences closest to the question, quoted with
  their citations, when one is close enough).
* both: a sentence that repeats one already kept (``repeat_overlap`` of their words in common,
  Jaccard, stop words included so that "not", "before" and "after" count, and the same numbers; or
  the start of it, three words or more: a loop cut off by ``max_tokens``) is removed in either
  ``unsupported`` mode and flagged ``repeats`` with the earlier sentence's index. A supported
  sentence only repeats a supported one (in ``mark`` mode an unsupported one is kept too). A small
  model stuck in a loop otherwise shows the same supported sentence over and over.
* ``react``: the evidence is the tool observations and the question. A number in a sentence must
  appear in one of them; with observations, a sentence without numbers must also be supported by
  them. Sentences are released as soon as they are checked; if none survives, the answer is the
  configured message. There is no answerability check: a task need not be a question.

The result, :class:`Grounding`, is what every answer carries in its ``grounding`` field.
This module knows nothing about engines, retrieval or HTTP; it is given an async ``embed``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from agentstack.grounding.scoring import ClaimScore, EvidenceSet, Weights, best_sentences, score_claim
from agentstack.grounding.text import Claim, drop_citations, numbers, split_claims, words

VERSION = "grounding-1"
Embed = Callable[[Sequence[str]], Awaitable[np.ndarray]]


@dataclass(frozen=True)
class CheckConfig:
    """The effective switches and thresholds for one answer (settings + the request's overrides)."""

    unsupported: Literal["remove", "mark"] = "remove"
    fallback: Literal["abstain", "extract"] = "abstain"
    min_support: float = 0.5
    min_answer: float = 0.45
    min_extract: float = 0.5
    extract_sentences: int = 2
    repeat_overlap: float = 0.8
    abstain_message: str = "The indexed documents don't cover this question."
    weights: Weights = field(default_factory=Weights)

    @classmethod
    def from_settings(cls, settings: Any, abstain_message: str, **overrides: Any) -> CheckConfig:
        """The config of ``orchestration.grounding`` (a ``GroundingSettings``), with ``overrides``."""
        fields = ("unsupported", "fallback", "min_support", "min_answer", "min_extract", "extract_sentences",
                  "repeat_overlap")
        return cls(**{**{f: getattr(settings, f) for f in fields}, "abstain_message": abstain_message,
                      **{k: v for k, v in overrides.items() if v is not None}})

    def thresholds(self) -> dict[str, float]:
        return {"min_support": self.min_support, "min_answer": self.min_answer, "min_extract": self.min_extract}


@dataclass
class Grounding:
    """Per-claim scores and the decision, as stored with the response and sent to clients."""

    decision: str  # answered | abstained | extracted | off | unchecked
    mode: str = "rag"
    reason: str = ""
    claims: list[dict[str, Any]] = field(default_factory=list)
    answer_score: float | None = None
    raw_answer: str | None = None
    unsupported: str | None = None
    fallback: str | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    verify_ms: float = 0.0
    version: str = VERSION

    def public(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if v is not None}
        out["unsupported_claims"] = sum(1 for c in self.claims if not c.get("supported", True))
        return out


def skipped(decision: str, reason: str, mode: str = "rag") -> Grounding:
    return Grounding(decision=decision, reason=reason, mode=mode)


def split_evidence(passages: Sequence[tuple[int, str]]) -> tuple[list[str], list[int]]:
    sentences, source_of = [], []
    for n, text in passages:
        for c in split_claims(text):
            if c.text.strip():
                sentences.append(c.text)
                source_of.append(n)
    return sentences, source_of


async def build_evidence(question: str, passages: Sequence[tuple[int, str]], embed: Embed | None) -> EvidenceSet:
    sentences, source_of = split_evidence(passages)
    if embed is None:
        vectors = np.zeros((len(sentences), 1), dtype=np.float32)
        qv = np.zeros(1, dtype=np.float32)
    else:
        all_vectors = await embed([question, *sentences])
        qv, vectors = all_vectors[0], all_vectors[1:]
    return EvidenceSet(question=question, sentences=sentences, source_of=source_of, vectors=vectors,
                       question_vector=qv)


class AnswerCheck:
    """Checks one answer sentence by sentence; see the module docstring for what is released when."""

    def __init__(self, config: CheckConfig, evidence: Callable[[], Awaitable[EvidenceSet]], embed: Embed | None, *,
                 mode: Literal["rag", "react"] = "rag", react_message: str = ""):
        self.config, self.mode, self.embed = config, mode, embed
        self._evidence_pending = evidence
        self._evidence: EvidenceSet | None = None
        self.react_message = react_message
        self.scores: list[ClaimScore] = []
        self._verdicts: list[dict[str, Any]] = []
        self._held: list[int] = []
        self._answered = mode == "react"
        self._out: list[str] = []
        self._raw: list[str] = []
        self._released_claims = 0
        self._gap = ""  # whitespace after the last claim seen: it precedes the next one
        self._skipped_sep: str | None = None  # the separator of the first claim dropped since the last release
        self._seconds = 0.0
        self.decision: str | None = None

    @property
    def text(self) -> str:
        return "".join(self._out)

    async def evidence(self) -> EvidenceSet:
        if self._evidence is None:
            self._evidence = await self._evidence_pending()
        return self._evidence

    async def add(self, claim_text: str) -> str:
        """Check one finished sentence; returns the text to show now (maybe empty)."""
        self._raw.append(claim_text)
        claims = split_claims(claim_text)
        if not claims:
            return ""
        started = time.perf_counter()
        ev = await self.evidence()
        if self.embed is not None:
            vectors = await self.embed([c.body for c in claims])
        else:
            vectors = np.zeros((len(claims), 1), dtype=np.float32)
        out, end = [], 0
        for claim, vector in zip(claims, vectors):
            sep, self._gap = self._gap + claim_text[end:claim.start], ""
            end = claim.end
            out.append(self._judge(claim, vector, ev, sep))
        self._gap = claim_text[end:]
        self._seconds += time.perf_counter() - started
        return "".join(out)

    def _judge(self, claim: Claim, vector: np.ndarray, ev: EvidenceSet, sep: str = " ") -> str:
        """``sep``: the whitespace before the claim in the answer, kept when it is released (so
        paragraphs, list items and indentation keep their meaning)."""
        cfg = self.config
        s = score_claim(claim, vector, ev, cfg.weights)
        if self.mode == "react":
            has_obs = any(n != 0 for n in ev.source_of)
            if numbers(claim.body):
                supported = not s.novel_numbers
            else:
                supported = s.support >= cfg.min_support if has_obs else True
            answers = True
        else:
            supported = s.support >= cfg.min_support
            answers = supported and s.answers >= cfg.min_answer
        dropped = sorted(n for n in claim.citations if s.citation_support.get(n, 0.0) < cfg.min_support)
        seq, nums = words(claim.body), numbers(claim.body)
        repeats = self._repeat_of(seq, nums, supported)
        self.scores.append(s)
        self._verdicts.append({**s.public(), "supported": supported, "answers_question": bool(answers),
                               "citations": list(claim.citations), "citations_dropped": dropped,
                               **({"repeats": repeats} if repeats is not None else {}),
                               "kept": (supported or cfg.unsupported == "mark") and repeats is None, "_sep": sep,
                               "_seq": seq, "_numbers": nums,
                               "_text": drop_citations(claim.text, set(dropped)) if dropped else claim.text})
        self._held.append(len(self._verdicts) - 1)
        if answers:
            self._answered = True
        return self._release() if self._answered else ""

    def _repeat_of(self, seq: list[str], nums: set[str], supported: bool) -> int | None:
        """The index of an earlier kept sentence this one repeats, or None: the same numbers and
        words in common (Jaccard) of ``repeat_overlap`` or more, or its words are the start of the
        earlier one's."""
        if not seq:
            return None
        mine = set(seq)
        for i, v in enumerate(self._verdicts):
            if not v["kept"] or (supported and not v["supported"]):
                continue
            if len(seq) >= 3 and v["_seq"][:len(seq)] == seq:
                return i
            theirs = set(v["_seq"])
            if v["_numbers"] == nums and len(mine & theirs) / len(mine | theirs) >= self.config.repeat_overlap:
                return i
        return None

    def _separator(self, own: str) -> str:
        """What stands before a kept sentence: its own whitespace, or after dropped sentences the
        first dropped one's when that breaks more lines (a paragraph break before a dropped
        sentence stays; so does one before a heading that follows dropped sentences)."""
        skipped = self._skipped_sep
        if skipped is None or own.count("\n") > skipped.count("\n"):
            return own
        return skipped

    def _release(self) -> str:
        out = []
        for i in self._held:
            v = self._verdicts[i]
            if not v["kept"] or not v["_text"]:
                if self._skipped_sep is None:
                    self._skipped_sep = v["_sep"]
                continue
            sep = self._separator(v["_sep"]) if self._released_claims else ""
            self._skipped_sep = None
            start = len(self.text) + len("".join(out)) + len(sep)
            out.append(sep + v["_text"])
            v["start"], v["end"] = start, start + len(v["_text"])
            self._released_claims += 1
        self._held = []
        text = "".join(out)
        self._out.append(text)
        return text

    async def finish(self) -> str:
        """Close the answer; returns the rest to show (the fallback when nothing was shown)."""
        started = time.perf_counter()
        if self._answered and self._released_claims:
            self.decision = "answered"
            rest = self._release()
        elif self.mode == "react":
            self.decision, rest = "abstained", self.react_message
            self._out.append(rest)
        else:
            rest = await self._fallback()
            self._out.append(rest)
        self._seconds += time.perf_counter() - started
        return rest

    async def _fallback(self) -> str:
        cfg = self.config
        if cfg.fallback == "extract":
            ev = await self.evidence()
            picked = [(i, sim) for i, sim in best_sentences(ev, cfg.extract_sentences) if sim >= cfg.min_extract]
            if picked:
                self.decision = "extracted"
                return " ".join(f"“{ev.sentences[i].strip()}” [{ev.source_of[i]}]" for i, _ in picked)
        self.decision = "abstained"
        return cfg.abstain_message

    def grounding(self) -> Grounding:
        claims = [{k: v for k, v in verdict.items() if not k.startswith("_")} for verdict in self._verdicts]
        answering = [s.answers for s, v in zip(self.scores, self._verdicts) if v["supported"]]
        reason = {"answered": "a supported sentence answers the question" if self.mode == "rag"
                  else "the answer's sentences are supported by the tool observations",
                  "abstained": "no supported sentence answers the question" if self.mode == "rag"
                  else "no sentence of the answer is supported by the tool observations",
                  "extracted": "no supported sentence of the answer answers the question; quoting the sources"
                  }.get(self.decision or "", "")
        return Grounding(decision=self.decision or "unchecked", mode=self.mode, reason=reason, claims=claims,
                         answer_score=round(max(answering), 3) if answering else None,
                         raw_answer="".join(self._raw), unsupported=self.config.unsupported,
                         fallback=self.config.fallback if self.mode == "rag" else None,
                         thresholds=self.config.thresholds(), verify_ms=round(self._seconds * 1000, 1))


class SentenceGate:
    """Feeds streamed text to an :class:`AnswerCheck` one finished sentence at a time.

    ``recheck``: a fresh answer guard (the link policy and citations of the one before the gate,
    without its system-prompt check) that what the check releases passes through. The guard before
    the gate judged the model's text; dropping a sentence can change how the rest parses (a dropped
    line that opened a code fence turns the code after it into live Markdown or HTML), so the text
    shown is judged again as it is."""

    def __init__(self, check: AnswerCheck, recheck: Any = None):
        self.check = check
        self.recheck = recheck
        self._buffer = ""

    @property
    def text(self) -> str:
        return self.recheck.text if self.recheck is not None else self.check.text

    def _guarded(self, text: str) -> str:
        return self.recheck.feed(text) if self.recheck is not None and text else text

    async def feed(self, text: str) -> str:
        from agentstack.grounding.text import complete_claims

        self._buffer += text
        cut = complete_claims(self._buffer)
        if not cut:
            return ""
        ready, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return self._guarded(await self.check.add(ready))

    async def finish(self) -> str:
        rest, self._buffer = self._buffer, ""
        out = await self.check.add(rest) if rest.strip() else ""
        out = self._guarded(out + await self.check.finish())
        return out + self.recheck.finish() if self.recheck is not None else out


def embed_with(embedder: Any) -> Embed | None:
    """An async ``embed`` over an :class:`~agentstack.embeddings.base.Embedder` (None stays None)."""
    if embedder is None:
        return None

    async def embed(texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        if hasattr(embedder, "aencode"):
            return await embedder.aencode(texts)
        return await asyncio.to_thread(embedder.encode, texts)

    return embed
