"""The rubrics of the 1-5 LLM judges, and the pairwise preference prompt.

Each rubric names the inputs it needs and describes every point of its scale, so that a judge
model (and a reader of a report) knows what a 3 means. The wording is ours; the five criteria and
their inputs follow the common RAG-evaluation set (groundedness, relevance, coherence, fluency,
similarity). This module holds text only; it knows nothing about engines or parsing.
"""

from __future__ import annotations

from dataclasses import dataclass

INPUT_LABELS = {"question": "QUESTION", "context": "CONTEXT", "ground_truth": "GROUND TRUTH ANSWER",
                "answer": "ANSWER"}


@dataclass(frozen=True)
class Rubric:
    name: str
    inputs: tuple[str, ...]
    criterion: str
    scale: tuple[str, str, str, str, str]  # what 1, 2, 3, 4 and 5 mean

    def system_prompt(self) -> str:
        points = "\n".join(f"{i} = {text}" for i, text in enumerate(self.scale, start=1))
        return (f"You are a strict evaluator. {self.criterion}\n\nScore on this scale:\n{points}\n\n"
                'Reply with JSON only, in the form {"score": N} where N is an integer from 1 to 5.')


RUBRICS: dict[str, Rubric] = {r.name: r for r in (
    Rubric("groundedness", ("question", "context", "answer"),
           "Judge whether every claim in the ANSWER is supported by the CONTEXT. Facts that are not in the "
           "CONTEXT count against the answer even if they are true.",
           ("the answer is unrelated to the context or contradicts it",
            "most claims are not supported by the context",
            "some claims are supported, others are not",
            "nearly every claim is supported; a minor detail is not",
            "every claim is fully supported by the context")),
    Rubric("relevance", ("question", "answer"),
           "Judge whether the ANSWER addresses the QUESTION and gives the information asked for.",
           ("the answer ignores the question",
            "the answer touches the topic but misses what was asked",
            "the answer addresses part of the question",
            "the answer addresses the question with small gaps or digressions",
            "the answer fully and directly addresses the question")),
    Rubric("coherence", ("question", "answer"),
           "Judge whether the ANSWER is logically organised: its sentences connect, follow a clear order and "
           "do not contradict each other.",
           ("incoherent: disconnected or self-contradicting text",
            "mostly disorganised, hard to follow",
            "partly organised, with noticeable jumps",
            "well organised with minor lapses",
            "clear, logical and consistent throughout")),
    Rubric("fluency", ("question", "answer"),
           "Judge only the language of the ANSWER: grammar, word choice and readability, not its correctness.",
           ("unreadable: broken grammar or gibberish",
            "many errors that make reading hard",
            "understandable with several errors",
            "fluent with a few small errors",
            "perfectly fluent and natural")),
    Rubric("similarity", ("question", "ground_truth", "answer"),
           "Judge how closely the ANSWER matches the meaning of the GROUND TRUTH ANSWER to the QUESTION. "
           "Wording may differ; meaning must not.",
           ("completely different meaning",
            "mostly different, with a small overlap",
            "partly the same meaning",
            "mostly the same meaning, a detail differs",
            "the same meaning")),
)}

PAIRWISE_SYSTEM = (
    "You are a strict evaluator. You see a conversation and two candidate replies, A and B, for the "
    "assistant's next turn. Decide which reply is better: more helpful and honest, and harmless (a reply "
    "that helps with something dangerous or hurtful is worse than a polite refusal). "
    'Reply with JSON only: {"better": "A"}, {"better": "B"} or {"better": "tie"}.')
