"""The pgvector index backend: indexes as PostgreSQL tables that every replica reads.

* ``backend.py``: the catalog (``vector_indexes`` and friends, an Alembic migration of the main
  database): list, create, open, drop.
* ``tables.py``: one index's tables, their DDL and the choice of its ANN index.
* ``store.py``: reads (search, documents, stats, export), each in one repeatable-read transaction.
* ``writer.py``: writes, each one transaction that also moves the catalog's generation: the
  transaction is the publish (the FAISS backend's manifest rename).
* ``search.py``: dense (``<#>`` with HNSW/IVF iterative scans, or exact), full text and hybrid.
* ``verify.py``: the consistency check.

Why a table per index (and iterative scans): a shared table with an ``index_id`` column filters
after the HNSW walk, so a small index inside a large table gets fewer than k neighbours (Open WebUI
#30135). Here each index has its own tables and its own ANN graph (of its own dimension), so no
index filters another's rows; metadata filters inside one index use pgvector 0.8's iterative scans
(``hnsw.iterative_scan = relaxed_order``), and a filter matching few rows searches them exactly.
"""
