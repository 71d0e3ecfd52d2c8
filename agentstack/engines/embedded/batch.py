"""A batch of sequences decoding together over one KV cache.

Rows are left-padded: column ``j`` of the cache is the same step for every row, and a 2-D attention
mask hides each row's padding. Each row keeps its own position ids, so a padded row computes
exactly what it would compute alone (checked by the batch-invariance test).

Groups can be built by prefill, merged (rows from another group join: the shorter side is
left-padded), split, and trimmed (finished rows leave; columns that are padding in every remaining
row are dropped). The scheduler does the bookkeeping of which sequences are in which group.

This module knows nothing about sampling, text, or threads.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from typing import Any

import torch
import torch.nn.functional as F
from transformers import DynamicCache


class KVGroup:
    def __init__(self, model: Any, cache: DynamicCache, mask: torch.Tensor, positions: torch.Tensor):
        self.model = model
        self.cache = cache
        self.mask = mask  # [B, T] long, 1 = real token
        self.positions = positions  # [B] position id of the next token to feed

    @property
    def size(self) -> int:
        return int(self.mask.shape[0])

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])

    # -- building ---------------------------------------------------------------------------------
    @classmethod
    @torch.inference_mode()
    def prefill(cls, model: Any, prompts: Seq[list[int]], pad_id: int, device: torch.device,
                chunk: int = 512) -> tuple["KVGroup", torch.Tensor]:
        """Run the prompts (left-padded) through the model in column chunks of ``chunk``.
        Returns the group and the last-position logits, shape [B, vocab]."""
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        ids, mask, positions = ids.to(device), mask.to(device), positions.to(device)
        cache = DynamicCache()
        logits = None
        for start in range(0, width, chunk):
            end = min(width, start + chunk)
            out = model(input_ids=ids[:, start:end], attention_mask=mask[:, :end],
                        position_ids=positions[:, start:end], past_key_values=cache, use_cache=True,
                        logits_to_keep=1)
            logits = out.logits[:, -1, :]
        assert logits is not None
        group = cls(model, cache, mask, positions[:, -1] + 1)
        return group, logits.float()

    # -- decoding ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row ([B] long); return next-token logits [B, vocab]."""
        ones = torch.ones((self.size, 1), dtype=self.mask.dtype, device=self.mask.device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        out = self.model(input_ids=tokens.view(-1, 1).to(self.mask.device), attention_mask=self.mask,
                         position_ids=self.positions.view(-1, 1), past_key_values=self.cache, use_cache=True)
        self.positions = self.positions + 1
        return out.logits[:, -1, :].float()

    # -- reshaping --------------------------------------------------------------------------------
    def _layers(self) -> list[Any]:
        return list(self.cache.layers)

    def _pad_left(self, columns: int) -> None:
        if columns <= 0:
            return
        for layer in self._layers():
            layer.keys = F.pad(layer.keys, (0, 0, columns, 0))
            layer.values = F.pad(layer.values, (0, 0, columns, 0))
        self.mask = F.pad(self.mask, (columns, 0))

    def merge(self, other: "KVGroup") -> None:
        """Append ``other``'s rows after this group's rows (same model). ``other`` is consumed."""
        if other.model is not self.model:
            raise ValueError("cannot merge groups of different model versions")
        width = max(self.width, other.width)
        self._pad_left(width - self.width)
        other._pad_left(width - other.width)
        for mine, theirs in zip(self._layers(), other._layers()):
            mine.keys = torch.cat([mine.keys, theirs.keys], dim=0)
            mine.values = torch.cat([mine.values, theirs.values], dim=0)
        self.mask = torch.cat([self.mask, other.mask], dim=0)
        self.positions = torch.cat([self.positions, other.positions], dim=0)

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (in that order), then drop all-padding columns on the left."""
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        for layer in self._layers():
            layer.keys = layer.keys.index_select(0, index)
            layer.values = layer.values.index_select(0, index)
        self.mask = self.mask.index_select(0, index)
        self.positions = self.positions.index_select(0, index)
        self._trim()

    def split(self, rows: list[int]) -> "KVGroup":
        """Move ``rows`` into a new group; this group keeps the others."""
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        cache = DynamicCache()
        for i, layer in enumerate(self._layers()):
            cache.update(layer.keys.index_select(0, index), layer.values.index_select(0, index), i)
        new = KVGroup(self.model, cache, self.mask.index_select(0, index), self.positions.index_select(0, index))
        new._trim()
        stay = [r for r in range(self.size) if r not in set(rows)]
        self.keep(stay)
        return new

    def _trim(self) -> None:
        if self.size == 0 or self.width == 0:
            return
        first_real = int(self.mask.argmax(dim=1).min())  # leftmost real column over all rows
        if first_real > 0:
            for layer in self._layers():
                layer.keys = layer.keys[:, :, first_real:, :].contiguous()
                layer.values = layer.values[:, :, first_real:, :].contiguous()
            self.mask = self.mask[:, first_real:]
