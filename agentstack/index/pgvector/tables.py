"""One pgvector index's tables: names, DDL, the ANN index (HNSW, IVFFlat or none) and its build.

An index ``id`` has two sequences (document rows and chunk ids, never reused) and, per *epoch*, a
documents and a chunks table. Ordinary writes change the current epoch's tables in place; a write
that replaces everything (``rebuild``, a copy, a new embedder dimension) fills the next epoch's
tables by COPY, builds their indexes once and switches the catalog to them in the same
transaction, so readers keep using the old tables until that commit and never wait for a build.
A new ANN structure alone (``vectors:`` changed, an IVF retrain) is built beside the old one on
the same table and swapped at commit (:func:`replace_ann`).
This module knows nothing about documents or search.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

LOCK_NS = 0x61676978  # "agix": advisory lock namespace of index writers (key: the index id)
HNSW_MAX_M = 100  # pgvector's limit
TS_CONFIG = "english"


@dataclass(frozen=True)
class Tables:
    index_id: int
    epoch: int

    @property
    def docs(self) -> str:
        return f"vix{self.index_id}_{self.epoch}_docs"

    @property
    def chunks(self) -> str:
        return f"vix{self.index_id}_{self.epoch}_chunks"

    @property
    def doc_seq(self) -> str:
        return f"vix{self.index_id}_doc_seq"

    @property
    def chunk_seq(self) -> str:
        return f"vix{self.index_id}_chunk_seq"

    def next(self) -> Tables:
        return Tables(self.index_id, self.epoch + 1)


def create_sequences(conn: sa.Connection, t: Tables) -> None:
    conn.execute(sa.text(f"CREATE SEQUENCE {t.doc_seq}"))
    conn.execute(sa.text(f"CREATE SEQUENCE {t.chunk_seq}"))


def create_tables(conn: sa.Connection, t: Tables, dim: int, *, with_indexes: bool = True) -> None:
    """The epoch's two tables; ``with_indexes`` False leaves the foreign key and secondary indexes
    to :func:`finish_tables` (after a bulk COPY, one pass each is far faster than row by row)."""
    conn.execute(sa.text(f"""CREATE TABLE {t.docs} (
        row_id bigint PRIMARY KEY DEFAULT nextval('{t.doc_seq}'), doc_id text NOT NULL, source text NOT NULL,
        title text NOT NULL, format text NOT NULL, metadata jsonb NOT NULL, fingerprint text NOT NULL,
        content_hash text NOT NULL, text text NOT NULL, n_chunks integer NOT NULL,
        ingested_at double precision NOT NULL, added_gen integer NOT NULL)"""))
    conn.execute(sa.text(f"""CREATE TABLE {t.chunks} (
        id bigint PRIMARY KEY DEFAULT nextval('{t.chunk_seq}'), doc_row bigint NOT NULL,
        ordinal integer NOT NULL, start integer NOT NULL, "end" integer NOT NULL, heading text NOT NULL,
        tokens integer NOT NULL, text text NOT NULL, embedding vector({int(dim)}) STORAGE {_storage(dim)} NOT NULL,
        added_gen integer NOT NULL,
        tsv tsvector GENERATED ALWAYS AS (setweight(to_tsvector('{TS_CONFIG}', text), 'A') ||
                                          setweight(to_tsvector('{TS_CONFIG}', heading), 'B')) STORED)"""))
    if with_indexes:
        finish_tables(conn, t)


def _storage(dim: int) -> str:
    """Vectors stay in the row (PLAIN: never compressed or moved to TOAST, which would make every
    exact scan and re-check detoast them); only very wide ones may be compressed (MAIN)."""
    return "PLAIN" if 4 * int(dim) <= 6000 else "MAIN"


def finish_tables(conn: sa.Connection, t: Tables) -> None:
    conn.execute(sa.text(f"CREATE UNIQUE INDEX {t.docs}_doc ON {t.docs} (doc_id)"))
    conn.execute(sa.text(f"CREATE INDEX {t.docs}_source ON {t.docs} (source text_pattern_ops)"))
    conn.execute(sa.text(f"ALTER TABLE {t.chunks} ADD CONSTRAINT {t.chunks}_doc FOREIGN KEY (doc_row) "
                         f"REFERENCES {t.docs} (row_id) ON DELETE CASCADE"))
    conn.execute(sa.text(f"CREATE INDEX {t.chunks}_doc ON {t.chunks} (doc_row)"))
    conn.execute(sa.text(f"CREATE INDEX {t.chunks}_tsv ON {t.chunks} USING gin (tsv)"))


def plan_ann(spec: Any, rows: int) -> tuple[str, dict[str, Any]]:
    """(kind, params) of the ANN index for ``rows`` live chunks under ``spec`` (a VectorSpec),
    with the FAISS backend's semantics: flat is exact; IVF stays exact below ``min_train``."""
    if spec.kind == "hnsw":
        m = min(spec.hnsw_m, HNSW_MAX_M)
        return "hnsw", {"m": m, "ef_construction": max(spec.ef_construction, 2 * m), "ef_search": spec.ef_search}
    if spec.kind == "ivf" and rows >= spec.min_train:
        lists = spec.nlist or max(8, int(4 * math.sqrt(rows)))
        lists = max(1, min(lists, rows // 39 or 1))
        return "ivf", {"lists": lists, "probes": min(spec.nprobe, lists), "trained_count": rows}
    return "flat", {}


def needs_rebuild(spec: Any, kind: str, params: dict[str, Any], rows: int) -> bool:
    """Whether the current ANN index no longer fits ``spec`` at ``rows`` live chunks, so the
    next epoch is built (HNSW handles removals itself: no rebuild for them)."""
    want, want_params = plan_ann(spec, rows)
    if kind == "hnsw":
        return want != "hnsw" or (params.get("m"), params.get("ef_construction")) != \
            (want_params["m"], want_params["ef_construction"])
    if kind == "ivf":
        trained = int(params.get("trained_count", 1))
        return spec.kind != "ivf" or rows >= 4 * trained or rows < trained // 4
    return want != "flat"


def build_ann(conn: sa.Connection, t: Tables, kind: str, params: dict[str, Any], *, memory_mb: int,
              workers: int, name: str | None = None) -> None:
    """Create the ANN index of ``kind`` on the epoch's chunks (nothing for flat), with
    ``maintenance_work_mem`` and parallel workers for this transaction only."""
    if kind == "flat":
        return
    name = name or f"{t.chunks}_ann"
    conn.execute(sa.text(f"SET LOCAL maintenance_work_mem = '{int(memory_mb)}MB'"))
    conn.execute(sa.text(f"SET LOCAL max_parallel_maintenance_workers = {int(workers)}"))
    if kind == "hnsw":
        conn.execute(sa.text(f"CREATE INDEX {name} ON {t.chunks} USING hnsw (embedding vector_ip_ops) "
                             f"WITH (m = {int(params['m'])}, ef_construction = {int(params['ef_construction'])})"))
    elif kind == "ivf":
        conn.execute(sa.text(f"CREATE INDEX {name} ON {t.chunks} USING ivfflat (embedding vector_ip_ops) "
                             f"WITH (lists = {int(params['lists'])})"))
    else:
        raise ValueError(f"unknown vector index kind {kind!r}")


def replace_ann(conn: sa.Connection, t: Tables, kind: str, params: dict[str, Any], *, memory_mb: int,
                workers: int) -> None:
    """Swap the epoch's ANN index for one of ``kind`` inside the caller's transaction: the new one
    is built beside the old (CREATE INDEX locks out writes only, readers go on), then the old one is
    dropped and the new one takes its name (a brief exclusive lock, until COMMIT)."""
    build_ann(conn, t, kind, params, memory_mb=memory_mb, workers=workers, name=f"{t.chunks}_ann_new")
    conn.execute(sa.text(f"DROP INDEX IF EXISTS {t.chunks}_ann"))
    if kind != "flat":
        conn.execute(sa.text(f"ALTER INDEX {t.chunks}_ann_new RENAME TO {t.chunks}_ann"))
    conn.execute(sa.text(f"ANALYZE {t.chunks}"))


def analyze(conn: sa.Connection, t: Tables) -> None:
    """Planner statistics for freshly filled tables (autovacuum would come later), so a filter's
    selectivity is estimated from the first query on."""
    conn.execute(sa.text(f"ANALYZE {t.docs}, {t.chunks}"))


def drop_tables(conn: sa.Connection, t: Tables) -> None:
    conn.execute(sa.text(f"DROP TABLE IF EXISTS {t.chunks}, {t.docs}"))


def drop_sequences(conn: sa.Connection, t: Tables) -> None:
    conn.execute(sa.text(f"DROP SEQUENCE IF EXISTS {t.doc_seq}, {t.chunk_seq}"))


def epochs(conn: sa.Connection, index_id: int) -> list[int]:
    """The epochs whose tables exist for ``index_id`` (the current one, and any left behind)."""
    pattern = re.compile(rf"^vix{int(index_id)}_(\d+)_(docs|chunks)$")
    rows = conn.execute(sa.text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND "
                                "tablename LIKE :p"), {"p": f"vix{int(index_id)}\\_%"}).scalars()
    return sorted({int(m.group(1)) for name in rows if (m := pattern.match(name))})
