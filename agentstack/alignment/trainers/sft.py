"""Supervised fine-tuning on constitutional revisions (the supervised stage of Constitutional AI),
LoRA, TRL ``SFTTrainer`` with the loss on the completion only.

Rows: ``{"prompt": [messages], "completion": "text"}``: a red-team or thumbs-down prompt and the
model's own revision of its answer. There is no KL term in SFT; the gate's KL check bounds drift.
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
class SFTTrainingConfig(TrainConfig):
    learning_rate: float = 5e-5


def dataset(rows: list[dict[str, Any]]) -> Any:
    from datasets import Dataset

    return Dataset.from_list([{"prompt": r["prompt"], "completion": assistant(r["completion"])} for r in rows])


def train(config: SFTTrainingConfig) -> dict[str, Any]:
    from trl import SFTConfig, SFTTrainer

    setup_process(config)
    started = time.time()
    model, peft_config = load_policy(config)
    args = trl_args(SFTConfig, config, max_length=config.max_length, completion_only_loss=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset(read_jsonl(config.train_file)),
                         processing_class=tokenizer_for(config.model_dir), peft_config=peft_config,
                         callbacks=[metrics_callback(config.metrics_file)])
    before = begin(trainer)
    trainer.train()
    return finish(trainer, config, before, started, {"method": "sft"})
