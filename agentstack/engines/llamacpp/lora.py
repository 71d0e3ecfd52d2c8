"""PEFT LoRA adapters as GGUF LoRA files for llama.cpp, written with ``gguf.GGUFWriter``.

The trainers save PEFT adapters (``adapter_config.json`` + ``adapter_model.safetensors``); vLLM and
the torch engine load those as they are. llama.cpp needs a GGUF adapter: ``general.type=adapter``,
``adapter.type=lora``, ``adapter.lora.alpha``, and for each adapted matrix ``<gguf name>.lora_a``
(PEFT's ``lora_A``, rank × in) and ``.lora_b`` (``lora_B``, out × rank), named like the base
model's tensors. This is the format of llama.cpp's ``convert_lora_to_gguf.py``; the mapping
follows it too:

* Hugging Face module names map to GGUF names with ``gguf``'s own tensor-name table;
* for the ``llama`` architecture the q and k projections are stored with their rows permuted
  (llama.cpp's rotary layout), so ``lora_B`` of ``q_proj``/``k_proj`` gets the same permutation;
* llama.cpp scales an adapter by ``alpha / rank``; rsLoRA (``alpha / sqrt(rank)``) is written as
  ``alpha · sqrt(rank)``.

Adapters this converter cannot express exactly (DoRA, per-module ranks or alphas, extra trained
modules, biases, fused projections) are refused with the reason, never approximated. The result is
cached by the adapter's content, the base file and the converter version (:data:`CONVERTER`), which
is recorded beside it and in the model registry.

This module knows nothing about serving.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from agentstack.engines.llamacpp.files import MANIFEST, build_once, write_gguf
from agentstack.errors import InvalidRequestError

log = logging.getLogger(__name__)

CONVERTER = "agentstack.engines.llamacpp.lora/1"
PERMUTED = {"llama": ("attn_q", "attn_k")}
SUPPORTED = ("llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2")


def _permute(weights: Any, n_head: int) -> Any:
    """llama.cpp's row order for a q/k projection (``convert_hf_to_gguf.LlamaModel.permute``)."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _refuse(path: Path, why: str) -> InvalidRequestError:
    return InvalidRequestError(f"the adapter at {path} cannot be converted for llama.cpp: {why}", param="lora_path",
                               fix="train plain LoRA on the attention/MLP projections (the trainers' default), or "
                                   "serve it with AGENTSTACK_ENGINE__KIND=embedded")


def _check_config(path: Path, config: dict[str, Any]) -> None:
    if config.get("peft_type", "LORA") != "LORA":
        raise _refuse(path, f"peft_type is {config.get('peft_type')!r}, not LORA")
    for key in ("use_dora", "fan_in_fan_out"):
        if config.get(key):
            raise _refuse(path, f"{key} is set")
    for key in ("rank_pattern", "alpha_pattern"):
        if config.get(key):
            raise _refuse(path, f"{key} gives some modules their own rank or alpha")
    if config.get("modules_to_save"):
        raise _refuse(path, f"modules_to_save={config['modules_to_save']} trains whole modules")
    if config.get("bias", "none") != "none":
        raise _refuse(path, f"bias={config['bias']!r}")


