"""Constitutional critique and revision (after Bai et al. 2022), with the served model.

:func:`critique_revise` shows the model its own answer, asks it to critique the answer against a
sampled principle of ``policies/constitution.yaml``, then to revise it; N rounds, each on the last
revision. Every revision is the model's own text. When the model returns nothing usable (empty,
unchanged, or an echo of the request) the round is recorded as rejected and the answer stays as it
was: no canned refusal ever stands in for a revision.

Uses:

* offline, :func:`constitutional_pairs` turns red-team prompts (the AdvBench train half) into
  (revision, original) preference pairs and SFT rows; thumbs-down answers get revisions through
  :func:`revise_answers` for the preference builder;
* at inference time, :class:`ConstitutionalEngine` wraps any ChatEngine so each answer is drafted,
  critiqued and revised before it is returned (``Agent(engine=ConstitutionalEngine(...))``).

This module knows nothing about feedback storage, training or HTTP; it talks to a ChatEngine.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agentstack.engines.base import ChatEngine, ChatRequest, ChatResult, StreamEvent, Usage
from agentstack.engines.params import SamplingParams
from agentstack.errors import ConfigError


@dataclass(frozen=True)
class Principle:
    id: str
    critique: str
    revision: str
    applies: str = "any"  # "any" | "harmful"


@dataclass
class Constitution:
    name: str
    principles: list[Principle]
    version: int = 1

    def sample(self, rng: random.Random, *, harmful: bool = True) -> Principle:
        pool = [p for p in self.principles if harmful or p.applies != "harmful"] or self.principles
        return rng.choice(pool)


def load_constitution(path: Path | None = None, policies_dir: Path | None = None) -> Constitution:
    """Read and validate a constitution (default: ``constitution.yaml`` in ``policies_dir`` or the
    shipped ``policies/``). Raises :class:`ConfigError` naming the file and the bad entry."""
    if path is None:
        from agentstack.resources import resource_file

        path = resource_file("policies", "constitution.yaml", policies_dir)
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text("utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read constitution {path}: {exc}", fix="fix the YAML") from exc
    raw = data.get("principles")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{path}: `principles` must be a non-empty list", fix="see policies/constitution.yaml")
    principles, seen = [], set()
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ConfigError(f"{path}: principles[{i}] must be a mapping")
        missing = [k for k in ("id", "critique", "revision") if not str(item.get(k) or "").strip()]
        if missing:
            raise ConfigError(f"{path}: principles[{i}] lacks {missing}",
                              fix="give every principle an id, a critique request and a revision request")
        if item["id"] in seen:
            raise ConfigError(f"{path}: duplicate principle id {item['id']!r}")
        applies = item.get("applies", "any")
        if applies not in ("any", "harmful"):
            raise ConfigError(f"{path}: principles[{i}].applies must be 'any' or 'harmful', got {applies!r}")
        unknown = set(item) - {"id", "critique", "revision", "applies"}
        if unknown:
            raise ConfigError(f"{path}: principles[{i}] has unknown keys {sorted(unknown)}")
        seen.add(item["id"])
        principles.append(Principle(str(item["id"]), str(item["critique"]).strip(), str(item["revision"]).strip(),
                                    applies))
    return Constitution(str(data.get("name") or path.stem), principles, int(data.get("version") or 1))


@dataclass
class RevisionStep:
    principle: str
    critique: str
    revision: str
    accepted: bool
    reason: str | None = None


@dataclass
class Revision:
    original: str
    revised: str
    steps: list[RevisionStep] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return _norm(self.revised) != _norm(self.original)

    def public(self) -> dict[str, Any]:
        return {"original": self.original, "revised": self.revised, "changed": self.changed,
                "steps": [asdict(s) for s in self.steps]}


_PREFIX = re.compile(r"^\s*(?:\**\s*)?(?:revised (?:answer|response)|revision|rewritten (?:answer|response)|"
                     r"here(?:'s| is) (?:the|my) (?:revised|rewritten|new) (?:answer|response)[^:\n]*)\s*:\s*\**\s*",
                     re.IGNORECASE)


def _norm(text: str) -> str:
    return " ".join((text or "").lower().split())


def clean_revision(text: str) -> str:
    """Strip the labels small models put before a rewrite ("Revised answer:") and wrapping quotes."""
    text = (text or "").strip()
    for _ in range(2):
        text = _PREFIX.sub("", text, count=1).strip()
    if len(text) > 1 and text[0] == text[-1] == '"':
        text = text[1:-1].strip()
    return text


def check_revision(revision: str, previous: str, principle: Principle) -> str | None:
    """Why a revision is unusable, or None when it is acceptable."""
    if len(revision.strip()) < 2:
        return "empty"
    if _norm(revision) == _norm(previous):
        return "unchanged"
    if _norm(principle.revision)[:60] in _norm(revision) or _norm(principle.critique)[:60] in _norm(revision):
        return "echoes the request"
    return None


def _params(max_tokens: int) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, repetition_penalty=1.1)


async def _ask(engine: ChatEngine, model: str, messages: list[dict[str, Any]], max_tokens: int) -> str:
    result = await engine.chat(ChatRequest(messages=messages, model=model, params=_params(max_tokens)))
    return result.text.strip()


async def critique_revise(engine: ChatEngine, model: str, prompt: list[dict[str, Any]], answer: str,
                          constitution: Constitution, *, rounds: int = 1, rng: random.Random | None = None,
                          harmful: bool = True, max_tokens: int = 128) -> Revision:
    """Critique ``answer`` to ``prompt`` against sampled principles and revise it, ``rounds`` times."""
    rng = rng or random.Random(0)
    current = answer
    steps: list[RevisionStep] = []
    for _ in range(rounds):
        principle = constitution.sample(rng, harmful=harmful)
        convo = [*prompt, {"role": "assistant", "content": current}]
        ask_critique = {"role": "user", "content": principle.critique}
        critique = await _ask(engine, model, [*convo, ask_critique], max_tokens)
        revision = clean_revision(await _ask(engine, model, [
            *convo, ask_critique, {"role": "assistant", "content": critique},
            {"role": "user", "content": principle.revision}], max_tokens))
        reason = check_revision(revision, current, principle)
        steps.append(RevisionStep(principle.id, critique, revision, reason is None, reason))
        if reason is None:
            current = revision
    return Revision(answer, current, steps)


async def constitutional_pairs(engine: ChatEngine, model: str, prompts: list[str], constitution: Constitution, *,
                               rounds: int = 1, max_tokens: int = 128, seed: int = 0, concurrency: int = 8,
                               on_progress: Any = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Answer each red-team prompt with the model, then critique and revise the answer. Returns
    rows ``{"prompt", "original", "revision", "steps"}`` for answers the model actually changed,
    and counts (prompts, revised, rejected revisions by reason)."""
    sem = asyncio.Semaphore(concurrency)
    done = 0

    async def one(i: int, text: str) -> dict[str, Any]:
        nonlocal done
        async with sem:
            prompt = [{"role": "user", "content": text}]
            original = await _ask(engine, model, prompt, max_tokens)
            rev = await critique_revise(engine, model, prompt, original, constitution, rounds=rounds,
                                        rng=random.Random(seed * 100_003 + i), harmful=True, max_tokens=max_tokens)
        done += 1
        if on_progress:
            on_progress(done, len(prompts))
        return {"prompt": prompt, "original": original, "revision": rev.revised, "changed": rev.changed,
                "steps": [asdict(s) for s in rev.steps]}

    results = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    reasons: dict[str, int] = {}
    for r in results:
        for s in r["steps"]:
            if not s["accepted"]:
                reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
    rows = [r for r in results if r["changed"]]
    return rows, {"prompts": len(prompts), "revised": len(rows), "rejected_steps": reasons}


