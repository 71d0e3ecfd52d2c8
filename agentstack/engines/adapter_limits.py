"""What LoRA adapters an engine can serve, checked before anything is trained or loaded.

vLLM refuses some adapters only when asked to load them, answering 500: a rank above its
``--max-lora-rank``, DoRA, ``modules_to_save`` (other than a classifier head), bias terms, or
target modules its model implementation has no LoRA layer for. agentstack checks the same rules
earlier: a job spec when it is submitted (before any training), and an adapter directory before
it is sent to vLLM, so the operator gets a 400 that names the limit instead of "engine unavailable".

This module knows nothing about HTTP or training; it reads ``adapter_config.json`` and job fields.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentstack.errors import InvalidRequestError

# The projection layers vLLM wraps with LoRA in decoder-only models such as Llama/SmolLM2.
VLLM_TARGETS = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
# The ranks vLLM's --max-lora-rank accepts.
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def adapter_problems(config: dict[str, Any], *, max_rank: int, vllm: bool) -> list[str]:
    """Why an engine would refuse an adapter with this ``adapter_config.json`` (empty: it would not)."""
    problems = []
    ranks = [config.get("r") or 0, *(config.get("rank_pattern") or {}).values()]
    rank = max(int(r) for r in ranks)
    if rank > max_rank:
        problems.append(f"its rank {rank} is above the engine's max LoRA rank {max_rank} "
                        "(engine.max_lora_rank, vLLM's --max-lora-rank)")
    if not vllm:
        return problems
    if config.get("use_dora"):
        problems.append("it is a DoRA adapter (use_dora), which vLLM does not serve")
    saved = [m for m in config.get("modules_to_save") or [] if m not in ("classifier", "score")]
    if saved:
        problems.append(f"it saves full modules {saved} (modules_to_save), which vLLM does not serve")
    if config.get("bias", "none") != "none" or config.get("lora_bias"):
        problems.append("it trains bias terms, which vLLM does not serve")
    targets = config.get("target_modules")
    if isinstance(targets, list):
        unknown = sorted(set(targets) - VLLM_TARGETS)
        if unknown:
            problems.append(f"it targets {unknown}; vLLM serves LoRA on {sorted(VLLM_TARGETS)}")
    return problems


def check_adapter_dir(path: Path, *, max_rank: int, vllm: bool) -> None:
    """Raise :class:`InvalidRequestError` when the adapter at ``path`` cannot be served. An
    unreadable directory passes: the model server may see paths this process cannot."""
    config_file = Path(path) / "adapter_config.json"
    try:
        config = json.loads(config_file.read_text("utf-8"))
    except (OSError, ValueError):
        return
    problems = adapter_problems(config, max_rank=max_rank, vllm=vllm)
    if problems:
        raise InvalidRequestError(f"the adapter at {path} cannot be served: {'; '.join(problems)}",
                                  param="lora_path", fix="retrain it as a plain LoRA within the limits, or raise "
                                                         "engine.max_lora_rank together with vLLM's --max-lora-rank")


def check_job_lora(rank: int, targets: list[str], *, max_rank: int, vllm: bool) -> None:
    """Refuse a job whose adapter the engine could not load, before it trains."""
    problems = adapter_problems({"r": rank, "target_modules": list(targets)}, max_rank=max_rank, vllm=vllm)
    if problems:
        raise InvalidRequestError(f"this job's adapter could not be served: {'; '.join(problems)}",
                                  param="hyperparameters.lora_r" if rank > max_rank else
                                  "hyperparameters.lora_targets",
                                  fix=f"use lora_r <= {max_rank}" + (f" and lora_targets within "
                                                                     f"{sorted(VLLM_TARGETS)}" if vllm else ""))
