"""One module per training method, each a config dataclass plus ``train(config) -> summary``:

* ``dpo``    DPOTrainingConfig     pairs, LoRA (default)
* ``kto``    KTOTrainingConfig     unpaired thumbs
* ``reward`` RewardTrainingConfig  the reward model of an RLHF round (and of the gate's win rate)
* ``rlhf``   RLHFTrainingConfig    RLOO or GRPO against the reward model, KL penalty beta > 0
* ``sft``    SFTTrainingConfig     constitutional revisions

``CONFIGS`` maps a method name to (module, config class) without importing torch or TRL.
"""

from __future__ import annotations

import importlib
from typing import Any

CONFIGS: dict[str, tuple[str, str]] = {
    "dpo": ("agentstack.alignment.trainers.dpo", "DPOTrainingConfig"),
    "kto": ("agentstack.alignment.trainers.kto", "KTOTrainingConfig"),
    "reward": ("agentstack.alignment.trainers.reward", "RewardTrainingConfig"),
    "rlhf": ("agentstack.alignment.trainers.rlhf", "RLHFTrainingConfig"),
    "sft": ("agentstack.alignment.trainers.sft", "SFTTrainingConfig"),
}


def config_class(method: str) -> Any:
    if method not in CONFIGS:
        raise ValueError(f"unknown training method {method!r}; expected one of {sorted(CONFIGS)}")
    module, name = CONFIGS[method]
    return getattr(importlib.import_module(module), name)


def run(method: str, config: Any) -> dict[str, Any]:
    module = importlib.import_module(CONFIGS[method][0])
    return module.train(config)