async def revise_answers(engine: ChatEngine, model: str, items: list[tuple[str, list[dict[str, Any]], str]],
                         constitution: Constitution, *, rounds: int = 1, max_tokens: int = 128, seed: int = 0,
                         concurrency: int = 8) -> dict[str, str]:
    """Revisions of thumbs-down answers: ``items`` are (response id, prompt messages, answer);
    returns {response id: revision} for the answers the model changed. Harm-only principles are
    not sampled (these are ordinary prompts)."""
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int, item: tuple[str, list[dict[str, Any]], str]) -> tuple[str, Revision]:
        async with sem:
            rev = await critique_revise(engine, model, item[1], item[2], constitution, rounds=rounds,
                                        rng=random.Random(seed * 100_003 + i), harmful=False, max_tokens=max_tokens)
        return item[0], rev

    results = await asyncio.gather(*(one(i, it) for i, it in enumerate(items)))
    return {rid: rev.revised for rid, rev in results if rev.changed}


class ConstitutionalEngine:
    """A ChatEngine that drafts with ``inner``, then critiques and revises the draft before
    answering (inference-time use). Streaming yields the revised answer as one event; everything
    else (models, token counting, adapters) is delegated."""

    def __init__(self, inner: ChatEngine, constitution: Constitution, *, rounds: int = 1, seed: int = 0):
        self.inner = inner
        self.constitution = constitution
        self.rounds = rounds
        self._rng = random.Random(seed)
        self.kind = f"constitutional:{inner.kind}"
        self.capabilities = inner.capabilities

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def chat(self, request: ChatRequest) -> ChatResult:
        draft = await self.inner.chat(request)
        max_tokens = request.params.max_tokens or 256
        rev = await critique_revise(self.inner, request.model, request.messages, draft.text, self.constitution,
                                    rounds=self.rounds, rng=self._rng, harmful=True, max_tokens=max_tokens)
        draft.choices[0].text = rev.revised
        draft.choices[0].logprobs = None
        return draft

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        result = await self.chat(request)
        yield StreamEvent(index=0, text=result.text, finish_reason=result.choices[0].finish_reason,
                          usage=result.usage or Usage(), model_version=result.model_version,
                          rendered_prompt=result.rendered_prompt)
