"""The reward model of an RLHF round, learned only from thumbs (TRL ``RewardTrainer``), and the
helpers that load and score with it (the RLHF trainer and the gate use them).

Rows: ``{"prompt", "chosen", "rejected"}`` and optionally ``rejected_prompt``: Bradley-Terry pairs
from regenerated siblings and corrections share one prompt; pairs made from unpaired thumbs
compare a liked exchange with a disliked one to a different prompt. Both are fed as whole
conversations, so each side is scored with its own prompt.

The model is the base LM with a scalar head (``AutoModelForSequenceClassification``,
``num_labels=1``) and a LoRA; the head is saved with the adapter (``modules_to_save``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from agentstack.alignment.trainers.common import (
    TrainConfig,
    assistant,
    begin,
    finish,
    lora_config,
    metrics_callback,
    read_jsonl,
    setup_process,
    tokenizer_for,
    trl_args,
    use_cuda,
)

SUBDIR = "reward_model"


@dataclass
class RewardTrainingConfig(TrainConfig):
    """Parameters (beyond :class:`TrainConfig`; ``init_adapter`` is ignored: a reward model always
    starts from the base model with a fresh head):
        heldout_file: pairs the trained model is scored on (accuracy = chosen scored above rejected).
        center_rewards_coefficient: pulls the mean reward towards 0 (TRL), keeping scores comparable.
    """

    heldout_file: str | None = None
    center_rewards_coefficient: float | None = 0.01
    learning_rate: float = 1e-4


def conversation(prompt: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    return [*prompt, *assistant(text)]


def dataset(rows: list[dict[str, Any]]) -> Any:
    from datasets import Dataset

    return Dataset.from_list([{"chosen": conversation(r["prompt"], r["chosen"]),
                               "rejected": conversation(r.get("rejected_prompt") or r["prompt"], r["rejected"])}
                              for r in rows])


def base_classifier(model_dir: str, tokenizer: Any, cuda: bool = False) -> Any:
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=1, dtype=torch.bfloat16 if cuda else torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def load_reward_model(model_dir: str, adapter_dir: str, cuda: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer): the reward model with its adapter merged, in eval mode (on CUDA in
    bf16 when ``cuda``)."""
    from peft import PeftModel

    tok = tokenizer_for(model_dir)
    model = PeftModel.from_pretrained(base_classifier(model_dir, tok, cuda), adapter_dir).merge_and_unload()
    model.config.pad_token_id = tok.pad_token_id
    return (model.to("cuda") if cuda else model).eval(), tok


def score(model: Any, tokenizer: Any, conversations: list[list[dict[str, Any]]], *, batch_size: int = 8,
          max_length: int = 512) -> list[float]:
    """Scalar rewards for whole conversations (the last message is the scored answer)."""
    import torch

    texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations]
    out: list[float] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                enc = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True, truncation=True,
                                max_length=max_length, add_special_tokens=False).to(model.device)
                out.extend(model(**enc).logits[:, 0].float().tolist())
    finally:
        tokenizer.padding_side = side
    return out


def pair_accuracy(model: Any, tokenizer: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Share of pairs whose chosen side scores above the rejected side."""
    if not rows:
        return {"n": 0, "accuracy": None}
    chosen = score(model, tokenizer, [conversation(r["prompt"], r["chosen"]) for r in rows])
    rejected = score(model, tokenizer, [conversation(r.get("rejected_prompt") or r["prompt"], r["rejected"])
                                        for r in rows])
    wins = sum(c > r for c, r in zip(chosen, rejected))
    return {"n": len(rows), "accuracy": wins / len(rows),
            "mean_margin": sum(c - r for c, r in zip(chosen, rejected)) / len(rows)}


def train(config: RewardTrainingConfig) -> dict[str, Any]:
    from trl import RewardConfig, RewardTrainer

    setup_process(config)
    started = time.time()
    tok = tokenizer_for(config.model_dir)
    model = base_classifier(config.model_dir, tok, use_cuda(config))
    args = trl_args(RewardConfig, config, max_length=config.max_length,
                    center_rewards_coefficient=config.center_rewards_coefficient)
    trainer = RewardTrainer(model=model, args=args, train_dataset=dataset(read_jsonl(config.train_file)),
                            processing_class=tok, peft_config=lora_config(config, "SEQ_CLS"),
                            callbacks=[metrics_callback(config.metrics_file)])
    before = begin(trainer)
    trainer.train()

    def evaluate(adapter_dir: Any) -> dict[str, Any]:
        # Scores with the adapter as saved (main process only): the training model may be sharded
        # across ranks (ZeRO-3, FSDP), and the file is what the RLHF step and the gate load.
        if not config.heldout_file:
            return {}
        saved, saved_tok = load_reward_model(config.model_dir, str(adapter_dir), use_cuda(config))
        return {"heldout": pair_accuracy(saved, saved_tok, read_jsonl(config.heldout_file)),
                "train_accuracy": pair_accuracy(saved, saved_tok, read_jsonl(config.train_file)[:64])}

    return finish(trainer, config, before, started, {"method": "reward_model"}, subdir=SUBDIR,
                  evaluate=evaluate)