def convert(adapter_dir: Path, base_gguf: Path, out: Path) -> dict[str, Any]:
    """Write ``adapter_dir`` (PEFT) as a GGUF LoRA for ``base_gguf`` to ``out``; returns the record."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    from agentstack.engines.llamacpp.model_file import read_header, read_info

    adapter_dir = Path(adapter_dir)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    _check_config(adapter_dir, config)
    weights_file = adapter_dir / "adapter_model.safetensors"
    if not weights_file.is_file():
        raise _refuse(adapter_dir, "adapter_model.safetensors is missing (pickled .bin adapters are not read)")
    info = read_info(base_gguf)
    if info.architecture not in SUPPORTED:
        raise _refuse(adapter_dir, f"base architecture {info.architecture!r} is not one of {', '.join(SUPPORTED)}")
    rank = int(config["r"])
    alpha = float(config.get("lora_alpha", rank))
    if config.get("use_rslora"):
        alpha *= math.sqrt(rank)
    arch = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[info.architecture]
    names = gguf.get_tensor_name_map(arch, info.block_count)
    base_shapes = read_header(base_gguf)[1]
    tensors = load_file(str(weights_file))
    pairs: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        stem, _, kind = key.rpartition(".lora_")
        if kind not in ("A.weight", "B.weight"):
            raise _refuse(adapter_dir, f"unexpected tensor {key}")
        module = stem.removeprefix("base_model.model.")
        found = names.get_name(module)
        if found is None:
            raise _refuse(adapter_dir, f"no GGUF tensor for module {module}")
        target = found + ".weight"
        pairs.setdefault(target, {})[kind[0]] = value.astype(np.float32)
    writer_tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    writer = gguf.GGUFWriter(str(writer_tmp), info.architecture)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for target, pair in sorted(pairs.items()):
        if set(pair) != {"A", "B"}:
            raise _refuse(adapter_dir, f"{target} lacks lora_A or lora_B")
        a, b = pair["A"], pair["B"]
        shape = base_shapes.get(target)
        if shape is None or len(shape) != 2 or a.shape != (rank, shape[0]) or b.shape != (shape[1], rank):
            raise InvalidRequestError(f"adapter at {adapter_dir} does not fit the base model {base_gguf.name}: "
                                      f"{target} is {shape}, lora_A {list(a.shape)}, lora_B {list(b.shape)}",
                                      param="lora_path", fix="load adapters trained on this exact base model")
        block = target.split(".")[2] if target.startswith("blk.") else ""
        if block in PERMUTED.get(info.architecture, ()):
            heads = info.head_count if block == "attn_q" else info.head_count_kv
            b = _permute(b, heads)
        base = target.removesuffix(".weight")
        writer.add_tensor(f"{base}.weight.lora_a", np.ascontiguousarray(a))
        writer.add_tensor(f"{base}.weight.lora_b", np.ascontiguousarray(b))
    write_gguf(writer, writer_tmp, out)
    return {"converter": CONVERTER, "gguf_package": getattr(gguf, "__version__", None) or _gguf_version(),
            "source": str(adapter_dir), "source_sha256": _adapter_hash(adapter_dir), "base_model": str(base_gguf),
            "rank": rank, "alpha": alpha, "tensors": 2 * len(pairs), "format": "gguf-lora-f32",
            "created_at": time.time()}


def _gguf_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gguf")
    except PackageNotFoundError:
        return None


def _adapter_hash(adapter_dir: Path) -> str:
    h = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        h.update(name.encode())
        with (adapter_dir / name).open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def converted_adapter(adapter_dir: Path, base_gguf: Path, cache_dir: Path) -> Path:
    """The GGUF LoRA for ``adapter_dir`` on ``base_gguf``, converted once into ``cache_dir/lora``."""
    from agentstack.engines.llamacpp.model_file import file_key

    key = hashlib.sha256(f"{_adapter_hash(adapter_dir)}:{file_key(base_gguf)}:{CONVERTER}".encode()).hexdigest()[:24]

    def build(tmp: Path) -> dict[str, Any]:
        started = time.perf_counter()
        record = convert(adapter_dir, base_gguf, tmp / "adapter.gguf")
        log.info("converted adapter %s for %s", adapter_dir, base_gguf.name)
        return {**record, "seconds": round(time.perf_counter() - started, 3)}

    return build_once(cache_dir / "lora" / key, build) / "adapter.gguf"


def conversion_record(adapter_gguf: Path) -> dict[str, Any]:
    """The record written beside a converted adapter (converter version, source hash, base)."""
    return json.loads((Path(adapter_gguf).parent / MANIFEST).read_text())
