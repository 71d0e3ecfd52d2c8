"""The FAISS part of an index: an ``IndexIDMap`` whose ids are the SQLite chunk ids.

Kinds: ``flat`` (exact inner product; the default), ``ivf`` (``IndexIVFFlat``, trained once the
index holds ``min_train`` vectors, exact flat before that, retrained when it has grown 4x) and
``hnsw`` (``IndexHNSWFlat``; it cannot remove vectors, so a removal rebuilds the graph). Vectors
are unit-norm, so inner product is cosine similarity.

Every FAISS call that computes runs on the compute worker (:mod:`agentstack.compute`): FAISS
brings its own OpenMP runtime, and keeping all OpenMP work on one thread keeps chat decoding
fast. Searches use one OpenMP thread: for a single query, waking a team of threads costs far more
than the search (measured here: 0.3-0.5 ms with one thread, ~10 ms with two on a busy 2-core
machine); builds and bulk adds use every core. Long builds are split into one task per batch.
This module knows nothing about SQLite, manifests or files beyond reading and serialising one index.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agentstack.compute import worker

ADD_BATCH = 8192
EXACT_FILTER_LIMIT = 4096  # ANN + a filter allowing fewer ids than this: exact search instead


def _faiss() -> Any:
    import faiss

    return faiss


def _on_worker(fn: Any, *args: Any, threads: int, **kwargs: Any) -> Any:
    """Run a FAISS call on the compute worker with ``threads`` OpenMP threads (the setting is the
    calling thread's, so it is made inside the task)."""
    def task() -> Any:
        _faiss().omp_set_num_threads(threads)
        return fn(*args, **kwargs)

    return worker().run(task)


_CORES = os.cpu_count() or 1


@dataclass
class VectorIndex:
    index: Any  # faiss.IndexIDMap
    dim: int
    kind: str  # what the index is now: flat | ivf | hnsw
    params: dict[str, Any] = field(default_factory=dict)  # trained_count, nlist, nprobe, ef_search

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def empty(cls, dim: int, spec: Any) -> VectorIndex:
        return cls.build(dim, spec, np.empty(0, np.int64), np.empty((0, dim), np.float32))

    @classmethod
    def build(cls, dim: int, spec: Any, ids: np.ndarray, vectors: np.ndarray) -> VectorIndex:
        """A fresh index of the kind ``spec`` (a VectorSpec) asks for, holding ``vectors``."""
        faiss = _faiss()
        n = len(ids)
        params: dict[str, Any] = {}
        if spec.kind == "hnsw":
            inner = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = spec.ef_construction
            inner.hnsw.efSearch = spec.ef_search
            kind = "hnsw"
            params = {"ef_search": spec.ef_search}
        elif spec.kind == "ivf" and n >= spec.min_train:
            nlist = spec.nlist or max(8, int(4 * math.sqrt(n)))
            nlist = min(nlist, n // 39 or 1)
            quantizer = faiss.IndexFlatIP(dim)
            inner = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            sample = vectors
            if n > 256 * nlist:
                sample = vectors[np.random.default_rng(0).choice(n, 256 * nlist, replace=False)]
            _on_worker(inner.train, np.ascontiguousarray(sample), threads=_CORES)
            inner.nprobe = min(spec.nprobe, nlist)
            kind = "ivf"
            params = {"nlist": nlist, "nprobe": inner.nprobe, "trained_count": n}
        else:
            inner = faiss.IndexFlatIP(dim)
            kind = "flat"
        index = faiss.IndexIDMap(inner)
        out = cls(index, dim, kind, params)
        out.add(ids, vectors)
        return out

    @classmethod
    def load(cls, path: Path, dim: int, kind: str, params: dict[str, Any]) -> VectorIndex:
        faiss = _faiss()
        index = faiss.read_index(str(path))
        if index.d != dim:
            raise ValueError(f"{path} holds {index.d}-dimensional vectors, the manifest says {dim}")
        out = cls(index, dim, kind, dict(params))
        out._apply_search_params()
        return out

    def serialize(self) -> memoryview:
        faiss = _faiss()
        return memoryview(faiss.serialize_index(self.index))

    def _apply_search_params(self) -> None:
        faiss = _faiss()
        inner = faiss.downcast_index(self.index.index)
        if self.kind == "ivf":
            inner.nprobe = int(self.params.get("nprobe", 16))
        elif self.kind == "hnsw":
            inner.hnsw.efSearch = int(self.params.get("ef_search", 64))

    # -- mutation -------------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        return _faiss().vector_to_array(self.index.id_map).astype(np.int64)

    def needs_rebuild(self, spec: Any, *, removing: bool, live_after: int) -> bool:
        """Whether applying a change in place is wrong or wasteful, so a full build is due."""
        if spec.kind != self.kind and not (spec.kind == "ivf" and self.kind == "flat"):
            return True  # the spec asks for another structure
        if self.kind == "hnsw" and removing:
            return True  # HNSW cannot remove vectors
        if spec.kind == "ivf" and self.kind == "flat":
            return live_after >= spec.min_train  # enough vectors to train now
        if self.kind == "ivf":
            return live_after >= 4 * int(self.params.get("trained_count", 1)) or \
                live_after < int(self.params.get("trained_count", 0)) // 4
        return False

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        if vectors.shape[1] != self.dim:
            raise ValueError(f"vectors have dimension {vectors.shape[1]}, the index {self.dim}")
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        for i in range(0, len(ids), ADD_BATCH):
            _on_worker(self.index.add_with_ids, vectors[i:i + ADD_BATCH], ids[i:i + ADD_BATCH], threads=_CORES)

    def remove(self, ids: np.ndarray) -> int:
        if len(ids) == 0:
            return 0
        faiss = _faiss()
        selector = faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))
        return int(_on_worker(self.index.remove_ids, selector, threads=_CORES))

    # -- search ---------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None, *,
               widen: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids) of the ``k`` nearest per query; ids -1 pad missing results. ``allowed``
        restricts the search to those ids (a metadata filter); ``widen`` multiplies the ANN beam
        (HNSW efSearch, IVF nprobe), for a filter that rejected most of what the walk found."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = max(1, min(k, self.ntotal or 1))
        threads = 1 if len(queries) < 16 else _CORES
        if allowed is None:
            return _on_worker(self.index.search, queries, k, threads=threads)
        faiss = _faiss()
        selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
        if self.kind == "ivf":
            nlist = int(self.params.get("nlist", 1))
            params = faiss.SearchParametersIVF(sel=selector, nprobe=min(nlist, widen * int(self.params.get("nprobe", 16))))
        elif self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=widen * max(int(self.params.get("ef_search", 64)),
                                                                                   2 * k))
        else:
            params = faiss.SearchParameters(sel=selector)

        return _on_worker(self.index.search, queries, k, params=params, threads=threads)
