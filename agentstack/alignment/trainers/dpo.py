"""DPO with LoRA (TRL ``DPOTrainer``): the default method, for preference pairs.

Rows: ``{"prompt": [messages], "chosen": "text", "rejected": "text"}`` (conversational; the chat
template is applied by TRL exactly as the engine applies it when serving). ``beta`` is the KL
strength: the implicit reward is beta * log(pi / pi_ref), and a larger beta keeps the policy closer
to the reference (the base model, or the served adapter when ``init_adapter`` is set).

Logged per step: loss, rewards/chosen, rewards/rejected, rewards/margins, rewards/accuracies,
logps. The gate measures the actual KL to the served model afterwards.
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
class DPOTrainingConfig(TrainConfig):
    """Parameters (beyond :class:`TrainConfig`):
        beta: KL strength (TRL's DPO beta), > 0.
        loss_type: TRL DPO loss (``sigmoid`` = the DPO paper's).
    """

    beta: float = 0.1
    loss_type: str = "sigmoid"
    learning_rate: float = 5e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0 (it is the KL constraint), got {self.beta}")


def dataset(rows: list[dict[str, Any]]) -> Any:
    from datasets import Dataset

    return Dataset.from_list([{"prompt": r["prompt"], "chosen": assistant(r["chosen"]),
                               "rejected": assistant(r["rejected"])} for r in rows])


def train(config: DPOTrainingConfig) -> dict[str, Any]:
    from trl import DPOConfig, DPOTrainer

    setup_process(config)
    started = time.time()
    model, peft_config = load_policy(config)
    args = trl_args(DPOConfig, config, beta=config.beta, loss_type=[config.loss_type], max_length=config.max_length)
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset(read_jsonl(config.train_file)),
                         processing_class=tokenizer_for(config.model_dir), peft_config=peft_config,
                         callbacks=[metrics_callback(config.metrics_file)])
    before = begin(trainer)
    trainer.train()
    return finish(trainer, config, before, started, {"method": "dpo", "beta": config.beta})
