"""Consistency check of one pgvector index, as a reader sees it (one repeatable-read transaction,
no lock, nothing changed). Reports every inconsistency found: catalog vs generations, the epoch's
tables and their indexes (present and valid, the ANN index matching the manifest), counts, chunk
offsets against the document text, ordinals and chunk counts per document, vector norms, and the
ANN index answering a stored vector with itself. Notes: tables of other epochs (an interrupted
write's; the next writer drops them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from agentstack.index.pgvector import tables
from agentstack.index.verify import VerifyReport, sample

if TYPE_CHECKING:
    from agentstack.index.pgvector.store import PgStore, Snap

_PROBES = 16


def verify(store: PgStore) -> VerifyReport:
    report = VerifyReport(store.name)
    try:
        store.read(lambda conn, snap: _check(conn, snap, store, report))
    except Exception as exc:  # report, do not raise: verify must describe a broken index
        report.issues.append(f"index unreadable: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    return report


def _check(conn: sa.Connection, snap: Snap, store: PgStore, report: VerifyReport) -> None:
    issue, t, m, g = report.issues.append, snap.tables, snap.manifest, snap.generation
    q = lambda sql, **p: conn.execute(sa.text(sql), p)  # noqa: E731
    report.checked.update(generation=g, epoch=t.epoch, tables=[t.docs, t.chunks])
    if int(m.get("generation", -1)) != g:
        issue(f"the catalog is at generation {g}, its manifest says {m.get('generation')}")
    top = q("SELECT max(gen) FROM vector_index_generations WHERE index_id = :i", i=store.index_id).scalar_one()
    if top != g:
        issue(f"the newest recorded generation is {top}, the published one {g}")
    present = tables.epochs(conn, store.index_id)
    if t.epoch not in present:
        issue(f"the tables of the published epoch {t.epoch} are missing")
        return
    others = [e for e in present if e != t.epoch]
    if others:
        report.notes.append(f"tables of {len(others)} other epoch(s) left by an interrupted write; the next write "
                            "drops them")
    _check_indexes(q, t, m, report)
    docs = q(f"SELECT count(*) FROM {t.docs}").scalar_one()
    chunks = q(f"SELECT count(*) FROM {t.chunks}").scalar_one()
    for what, actual in (("documents", docs), ("chunks", chunks)):
        if m["counts"][what] != actual:
            issue(f"manifest says {m['counts'][what]} {what}, generation {g} has {actual}")
    report.checked.update(documents=int(docs), chunks=int(chunks))
    bad = [r[0] for r in q(f'SELECT c.id FROM {t.chunks} c JOIN {t.docs} d ON d.row_id = c.doc_row WHERE '
                           f'substr(d.text, c.start + 1, c."end" - c.start) <> c.text')]
    if bad:
        issue(f"{len(bad)} chunk(s) whose text is not the document text at their offsets (ids {sample(bad)})")
    for r in q(f"SELECT d.doc_id, d.n_chunks, count(c.id) AS n, coalesce(min(c.ordinal), 0) AS lo, "
               f"coalesce(max(c.ordinal), -1) AS hi, count(DISTINCT c.ordinal) AS distinct_ordinals "
               f"FROM {t.docs} d LEFT JOIN {t.chunks} c ON c.doc_row = d.row_id GROUP BY d.row_id, d.doc_id, "
               f"d.n_chunks HAVING count(c.id) <> d.n_chunks OR count(c.id) = 0 OR min(c.ordinal) <> 0 OR "
               f"max(c.ordinal) <> count(c.id) - 1 OR count(DISTINCT c.ordinal) <> count(c.id) LIMIT 20").mappings():
        issue(f"document {r['doc_id']!r}: records {r['n_chunks']} chunks, has {r['n']} with ordinals "
              f"{r['lo']}..{r['hi']}")
    norms = [r[0] for r in q(f"SELECT id FROM {t.chunks} WHERE abs(vector_norm(embedding) - 1) > 1e-3 LIMIT 1000")]
    if norms:
        issue(f"{len(norms)} chunk(s) whose stored vector is not unit-norm (ids {sample(norms)})")
    if m["vectors"]["kind"] != "flat" and chunks:
        _check_ann(q, t, m, report)


def _check_indexes(q: Any, t: tables.Tables, m: dict[str, Any], report: VerifyReport) -> None:
    rows = q("SELECT c.relname AS name, i.indisvalid AS valid, am.amname AS method FROM pg_index i "
             "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class r ON r.oid = i.indrelid "
             "JOIN pg_am am ON am.oid = c.relam WHERE r.relname IN (:d, :c)", d=t.docs, c=t.chunks).mappings().all()
    for r in rows:
        if not r["valid"]:
            report.issues.append(f"index {r['name']} is not valid (an interrupted build); rebuild the index")
    methods = {r["method"] for r in rows}
    want = {"hnsw": "hnsw", "ivf": "ivfflat"}.get(m["vectors"]["kind"])
    have = [x for x in ("hnsw", "ivfflat") if x in methods]
    if want is not None and want not in have:
        report.issues.append(f"the manifest says {m['vectors']['kind']}, the chunks table has no {want} index")
    if want is None and have:
        report.issues.append(f"the manifest says flat, the chunks table has a {have[0]} index")
    if "gin" not in methods:
        report.issues.append("the full-text (GIN) index of the chunks table is missing")
    report.checked["indexes"] = sorted(r["name"] for r in rows)


def _check_ann(q: Any, t: tables.Tables, m: dict[str, Any], report: VerifyReport) -> None:
    """Stored vectors, searched through the ANN index, find themselves (or an identical vector)."""
    params = m["vectors"].get("params", {})
    if m["vectors"]["kind"] == "hnsw":
        q(f"SET LOCAL hnsw.ef_search = {max(40, int(params.get('ef_search', 64)))}")
    else:
        q(f"SET LOCAL ivfflat.probes = {int(params.get('probes', 16))}")
    probes = q(f"SELECT id, embedding FROM {t.chunks} TABLESAMPLE SYSTEM (10) LIMIT {_PROBES}").all() or \
        q(f"SELECT id, embedding FROM {t.chunks} LIMIT {_PROBES}").all()
    missed = []
    for cid, vec in probes:
        top = q(f"SELECT id, embedding <#> :v AS d FROM {t.chunks} ORDER BY embedding <#> :v LIMIT 1", v=vec).first()
        if top is None or (top[0] != cid and top[1] > -0.999):
            missed.append(cid)
    report.checked["ann_probes"] = len(probes)
    if missed:
        report.issues.append(f"the {m['vectors']['kind']} index does not find {len(missed)} of {len(probes)} "
                             f"stored vectors (ids {sample(missed)})")
