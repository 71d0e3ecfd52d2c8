"""Teacher-forced measurements of model versions for the gate: KL and perplexity drift on a
general prompt set, and how the versions rank held-out preference pairs.

:class:`ModelSet` holds the base model once and each version as a named LoRA adapter on it
(peft multi-adapter), so comparing versions costs one base model in memory. All torch work runs on
the process's compute worker (``agentstack.compute``), one task per batch.

Definitions (documented in docs/alignment.md):

* **KL(candidate || reference)**: at every answer token of the general set (prompt + reference
  answer, chat template applied), the full next-token distributions are compared:
  sum_v p_c(v) (log p_c(v) - log p_r(v)); the figure is the mean over all answer tokens, in nats.
* **Perplexity**: exp(mean negative log-likelihood) of the reference answers' tokens; the gate
  compares the candidate's to the reference model's (ratio).
* **Pair margin**: for a held-out pair, [log p(chosen) - log p(rejected)] summed over answer tokens;
  "pair preference" is the share of pairs whose margin grew from the reference to the candidate.

This module knows nothing about jobs, thresholds or HTTP.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASE = "__base__"


def load_general_prompts(path: Path | None = None) -> list[dict[str, str]]:
    """The general prompt set: JSONL rows ``{"prompt", "reference"}`` (default: the shipped set)."""
    path = Path(path) if path else Path(__file__).parent / "data" / "general_prompts.jsonl"
    rows = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
    bad = [i for i, r in enumerate(rows) if not r.get("prompt") or not r.get("reference")]
    if bad:
        raise ValueError(f"{path}: rows {bad[:5]} lack a prompt or a reference")
    return rows


@dataclass
class Drift:
    kl: float
    kl_tokens: int
    ppl_candidate: float
    ppl_reference: float
    n_prompts: int

    @property
    def ppl_ratio(self) -> float:
        return self.ppl_candidate / self.ppl_reference


class ModelSet:
    """The base model plus named adapters, for teacher-forced log-probabilities. Build and use it
    through the compute worker: every method here runs torch."""

    def __init__(self, model_dir: str | Path, *, device: str = "cpu", batch_size: int = 4, max_length: int = 512):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        self.base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).to(device).eval()
        self.model: Any = self.base
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.adapters: set[str] = set()

    def add(self, name: str, adapter_dir: str | Path) -> None:
        from peft import PeftModel

        if name in self.adapters or name == BASE:
            return
        if not self.adapters:
            self.model = PeftModel.from_pretrained(self.base, str(adapter_dir), adapter_name=name).eval()
        else:
            self.model.load_adapter(str(adapter_dir), adapter_name=name)
        self.adapters.add(name)

    def _encode(self, prompt: list[dict[str, Any]], answer: str) -> tuple[list[int], int]:
        """Token ids of prompt + answer and the index where the answer starts."""
        head = self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        full = self.tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": answer}],
                                                  tokenize=False)
        head_ids = self.tokenizer(head, add_special_tokens=False)["input_ids"]
        full_ids = self.tokenizer(full, add_special_tokens=False)["input_ids"][: self.max_length]
        return full_ids, min(len(head_ids), len(full_ids))

    def _logits(self, name: str, batch: list[list[int]]) -> Any:
        import torch

        width = max(len(ids) for ids in batch)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([x + [pad] * (width - len(x)) for x in batch], device=self.device)
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in batch], device=self.device)
        with torch.inference_mode():
            if name == BASE:
                if self.adapters:
                    with self.model.disable_adapter():
                        return self.model(input_ids=ids, attention_mask=mask).logits.float()
                return self.model(input_ids=ids, attention_mask=mask).logits.float()
            if name not in self.adapters:
                raise KeyError(f"adapter {name!r} is not loaded; call add() first")
            self.model.set_adapter(name)
            return self.model(input_ids=ids, attention_mask=mask).logits.float()

    def drift(self, candidate: str, reference: str, rows: list[dict[str, str]]) -> Drift:
        """KL(candidate || reference) and both perplexities on ``rows`` ({prompt, reference})."""
        import torch

        kl_sum, nll_c, nll_r, tokens = 0.0, 0.0, 0.0, 0
        encoded = [self._encode([{"role": "user", "content": r["prompt"]}], r["reference"]) for r in rows]
        for i in range(0, len(encoded), self.batch_size):
            chunk = encoded[i:i + self.batch_size]
            batch = [ids for ids, _ in chunk]
            lc = torch.log_softmax(self._logits(candidate, batch), dim=-1)
            lr = torch.log_softmax(self._logits(reference, batch), dim=-1)
            for j, (ids, start) in enumerate(chunk):
                # position t predicts token t+1: answer tokens start..len-1 are predicted at start-1..len-2
                pos = torch.arange(max(start - 1, 0), len(ids) - 1, device=lc.device)
                if len(pos) == 0:
                    continue
                target = torch.tensor(ids[pos[0] + 1: pos[-1] + 2], device=lc.device)
                pc, pr = lc[j, pos], lr[j, pos]
                kl_sum += float((pc.exp() * (pc - pr)).sum())
                nll_c -= float(pc.gather(1, target[:, None]).sum())
                nll_r -= float(pr.gather(1, target[:, None]).sum())
                tokens += len(pos)
        if tokens == 0:
            raise ValueError("the general prompt set produced no answer tokens")
        return Drift(kl=kl_sum / tokens, kl_tokens=tokens, ppl_candidate=math.exp(nll_c / tokens),
                     ppl_reference=math.exp(nll_r / tokens), n_prompts=len(rows))

    def sequence_logprobs(self, name: str, items: list[tuple[list[dict[str, Any]], str]]) -> list[float]:
        """Sum of the answer tokens' log-probabilities for each (prompt messages, answer)."""
        import torch

        out: list[float] = []
        encoded = [self._encode(p, a) for p, a in items]
        for i in range(0, len(encoded), self.batch_size):
            chunk = encoded[i:i + self.batch_size]
            logp = torch.log_softmax(self._logits(name, [ids for ids, _ in chunk]), dim=-1)
            for j, (ids, start) in enumerate(chunk):
                if start >= len(ids):
                    out.append(0.0)
                    continue
                pos = torch.arange(max(start - 1, 0), len(ids) - 1, device=logp.device)
                target = torch.tensor(ids[pos[0] + 1: pos[-1] + 2], device=logp.device)
                out.append(float(logp[j, pos].gather(1, target[:, None]).sum()))
        return out

    def pair_preference(self, candidate: str, reference: str, pairs: list[dict[str, Any]]) -> dict[str, Any]:
        """Share of held-out pairs whose (chosen - rejected) log-probability margin is larger under
        the candidate than under the reference model: did training move towards the users'
        preferences on prompts it never saw?"""
        if not pairs:
            return {"n": 0, "rate": None, "mean_margin_gain": None}
        items_c = [(p["prompt"], p["chosen"]) for p in pairs]
        items_r = [(p["prompt"], p["rejected"]) for p in pairs]
        cc, cr = self.sequence_logprobs(candidate, items_c), self.sequence_logprobs(candidate, items_r)
        rc, rr = self.sequence_logprobs(reference, items_c), self.sequence_logprobs(reference, items_r)
        gains = [(a - b) - (c - d) for a, b, c, d in zip(cc, cr, rc, rr)]
        return {"n": len(pairs), "rate": sum(g > 0 for g in gains) / len(gains),
                "mean_margin_gain": sum(gains) / len(gains)}
