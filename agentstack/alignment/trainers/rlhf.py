"""RLHF's second half: the policy optimised against the thumbs reward model with an explicit KL
penalty to the reference (TRL ``RLOOTrainer``, or ``GRPOTrainer``), LoRA on the policy.

Rows: ``{"prompt": [messages]}``, the round's training prompts. For each prompt the trainer samples
``num_generations`` completions, scores them with the reward model, and (RLOO) subtracts
``beta`` x KL(policy || reference) from each reward, the classic RLHF objective; GRPO adds
``beta`` x KL to its loss instead. Both log ``kl`` every step, beside reward and its spread.
``beta`` must be > 0: without it nothing holds the policy near the reference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from agentstack.alignment.trainers.common import (
    TrainConfig,
    begin,
    finish,
    load_policy,
    metrics_callback,
    read_jsonl,
    setup_process,
    tokenizer_for,
    trl_args,
)


@dataclass
class RLHFTrainingConfig(TrainConfig):
    """Parameters (beyond :class:`TrainConfig`):
        reward_model_dir: the reward model's adapter directory (``trainers/reward.py``).
        algorithm: ``rloo`` or ``grpo``.
        beta: KL coefficient, > 0.
        num_generations: completions sampled per prompt (the RLOO/GRPO group).
        max_completion_length: tokens per sampled completion.
        temperature: sampling temperature.
    ``batch_size`` counts completions per device per step; it is rounded up to a multiple of
    ``num_generations``.
    """

    reward_model_dir: str = ""
    algorithm: str = "rloo"
    beta: float = 0.05
    num_generations: int = 4
    max_completion_length: int = 64
    temperature: float = 1.0
    learning_rate: float = 1e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.reward_model_dir:
            raise ValueError("reward_model_dir is required (train the reward model first)")
        if self.algorithm not in ("rloo", "grpo"):
            raise ValueError(f"algorithm must be 'rloo' or 'grpo', got {self.algorithm!r}")
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0: it is the KL penalty to the reference, got {self.beta}")
        if self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 (a leave-one-out baseline), got {self.num_generations}")
        if self.batch_size % self.num_generations:
            self.batch_size = self.num_generations * -(-self.batch_size // self.num_generations)


def dataset(rows: list[dict[str, Any]]) -> Any:
    from datasets import Dataset

    return Dataset.from_list([{"prompt": r["prompt"]} for r in rows])


def train(config: RLHFTrainingConfig) -> dict[str, Any]:
    from agentstack.alignment.trainers.reward import load_reward_model

    setup_process(config)
    started = time.time()
    if config.algorithm == "rloo":
        from trl import RLOOConfig as Config
        from trl import RLOOTrainer as Trainer
    else:
        from trl import GRPOConfig as Config
        from trl import GRPOTrainer as Trainer
    reward_model, reward_tok = load_reward_model(config.model_dir, config.reward_model_dir)
    model, peft_config = load_policy(config)
    args = trl_args(Config, config, beta=config.beta, num_generations=config.num_generations,
                    max_completion_length=config.max_completion_length, temperature=config.temperature,
                    remove_unused_columns=False)
    trainer = Trainer(model=model, reward_funcs=reward_model, args=args,
                      train_dataset=dataset(read_jsonl(config.train_file)),
                      processing_class=tokenizer_for(config.model_dir), reward_processing_classes=reward_tok,
                      peft_config=peft_config, callbacks=[metrics_callback(config.metrics_file)])
    before = begin(trainer)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "kl" in h]
    return finish(trainer, config, before, started, {"method": f"rlhf-{config.algorithm}", "beta": config.beta,
                                                     "final_kl": logs[-1]["kl"] if logs else None})
