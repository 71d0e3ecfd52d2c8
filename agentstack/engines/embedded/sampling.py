"""Per-sequence logits processing and sampling.

Every sequence in a batch has its own parameters and its own ``torch.Generator``, so a seeded or
greedy request produces the same tokens whether it runs alone or beside fifteen others.

Order, as in vLLM: logit bias, repetition / presence / frequency penalties, EOS masking
(``min_tokens``, ``ignore_eos``), the structured-decoding mask, then (unless greedy) temperature,
top-k, top-p and min-p, and one draw from the sequence's generator. Log-probabilities are reported
from the processed distribution before temperature.

This module knows nothing about batching or text.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from agentstack.engines.base import TokenLogprob
from agentstack.engines.params import SamplingParams

# A structured-decoding hook: given the ids generated so far, return a bool mask of allowed tokens
# (shape [vocab]) or None for "anything goes"; ``advance`` is told each chosen token.
MaskFn = Callable[[list[int]], "torch.Tensor | None"]


@dataclass
class Sampler:
    params: SamplingParams
    eos_ids: frozenset[int]
    choice_index: int = 0
    mask_fn: MaskFn | None = None
    advance_fn: Callable[[int], None] | None = None
    generator: torch.Generator | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        p = self.params
        if not p.greedy:
            seed = p.seed + self.choice_index if p.seed is not None else random.getrandbits(63)
            self.generator = torch.Generator().manual_seed(seed % (2**63))
        self._needs_processing = bool(p.logit_bias or p.repetition_penalty != 1.0 or p.presence_penalty
                                      or p.frequency_penalty or p.min_tokens or p.ignore_eos
                                      or self.mask_fn is not None)
        self._bias: tuple[torch.Tensor, torch.Tensor] | None = None
        if p.logit_bias:
            self._bias = (torch.tensor(list(p.logit_bias.keys()), dtype=torch.long),
                          torch.tensor(list(p.logit_bias.values()), dtype=torch.float32))

    @property
    def plain_greedy(self) -> bool:
        """Greedy with nothing to apply: the batch-wide argmax is this row's answer."""
        return self.params.greedy and not self._needs_processing and not self.params.logprobs

    def process(self, logits: torch.Tensor, prompt_ids: list[int], out_ids: list[int]) -> torch.Tensor:
        p = self.params
        if not self._needs_processing:
            return logits
        logits = logits.clone()
        vocab = logits.shape[-1]
        if self._bias is not None:
            ids, vals = self._bias
            keep = ids < vocab
            logits[ids[keep]] += vals[keep]
        if p.repetition_penalty != 1.0:
            seen = torch.tensor(sorted(set(prompt_ids) | set(out_ids)), dtype=torch.long)
            if seen.numel():
                vals = logits[seen]
                logits[seen] = torch.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
        if (p.presence_penalty or p.frequency_penalty) and out_ids:
            counts = torch.bincount(torch.tensor(out_ids, dtype=torch.long), minlength=vocab)[:vocab].float()
            logits -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).float()
        if p.ignore_eos or len(out_ids) < p.min_tokens:
            for e in self.eos_ids:
                if e < vocab:
                    logits[e] = float("-inf")
        if self.mask_fn is not None:
            allowed = self.mask_fn(out_ids)
            if allowed is not None:
                logits = logits.masked_fill(~allowed[:vocab], float("-inf"))
        return logits

    def choose(self, logits: torch.Tensor) -> int:
        p = self.params
        if p.greedy:
            return int(torch.argmax(logits))
        logits = logits / p.temperature
        if p.top_k > 0 and p.top_k < logits.shape[-1]:
            kth = torch.topk(logits, p.top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if p.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            cumulative = torch.cumsum(sorted_probs, dim=-1)
            drop = cumulative - sorted_probs > p.top_p  # keep the smallest set reaching top_p
            sorted_probs = sorted_probs.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        if p.min_p > 0:
            probs = probs.masked_fill(probs < p.min_p * probs.max(), 0.0)
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def logprobs(self, logits: torch.Tensor, token: int, decode: Callable[[int], str]) -> TokenLogprob:
        lp = torch.log_softmax(logits.float(), dim=-1)
        top: list[tuple[str, float]] = []
        if self.params.top_logprobs:
            values, ids = torch.topk(lp, self.params.top_logprobs)
            top = [(decode(int(i)), float(v)) for v, i in zip(values, ids)]
        return TokenLogprob(token=decode(token), logprob=float(lp[token]), top=top)
