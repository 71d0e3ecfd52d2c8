"""Text embedders: the :class:`Embedder` protocol and the sentence-transformers implementation.

``build_embedder(settings.embedder)`` is the factory the server, the CLI and the index use; it
loads nothing until ``warm_up()`` or the first ``encode``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentstack.embeddings.base import Embedder

if TYPE_CHECKING:
    from agentstack.config import EmbedderSettings, Settings

__all__ = ["Embedder", "build_embedder"]


def build_embedder(settings: EmbedderSettings | Settings) -> Embedder:
    """The embedder described by ``settings`` (the ``embedder`` section, or the whole settings
    tree). Cheap: weights load in ``warm_up()`` or on the first ``encode``."""
    from agentstack.embeddings.sentence_transformers import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(getattr(settings, "embedder", settings))
