"""What every trainer shares: the base config dataclass, loading the policy with LoRA, TRL
arguments suited to a small CPU box or a GPU host, the metrics callback, saving the adapter as
safetensors, and a record of which trainable parameters changed.

Each trainer module (``dpo.py``, ``kto.py``, ``reward.py``, ``rlhf.py``, ``sft.py``) holds one
config dataclass (every field documented, cross-field checks in ``__post_init__``) and a
``train(config) -> dict`` entry; ``alignment/train.py`` is the process entry point that picks one.

This module knows nothing about feedback, jobs or the registry; it reads JSONL and writes a
directory.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ADAPTER_SUBDIR = "adapter"
SUMMARY = "summary.json"


@dataclass
class TrainConfig:
    """Fields common to every trainer. Paths are strings so a config round-trips through JSON.

    Parameters:
        model_dir: base model directory (safetensors weights and tokenizer).
        output_dir: run directory; the adapter is saved to ``output_dir/adapter``, the summary to
            ``output_dir/summary.json``. No checkpoints are kept.
        train_file: JSONL training rows (each trainer documents its row format).
        metrics_file: JSONL the metrics callback appends one line per logging step to (rank 0).
        init_adapter: an adapter to continue training; TRL then keeps a frozen copy of it as the
            KL reference. None: a fresh LoRA, with the base model as the reference.
        max_steps: optimizer steps; None = ``epochs`` passes over the data.
        epochs: passes over the data when ``max_steps`` is None.
        learning_rate: AdamW learning rate.
        batch_size: examples per device per step.
        grad_accum: gradient accumulation steps.
        max_length: tokens per prompt + completion (longer rows are truncated).
        lora_r, lora_alpha, lora_dropout, lora_targets: the LoRA shape (fresh adapters only).
        seed: seed for data order, initialisation and sampling.
        threads: torch intra-op threads (None = leave torch's default).
        device: ``auto`` (CUDA when visible), ``cpu`` or ``cuda``.
        gradient_checkpointing: trade compute for memory (off: small models on CPU).
    """

    model_dir: str = ""
    output_dir: str = ""
    train_file: str = ""
    metrics_file: str | None = None
    init_adapter: str | None = None
    max_steps: int | None = None
    epochs: float = 1.0
    learning_rate: float = 5e-5
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 256
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        for name in ("model_dir", "output_dir", "train_file"):
            if not getattr(self, name):
                raise ValueError(f"{type(self).__name__}.{name} is required")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or None, got {self.max_steps}")
        if self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if not 0 < self.learning_rate <= 1:
            raise ValueError(f"learning_rate must be in (0, 1], got {self.learning_rate}")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError(f"batch_size ({self.batch_size}) and grad_accum ({self.grad_accum}) must be >= 1")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")

    def to_json(self) -> dict[str, Any]:
        return {"trainer": type(self).__name__, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names - {"trainer", "method", "launcher"})
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown fields {unknown}")
        return cls(**{k: v for k, v in data.items() if k in names})


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def use_cuda(config: TrainConfig) -> bool:
    import torch

    if config.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but no CUDA device is visible")
    return config.device != "cpu" and torch.cuda.is_available()


def setup_process(config: TrainConfig) -> None:
    import torch

    if config.threads:
        torch.set_num_threads(config.threads)
    from transformers import set_seed

    set_seed(config.seed)


def tokenizer_for(model_dir: str) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def lora_config(config: TrainConfig, task_type: str = "CAUSAL_LM") -> Any:
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.lora_targets), task_type=task_type)


def load_policy(config: TrainConfig) -> tuple[Any, Any]:
    """(model, peft_config): the base causal LM, either wrapped with ``init_adapter`` (trainable;
    peft_config None) or bare with a fresh LoRA config for TRL to apply."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if use_cuda(config) else torch.float32
    model = AutoModelForCausalLM.from_pretrained(config.model_dir, dtype=dtype)
    if config.init_adapter:
        from peft import PeftModel

        return PeftModel.from_pretrained(model, config.init_adapter, is_trainable=True), None
    return model, lora_config(config)


def launched_sharded() -> str | None:
    """``deepspeed`` or ``fsdp`` when ``accelerate launch`` asked for a sharded run (it says so in the
    environment of every rank), else None."""
    import os

    for kind in ("deepspeed", "fsdp"):
        if os.environ.get(f"ACCELERATE_USE_{kind.upper()}", "").lower() == "true":
            return kind
    return None


def trl_args(cls: Any, config: TrainConfig, **extra: Any) -> Any:
    """A TRL config for ``config`` (no checkpoints, no trackers, bf16 only on CUDA).

    On the CPU, plain multi-process runs need ``use_cpu`` (accelerate then runs DDP over gloo), but
    accelerate skips DeepSpeed when asked for the CPU: a DeepSpeed launch keeps ``use_cpu`` off and
    names gloo, and DeepSpeed's own CPU accelerator places the ranks."""
    cuda = use_cuda(config)
    deepspeed_on_cpu = not cuda and launched_sharded() == "deepspeed"
    return cls(output_dir=str(Path(config.output_dir) / "trl"), max_steps=config.max_steps or -1,
               num_train_epochs=config.epochs, learning_rate=config.learning_rate,
               per_device_train_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
               logging_steps=1, save_strategy="no", report_to=[], bf16=cuda, fp16=False,
               use_cpu=not cuda and not deepspeed_on_cpu, ddp_backend="gloo" if deepspeed_on_cpu else None,
               gradient_checkpointing=config.gradient_checkpointing, seed=config.seed, data_seed=config.seed,
               dataloader_num_workers=0, disable_tqdm=True, lr_scheduler_type="constant_with_warmup",
               warmup_steps=0, **extra)


def metrics_callback(path: str | None) -> Any:
    """A TrainerCallback appending each log (loss, reward margins, KL, ...) as one JSON line."""
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if path is None or not state.is_world_process_zero or not logs:
                return
            row = {"step": state.global_step, "epoch": state.epoch, "time": time.time(),
                   **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
                f.flush()

    return MetricsCallback()


def sharding(trainer: Any) -> dict[str, Any]:
    """How the run is spread: accelerate's distributed type, and the ZeRO stage or FSDP version.

    Refuses a launch that asked for sharding the run does not get: accelerate enables FSDP only on
    GPU-like devices and silently trains plain DDP on the CPU, and a ZeRO-3 run must be able to
    gather its parameters for saving (``zero3_save_16bit_model: true``). Both are checked before
    training, not after it."""
    acc = trainer.accelerator
    kind = str(acc.distributed_type).rsplit(".", 1)[-1]
    info: dict[str, Any] = {"distributed_type": kind}
    asked = launched_sharded()
    if asked == "fsdp" and kind != "FSDP":
        raise RuntimeError(f"the accelerate config asks for FSDP, but accelerate set up {kind}: it enables FSDP "
                           "only on GPUs. On the CPU use a DeepSpeed ZeRO config (zero2.yaml/zero3.yaml) or "
                           "cpu_ddp.yaml (see docs/alignment.md)")
    if asked == "deepspeed" and kind != "DEEPSPEED":
        raise RuntimeError(f"the accelerate config asks for DeepSpeed, but accelerate set up {kind}; "
                           "is `deepspeed` installed on every machine?")
    if kind == "DEEPSPEED":
        zero = acc.deepspeed_plugin.deepspeed_config.get("zero_optimization", {})
        info["zero_stage"] = zero.get("stage")
        if zero.get("stage") == 3 and not zero.get("stage3_gather_16bit_weights_on_model_save"):
            raise RuntimeError("ZeRO-3 shards the parameters, so the adapter can only be saved if they are "
                               "gathered: set `zero3_save_16bit_model: true` in the accelerate config "
                               "(stage3_gather_16bit_weights_on_model_save in a DeepSpeed JSON)")
    elif kind == "FSDP":
        info["fsdp_version"] = acc.state.fsdp_plugin.fsdp_version
    return info


def begin(trainer: Any) -> dict[str, Any]:
    """Call before ``trainer.train()``: check the sharding (:func:`sharding`) and snapshot the
    trainable parameters (whole: the model is not sharded until training starts)."""
    sharding(trainer)
    return trainable_snapshot(trainer.model)


def trainable_snapshot(model: Any) -> dict[str, Any]:
    return {n: p.detach().float().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def changed_parameters(state: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """How many trainable tensors moved during training, and the largest change, from the gathered
    state dict (``state``) and the snapshot taken before training."""
    changed, max_delta, missing = 0, 0.0, []
    for name, old in before.items():
        if name not in state:
            missing.append(name)
            continue
        delta = (state[name].detach().float().cpu() - old).abs().max().item()
        changed += int(delta > 0)
        max_delta = max(max_delta, delta)
    if missing:
        raise RuntimeError(f"{len(missing)} trainable tensors are missing from the gathered state dict "
                           f"(first: {missing[0]})")
    return {"trainable_tensors": len(before), "changed_tensors": changed, "max_abs_delta": max_delta}


def gather_state(trainer: Any) -> dict[str, Any]:
    """The whole model's state dict, gathered by the accelerator on the main process. Every rank
    must call it: under ZeRO-3 and FSDP the parameters are sharded and gathering is collective (a
    plain ``state_dict()`` on rank 0 alone would see empty shards, or hang). Other ranks get {}."""
    state = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    return state if trainer.accelerator.is_main_process else {}


def verify_saved(path: Path, expected: dict[str, Any]) -> int:
    """Check the written adapter against the trained weights: every tensor there, the same shape
    and values. Returns the number of tensors checked."""
    import torch
    from safetensors.torch import load_file

    saved = load_file(str(path / "adapter_model.safetensors"))
    problems = [f"{name}: missing" for name in expected if name not in saved]
    for name, want in expected.items():
        got = saved.get(name)
        if got is None:
            continue
        if tuple(got.shape) != tuple(want.shape):
            problems.append(f"{name}: saved shape {tuple(got.shape)}, trained {tuple(want.shape)}")
        elif not torch.equal(got, want.detach().to(got.dtype).cpu()):
            problems.append(f"{name}: saved values differ from the trained ones")
    if problems:
        raise RuntimeError(f"the saved adapter in {path} does not match the trained weights ({len(problems)} "
                           f"tensors): {'; '.join(problems[:3])}")
    return len(expected)


def save_adapter(trainer: Any, config: TrainConfig, state: dict[str, Any], before: dict[str, Any],
                 subdir: str = ADAPTER_SUBDIR) -> tuple[Path, int]:
    """Save the trained ("default") adapter from the gathered ``state`` as safetensors under
    ``output_dir/subdir`` (main process), and verify the file: the tensors PEFT picks from the
    gathered state, with the shapes of the unsharded parameters in ``before``."""
    from peft import get_peft_model_state_dict

    out = Path(config.output_dir) / subdir
    checked = 0
    if trainer.accelerator.is_main_process:
        model = trainer.accelerator.unwrap_model(trainer.model_wrapped)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(out), state_dict=state, selected_adapters=["default"], safe_serialization=True)
        expected = get_peft_model_state_dict(model, state_dict=state, adapter_name="default")
        shapes = get_peft_model_state_dict(model, state_dict=before, adapter_name="default")
        for name, tensor in shapes.items():
            if name in expected and tuple(expected[name].shape) != tuple(tensor.shape):
                raise RuntimeError(f"gathered {name} has shape {tuple(expected[name].shape)}, the model's "
                                   f"parameter {tuple(tensor.shape)}: the shards were not gathered")
        checked = verify_saved(out, expected)
    trainer.accelerator.wait_for_everyone()
    return out, checked


def finish(trainer: Any, config: TrainConfig, before: dict[str, Any], started: float,
           extra: dict[str, Any] | None = None, subdir: str = ADAPTER_SUBDIR,
           evaluate: Any = None) -> dict[str, Any]:
    """Gather the trained weights, save and verify the adapter, and write ``summary.json``: final
    metrics, parameter changes, timing, how the run was spread (``sharded_tensors``: trainable
    tensors that rank 0 held only a shard of, which the gather completed). ``evaluate(adapter_dir)
    -> dict``, if given, runs on the main process on the saved adapter; its result joins the summary."""
    local = dict(trainer.accelerator.unwrap_model(trainer.model_wrapped).named_parameters())
    sharded = sum(1 for name, p in local.items() if name in before and p.numel() != before[name].numel())
    state = gather_state(trainer)
    change = changed_parameters(state, before) if trainer.accelerator.is_main_process else None
    path, checked = save_adapter(trainer, config, state, before, subdir)
    del state
    logs = [h for h in trainer.state.log_history if "loss" in h]
    summary = {"steps": trainer.state.global_step, "train_seconds": round(time.time() - started, 2),
               "final": logs[-1] if logs else {}, "parameters": change, "adapter": str(path),
               "saved_tensors": checked, "sharded_tensors": sharded,
               "world_size": trainer.accelerator.num_processes, "backend": getattr(trainer.accelerator.state, "backend", None), **sharding(trainer), **(extra or {})}
    if trainer.accelerator.is_main_process:
        if evaluate is not None:
            summary.update(evaluate(path))
        Path(config.output_dir, SUMMARY).write_text(json.dumps(summary, indent=2, default=str), "utf-8")
        log.info("trained %d steps in %.1f s; %d/%d trainable tensors changed", summary["steps"],
                 summary["train_seconds"], change["changed_tensors"], change["trainable_tensors"])
    return summary


def assistant(text: str) -> list[dict[str, Any]]:
    return [{"role": "assistant", "content": text}]
