"""Who decides a held-out comparison in the gate's win rate: a reward model or the LLM judge.

Both expose ``accuracy`` / ``trusted`` (may the gate rely on it?) and ``async compare(prompt,
a, b) -> "a" | "b" | "tie" | None``. The reward model is trusted when its accuracy on the round's
held-out pairs reaches ``gate.min_scorer_accuracy``; the judge when the evaluation module's stored
agreement with human labels reaches ``evaluation.judge_min_agreement`` (docs/evaluation.md).

This module knows nothing about jobs; torch work goes through the ``compute`` callable.
"""

from __future__ import annotations

from typing import Any


class RewardScorer:
    def __init__(self, model_dir: str, adapter_dir: str, accuracy: float | None, compute: Any, *,
                 margin: float = 0.0):
        self.model_dir = model_dir
        self.adapter_dir = adapter_dir
        self.accuracy = accuracy
        self.compute = compute
        self.margin = margin
        self._model: Any = None

    def _load(self) -> None:
        from agentstack.alignment.trainers.reward import load_reward_model

        if self._model is None:
            self._model = load_reward_model(self.model_dir, self.adapter_dir)

    def _scores(self, prompt: list[dict[str, Any]], a: str, b: str) -> tuple[float, float]:
        from agentstack.alignment.trainers.reward import conversation, score

        self._load()
        model, tok = self._model
        sa, sb = score(model, tok, [conversation(prompt, a), conversation(prompt, b)])
        return sa, sb

    async def compare(self, prompt: list[dict[str, Any]], a: str, b: str) -> str | None:
        sa, sb = await self.compute(self._scores, prompt, a, b)
        if sa - sb > self.margin:
            return "a"
        if sb - sa > self.margin:
            return "b"
        return "tie"


class JudgeScorer:
    """The evaluation module's pairwise judge (both orders, position bias cancelled)."""

    def __init__(self, engine: Any, settings: Any, model: str):
        from pathlib import Path

        from agentstack.evaluation.judges.agreement import load_agreement

        self.engine = engine
        self.model = model
        stored = load_agreement(Path(settings.eval_path), model) or {}
        self.agreement = (stored.get("judges", {}).get("pairwise") or {}).get("agreement")
        self.trusted = self.agreement is not None and self.agreement >= settings.evaluation.judge_min_agreement
        self._panel: Any = None

    async def compare(self, prompt: list[dict[str, Any]], a: str, b: str) -> str | None:
        if self._panel is None:
            from agentstack.evaluation.client import EngineClient
            from agentstack.evaluation.judges import JudgePanel

            self._panel = JudgePanel(EngineClient(self.engine), model=self.model)
        conversation = "\n".join(f"{m['role'].upper()}: {m['content']}" for m in prompt)
        return (await self._panel.compare(conversation, a, b)).outcome
