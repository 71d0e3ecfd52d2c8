"""Copying indexes between backends (FAISS + SQLite files <-> pgvector), re-embedding nothing.

The source's published version is exported (its configuration and spec, the ingest log with PII
counts, and every document with its chunks and stored vectors, streamed) and loaded into a new
index of the same name on the target as ONE generation (``IndexWriter.load``): one SQLite
transaction and publish, or one PostgreSQL transaction. Chunk ids are kept, so citations and
``index.chunk(id)`` answer the same on both sides, and dense scores are identical. The source is
only read (a snapshot): it keeps serving and is never changed.

A copy that fails removes what it created; one killed half-way leaves at most an empty target
index (generation 0), which the next copy reuses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from agentstack.errors import ConflictError, InvalidRequestError
from agentstack.index.backend import IndexBackend
from agentstack.index.spec import check_name

Progress = Callable[..., None]


def copy_index(source: IndexBackend, target: IndexBackend, name: str, *, as_name: str | None = None,
               progress: Progress | None = None, lock_timeout: float = 30.0) -> dict[str, Any]:
    """Copy index ``name`` from ``source`` to ``target`` (as ``as_name``); returns a summary."""
    target_name = check_name(as_name or name)
    started = time.monotonic()
    export = source.open(check_name(name)).export()
    if progress:
        progress("start", index=name, documents=export.counts["documents"], chunks=export.counts["chunks"])
    created = False
    if target.exists(target_name):
        manifest = target.open(target_name).manifest()
        if manifest["generation"] != 0 or manifest["counts"]["documents"]:
            raise ConflictError(f"index {target_name!r} already exists on the {target.kind} side, with "
                                f"{manifest['counts']['documents']} documents",
                                fix=f"drop it there first (`agentstack index drop {target_name}` with that backend), "
                                    "or copy under another name with --as")
        store = target.open(target_name)  # an empty one left by an interrupted copy: reuse it
    else:
        store = target.create(target_name, spec=export.spec, config=export.config)
        created = True
    try:
        with store.writer(lock_timeout) as writer:
            generation = writer.load(export, progress)
    except BaseException:
        if created:
            try:
                target.drop(target_name, lock_timeout)
            except Exception:  # noqa: BLE001  (the first error is the one to report)
                pass
        raise
    out = target.open(target_name).manifest()
    return {"index": name, "as": target_name, "from": source.kind, "to": target.kind,
            "source_generation": export.generation, "generation": generation,
            "documents": out["counts"]["documents"], "chunks": out["counts"]["chunks"],
            "vectors": out["vectors"]["kind"], "location": target.open(target_name).location(),
            "seconds": round(time.monotonic() - started, 3)}


def resolve(settings: Any, where: str) -> IndexBackend:
    """A backend named on the command line: ``faiss``, ``pgvector`` (database.url) or a
    ``postgresql://`` URL (pgvector in that database)."""
    from agentstack.index.backend import build_backend

    if where in ("faiss", "pgvector"):
        return build_backend(settings, where)
    if where.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres"):
        url = "postgresql" + where[where.index(":"):] if where.startswith("postgres:") else where
        return build_backend(settings, "pgvector", database_url=url)
    raise InvalidRequestError(f"unknown index backend {where!r}", param="to",
                              fix="use faiss, pgvector (the database of database.url) or a postgresql:// URL")
