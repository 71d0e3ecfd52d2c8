"""KTO with LoRA (TRL ``KTOTrainer``) for unpaired thumbs: real traffic rarely has both votes on
one prompt, and KTO needs only "this completion was good / bad".

Rows: ``{"prompt": [messages], "completion": "text", "label": true|false}``. ``beta`` is the KL
strength; TRL estimates the KL term from mismatched prompt/completion pairs within a batch and
logs it as ``kl``, beside rewards/chosen, rewards/rejected and rewards/margins.
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
    load_policy,
    metrics_callback,
    read_jsonl,
    setup_process,
    tokenizer_for,
    trl_args,
)


@dataclass
class KTOTrainingConfig(TrainConfig):
    """Parameters (beyond :class:`TrainConfig`):
        beta: KL strength, > 0.
        desirable_weight / undesirable_weight: loss weights of thumbs-up and thumbs-down rows; None
            = balance them by their counts, as the KTO paper recommends.
    """

    beta: float = 0.1
    desirable_weight: float | None = None
    undesirable_weight: float | None = None
    learning_rate: float = 5e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0 (it is the KL constraint), got {self.beta}")
        if self.batch_size < 2:
            raise ValueError(f"KTO estimates its KL term within a batch: batch_size must be >= 2, got "
                             f"{self.batch_size}")


def dataset(rows: list[dict[str, Any]]) -> Any:
    from datasets import Dataset

    return Dataset.from_list([{"prompt": r["prompt"], "completion": assistant(r["completion"]),
                               "label": bool(r["label"])} for r in rows])


def weights(rows: list[dict[str, Any]], config: KTOTrainingConfig) -> tuple[float, float]:
    """Loss weights so that (desirable x n_up) and (undesirable x n_down) are comparable."""
    ups = sum(bool(r["label"]) for r in rows)
    downs = len(rows) - ups
    if config.desirable_weight is not None and config.undesirable_weight is not None:
        return config.desirable_weight, config.undesirable_weight
    if not ups or not downs:
        return 1.0, 1.0
    return (max(1.0, downs / ups), 1.0) if downs > ups else (1.0, max(1.0, ups / downs))


def train(config: KTOTrainingConfig) -> dict[str, Any]:
    from trl import KTOConfig, KTOTrainer

    setup_process(config)
    started = time.time()
    rows = read_jsonl(config.train_file)
    desirable, undesirable = weights(rows, config)
    model, peft_config = load_policy(config)
    args = trl_args(KTOConfig, config, beta=config.beta, max_length=config.max_length,
                    desirable_weight=desirable, undesirable_weight=undesirable)
    trainer = KTOTrainer(model=model, args=args, train_dataset=dataset(rows),
                         processing_class=tokenizer_for(config.model_dir), peft_config=peft_config,
                         callbacks=[metrics_callback(config.metrics_file)])
    before = begin(trainer)
    trainer.train()
    return finish(trainer, config, before, started, {"method": "kto", "beta": config.beta,
                                                     "desirable_weight": desirable,
                                                     "undesirable_weight": undesirable})
