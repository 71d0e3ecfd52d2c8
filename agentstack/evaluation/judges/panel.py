"""LLM judges over any chat engine: 1-5 rubric scores and pairwise preferences.

A :class:`JudgePanel` asks one judge model (any :class:`~agentstack.engines.base.ChatEngine`
behind an :class:`~agentstack.evaluation.client.EngineClient`) to score answers with the rubrics
of :mod:`.rubrics`. The score comes back through structured output (a JSON schema allowing only
``{"score": 1..5}``) when the engine offers it. If the engine refuses the constraint (an engine
without constrained decoding raises before generating), the panel says so once in the log, falls
back to the same prompt without the constraint for the rest of the run, and counts the fallback.
Replies are always parsed defensively (JSON, then ``score: N``, then a bare leading digit); a
reply that yields no score is a *parse failure*: its score is ``None``, it is counted per judge and
reported, and it is never silently turned into a number.

With ``weighted`` (default: when the engine gives log-probabilities and the score is constrained)
each score also carries ``expected``: the probability-weighted mean over the five score tokens at
the score position (G-Eval, Liu et al. 2023). It separates answers that the argmax score ties,
which matters for small judge models that put most mass on one digit.

Long inputs are cut to ``max_chars`` characters per field (``max_context_chars`` for the
context) and the cut is recorded, so a judge never fails on the context window.

This module knows nothing about datasets, suites or reports.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from agentstack.engines.base import ChatRequest
from agentstack.engines.params import SamplingParams, StructuredOutput
from agentstack.errors import ContextLengthError, ModelNotFoundError, OverloadedError
from agentstack.evaluation.client import EngineClient
from agentstack.evaluation.judges.rubrics import INPUT_LABELS, PAIRWISE_SYSTEM, RUBRICS, Rubric

log = logging.getLogger(__name__)

SCORE_SCHEMA: dict[str, Any] = {
    "type": "object", "properties": {"score": {"type": "integer", "enum": [1, 2, 3, 4, 5]}},
    "required": ["score"], "additionalProperties": False}
PAIR_SCHEMA: dict[str, Any] = {
    "type": "object", "properties": {"better": {"type": "string", "enum": ["A", "B", "tie"]}},
    "required": ["better"], "additionalProperties": False}

_JSON_OBJECT = re.compile(r"\{[^{}]*\}", re.DOTALL)
_SCORE_FIELD = re.compile(r"score[\"']?\s*[:=]\s*[\"']?([1-5])(?:\.0+)?(?![0-9.])", re.IGNORECASE)
_LEADING_DIGIT = re.compile(r"^\W{0,3}([1-5])(?:\.0+)?(?:\s*(?:/\s*5|out of 5))?(?![0-9.])")
_BETTER_FIELD = re.compile(r"better[\"']?\s*[:=]\s*[\"']?(A|B|tie)\b", re.IGNORECASE)
_LEADING_CHOICE = re.compile(r"^\W{0,3}(A|B|tie)\b", re.IGNORECASE)


def _as_score(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        if not re.fullmatch(r"[1-5](?:\.0+)?", value):
            return None
        value = float(value)
    if isinstance(value, (int, float)) and float(value).is_integer() and 1 <= value <= 5:
        return int(value)
    return None


def parse_score(text: str) -> int | None:
    """The 1-5 score in a judge's reply, or ``None``. Accepts ``{"score": 4}`` (also inside other
    text), ``score: 4``, ``4``, ``4/5``; rejects out-of-range and fractional scores."""
    for m in _JSON_OBJECT.finditer(text):
        try:
            obj = json.loads(m.group())
        except ValueError:
            continue
        if isinstance(obj, dict) and "score" in obj:
            return _as_score(obj["score"])
    m = _SCORE_FIELD.search(text) or _LEADING_DIGIT.match(text.strip())
    return int(m.group(1)) if m else None


def expected_score(logprobs: list[Any] | None) -> float | None:
    """Probability-weighted score at the first token that is a digit 1-5, from its top
    alternatives (:class:`~agentstack.engines.base.TokenLogprob`); ``None`` if there is none."""
    import math

    for lp in logprobs or []:
        if lp.token.strip() in ("1", "2", "3", "4", "5"):
            mass: dict[int, float] = {}
            for token, logprob in list(lp.top) or [(lp.token, lp.logprob)]:
                t = token.strip()
                if t in ("1", "2", "3", "4", "5"):
                    mass[int(t)] = mass.get(int(t), 0.0) + math.exp(logprob)
            total = sum(mass.values())
            return sum(k * p for k, p in mass.items()) / total if total > 0 else None
    return None


def parse_choice(text: str) -> str | None:
    """``"A"``, ``"B"`` or ``"tie"`` from a pairwise judge's reply, or ``None``."""
    for m in _JSON_OBJECT.finditer(text):
        try:
            obj = json.loads(m.group())
        except ValueError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("better"), str):
            v = obj["better"].strip()
            return {"a": "A", "b": "B", "tie": "tie"}.get(v.lower())
    m = _BETTER_FIELD.search(text) or _LEADING_CHOICE.match(text.strip())
    if not m:
        return None
    return {"a": "A", "b": "B", "tie": "tie"}[m.group(1).lower()]


@dataclass
class JudgeScore:
    judge: str
    score: int | None
    error: str | None = None  # "parse", "missing input: x", "engine: ..." ; None when scored
    raw: str = ""
    structured: bool = False
    truncated: bool = False
    expected: float | None = None  # probability-weighted score (weighted mode only)

    @property
    def value(self) -> float | None:
        """The finest score available: ``expected`` when measured, else ``score``."""
        return self.expected if self.expected is not None else self.score

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PairVerdict:
    outcome: str | None  # "a", "b", "tie", or None when neither order gave a verdict
    first: str | None = None  # verdict with A shown first
    second: str | None = None  # verdict with the order swapped, mapped back to A/B
    errors: int = 0

    @property
    def consistent(self) -> bool:
        return self.first is not None and self.first == self.second


@dataclass
class PanelStats:
    calls: Counter = field(default_factory=Counter)
    parse_failures: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    truncated: Counter = field(default_factory=Counter)
    structured_fallbacks: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"calls": dict(self.calls), "parse_failures": dict(self.parse_failures), "errors": dict(self.errors),
                "truncated": dict(self.truncated), "structured_fallbacks": self.structured_fallbacks}


class JudgePanel:
    """Scores with the named rubrics on one judge model. ``structured``: ``None`` = use structured
    output when the engine advertises it (falling back if it refuses), ``True``/``False`` = force."""

    def __init__(self, client: EngineClient, model: str | None = None, structured: bool | None = None,
                 max_chars: int = 3000, max_context_chars: int = 12000, rubrics: dict[str, Rubric] | None = None,
                 weighted: bool | None = None):
        self.client = client
        self._model = model
        self.rubrics = dict(rubrics or RUBRICS)
        self._structured = client.supports_structured if structured is None else structured
        self._forced = structured is not None
        logprobs = bool(getattr(getattr(client.engine, "capabilities", None), "logprobs", False))
        self.weighted = logprobs if weighted is None else weighted
        self.max_chars = max_chars
        self.max_context_chars = max_context_chars
        self.stats = PanelStats()

    @property
    def model(self) -> str:
        if self._model is None:
            self._model = self.client.default_model()
        return self._model

    @property
    def mode(self) -> str:
        return "structured" if self._structured else "prompted"

    def describe(self) -> dict[str, Any]:
        return {"model": self.model, "mode": self.mode, "engine": getattr(self.client.engine, "kind", "?"),
                "weighted": self.weighted, "judges": sorted(self.rubrics)}

    def rubric(self, name: str) -> Rubric:
        try:
            return self.rubrics[name]
        except KeyError:
            raise ValueError(f"unknown judge {name!r}; known: {', '.join(sorted(self.rubrics))}") from None

    # -- prompting --------------------------------------------------------------------------------
    def _cut(self, key: str, text: str) -> tuple[str, bool]:
        limit = self.max_context_chars if key == "context" else self.max_chars
        if len(text) <= limit:
            return text, False
        return text[:limit] + " [...]", True

    def messages(self, rubric: Rubric, inputs: dict[str, str]) -> tuple[list[dict[str, str]], bool]:
        parts, truncated = [], False
        for key in rubric.inputs:
            text, cut = self._cut(key, str(inputs[key]))
            truncated |= cut
            parts.append(f"{INPUT_LABELS[key]}:\n{text}")
        parts.append(f"Score the ANSWER for {rubric.name} from 1 to 5. JSON only.")
        return [{"role": "system", "content": rubric.system_prompt()},
                {"role": "user", "content": "\n\n".join(parts)}], truncated

    async def _ask(self, messages: list[dict[str, str]], schema: dict[str, Any], max_tokens: int,
                   weighted: bool = False) -> tuple[str, bool, float | None]:
        """The judge model's reply text, whether it was constrained, and the weighted score."""
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
        if self._structured:
            if weighted and self.weighted:
                params = params.model_copy(update={"logprobs": True, "top_logprobs": 8})
            request = ChatRequest(messages=messages, model=self.model, params=params,
                                  structured=StructuredOutput(kind="json_schema", value=schema))
            try:
                result = await self.client.chat(request)
                return result.text, True, expected_score(result.choices[0].logprobs) if params.logprobs else None
            except (OverloadedError, ContextLengthError, ModelNotFoundError):
                raise
            except Exception as exc:  # the engine refused the constraint: fall back, say so once
                if self._forced:
                    raise
                if self.stats.structured_fallbacks == 0:
                    log.warning("judge engine refused structured output (%s); scoring from plain replies",
                                type(exc).__name__)
                self._structured = False
                self.stats.structured_fallbacks += 1
        request = ChatRequest(messages=messages, model=self.model, params=SamplingParams(
            temperature=0.0, max_tokens=max_tokens + 16))
        return (await self.client.chat(request)).text, False, None

    # -- scoring ----------------------------------------------------------------------------------
    async def score(self, name: str, **inputs: Any) -> JudgeScore:
        """One rubric score. Missing inputs give ``error="missing input: ..."`` without a call."""
        rubric = self.rubric(name)
        missing = [k for k in rubric.inputs if inputs.get(k) in (None, "")]
        if missing:
            return JudgeScore(name, None, error=f"missing input: {', '.join(missing)}")
        messages, truncated = self.messages(rubric, inputs)
        self.stats.calls[name] += 1
        if truncated:
            self.stats.truncated[name] += 1
        try:
            raw, structured, expected = await self._ask(messages, SCORE_SCHEMA, max_tokens=12, weighted=True)
        except Exception as exc:
            self.stats.errors[name] += 1
            log.warning("judge %s failed: %s", name, type(exc).__name__)
            return JudgeScore(name, None, error=f"engine: {type(exc).__name__}", truncated=truncated)
        value = parse_score(raw)
        if value is None:
            self.stats.parse_failures[name] += 1
        return JudgeScore(name, value, None if value is not None else "parse", raw[:200], structured, truncated,
                          expected if value is not None else None)

    async def score_many(self, names: list[str], inputs: dict[str, Any]) -> dict[str, JudgeScore]:
        import asyncio

        results = await asyncio.gather(*(self.score(n, **inputs) for n in names))
        return dict(zip(names, results))

    async def _prefer(self, conversation: str, first: str, second: str) -> str | None:
        c, _ = self._cut("context", conversation)
        a, _ = self._cut("answer", first)
        b, _ = self._cut("answer", second)
        messages = [{"role": "system", "content": PAIRWISE_SYSTEM},
                    {"role": "user", "content": f"CONVERSATION:\n{c}\n\nREPLY A:\n{a}\n\nREPLY B:\n{b}\n\n"
                                                "Which reply is better? JSON only."}]
        self.stats.calls["pairwise"] += 1
        raw, _, _ = await self._ask(messages, PAIR_SCHEMA, max_tokens=10)
        verdict = parse_choice(raw)
        if verdict is None:
            self.stats.parse_failures["pairwise"] += 1
        return verdict

    async def compare(self, conversation: str, answer_a: str, answer_b: str) -> PairVerdict:
        """Pairwise preference, asked in both orders to cancel the judge's position bias; the
        outcome is the mean of the two verdicts (one order alone if the other failed)."""
        import asyncio

        verdicts = await asyncio.gather(self._prefer(conversation, answer_a, answer_b),
                                        self._prefer(conversation, answer_b, answer_a), return_exceptions=True)
        errors = sum(isinstance(v, BaseException) for v in verdicts)
        if errors:
            self.stats.errors["pairwise"] += errors
        first = verdicts[0] if isinstance(verdicts[0], str) else None
        swapped = verdicts[1] if isinstance(verdicts[1], str) else None
        second = {"A": "B", "B": "A", "tie": "tie"}[swapped] if swapped else None
        points = [{"A": 1.0, "B": 0.0, "tie": 0.5}[v] for v in (first, second) if v is not None]
        if not points:
            return PairVerdict(None, first, second, errors)
        mean = sum(points) / len(points)
        outcome = "a" if mean > 0.5 else "b" if mean < 0.5 else "tie"
        return PairVerdict(outcome, first, second, errors)
