"""All indexes of one deployment: list, open, create, add, delete, rebuild, verify, drop.

This is the Python API the CLI and the HTTP routes call; both are thin over it::

    manager = IndexManager(settings, embedder=build_embedder(settings.embedder))
    report = manager.create("notes", paths=["~/notes"])      # IngestReport
    hits = manager.open("notes").search("backup policy", k=5, mode="hybrid")

Each write takes the index's lock, runs the pipeline (load → scrub → chunk → embed → store) and
publishes versions as it goes. Where indexes live is the backend's business (``backend.py``:
FAISS + SQLite folders, or pgvector tables chosen by ``index.backend``). Embedders and scrubbers are built once per configuration and
shared. An index records the configuration it was built with (embedder id and dimension,
chunking, vector kind, PII settings); additions use that configuration, and an index whose
embedder differs from the one configured now is refused until ``rebuild``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentstack.embeddings.base import Embedder
from agentstack.errors import (
    ConfigError,
    ConflictError,
    DependencyMissingError,
    InvalidRequestError,
    NotFoundError,
)
from agentstack.index import faults
from agentstack.index.backend import IndexBackend, build_backend
from agentstack.index.reader import Index
from agentstack.index.spec import IndexSpec, PiiSpec, check_name, find_spec, load_spec, parse_spec
from agentstack.index.store import check_embedder
from agentstack.ingest.chunking import Chunker, ChunkingConfig
from agentstack.ingest.documents import Document, LoadFailure
from agentstack.ingest.loaders import file_of, load_bytes, load_file, source_files
from agentstack.ingest.pipeline import IngestPipeline, IngestReport, Progress
from agentstack.ingest.sources import Source, covers

if TYPE_CHECKING:
    from agentstack.config import Settings
    from agentstack.ingest.pii.base import Scrubber

log = logging.getLogger(__name__)
ScrubberFactory = Callable[[PiiSpec, Path | None], "Scrubber | None"]
UPLOAD_PREFIX = "upload:"


class IndexManager:
    """The indexes of ``backend`` (default: the one ``index.backend`` selects). ``embedder`` is
    the one configured in settings, or a zero-argument function returning it (the server shares its
    own, loaded on first use); ``scrubber_factory`` replaces the Presidio scrubber."""

    def __init__(self, settings: Settings, *, embedder: Embedder | Callable[[], Embedder] | None = None,
                 scrubber_factory: ScrubberFactory | None = None, lock_timeout: float = 30.0,
                 backend: IndexBackend | None = None):
        self.settings = settings
        self.backend = backend if backend is not None else build_backend(settings)
        self.root = settings.indexes_path
        self.lock_timeout = lock_timeout
        self._embedders: dict[str, Any] = {}  # model key -> Embedder, or a factory until first use
        if embedder is not None:
            self._embedders[self._embedder_key(None)] = embedder
        self._scrubber_factory = scrubber_factory or self._presidio_scrubber
        self._scrubbers: dict[str, Any] = {}
        self._indexes: dict[str, Index] = {}
        self._lock = threading.Lock()

    # -- components -----------------------------------------------------------------------------
    def _embedder_key(self, model: str | None) -> str:
        return str(Path(model).expanduser().resolve()) if model else (self.settings.embedder.model or "")

    def embedder_for(self, model: str | None = None) -> Embedder:
        """The embedder for a spec's ``embedder.model`` (None = the settings' embedder), built once."""
        key = self._embedder_key(model)
        with self._lock:
            if key not in self._embedders:
                from agentstack.embeddings import build_embedder

                settings = self.settings.embedder
                if model:
                    settings = settings.model_copy(update={"model": str(Path(model).expanduser())})
                self._embedders[key] = build_embedder(settings)
            if not hasattr(type(self._embedders[key]), "encode"):  # a factory given by the caller
                self._embedders[key] = self._embedders[key]()
            return self._embedders[key]

    def _presidio_scrubber(self, pii: PiiSpec, base_dir: Path | None) -> Scrubber | None:
        if not pii.enabled:
            return None
        try:
            from agentstack.ingest.pii.policy import build_scrubber, default_policy_path, load_policy
        except ImportError as exc:
            raise DependencyMissingError(f"the PII scrubber is not available ({exc})",
                                         fix="install agentstack with its dependencies, or set `pii: {enabled: "
                                             "false}` in the index spec") from exc
        path = Path(pii.policy).expanduser() if pii.policy else default_policy_path(self.settings.policies_dir)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        policy = load_policy(path, pii.overrides or None)
        try:
            return build_scrubber(policy, self.settings.privacy, model_cache=self.settings.model_cache)
        except ImportError as exc:
            raise DependencyMissingError(f"the PII scrubber is not available ({exc})",
                                         fix="pip install -c constraints.txt presidio-analyzer presidio-anonymizer, "
                                             "or set `pii: {enabled: false}` in the index spec") from exc

    def scrubber_for(self, pii: PiiSpec, base_dir: Path | None = None) -> Scrubber | None:
        key = json.dumps([pii.model_dump(), str(base_dir)], sort_keys=True)
        with self._lock:
            if key not in self._scrubbers:
                self._scrubbers[key] = self._scrubber_factory(pii, base_dir)
            return self._scrubbers[key]

    # -- listing and opening --------------------------------------------------------------------
    def names(self) -> list[str]:
        return self.backend.names()

    def exists(self, name: str) -> bool:
        return self.backend.exists(check_name(name))

    def forget(self, name: str) -> None:
        """Drop the cached :class:`Index` of ``name`` (an index notice from another replica)."""
        with self._lock:
            self._indexes.pop(name, None)

    def open(self, name: str) -> Index:
        """The :class:`Index` (read side) named ``name``; raises NotFoundError if there is none."""
        check_name(name)
        with self._lock:
            index = self._indexes.get(name)
            if index is not None and index.store.alive():
                return index
        store = self.backend.open(name)
        model = store.manifest()["embedder"].get("model")
        index = Index(store, lambda: self.embedder_for(model))
        with self._lock:
            self._indexes[name] = index
        return index

    def list(self) -> list[dict[str, Any]]:
        out = []
        for name in self.names():
            try:
                index = self.open(name)
                m = index.manifest()
            except (NotFoundError, ConflictError) as exc:
                out.append({"name": name, "error": str(exc)})
                continue
            out.append({"name": name, "backend": index.backend,
                        "description": index.store.spec().get("description", ""),
                        "documents": m["counts"]["documents"], "chunks": m["counts"]["chunks"],
                        "embedder": m["embedder"]["id"], "dim": m["embedder"]["dim"], "vectors": m["vectors"]["kind"],
                        "generation": m["generation"], "updated_at": m["updated_at"]})
        return out

    # -- specs ----------------------------------------------------------------------------------
    def resolve_spec(self, name: str, spec_path: Path | str | None = None,
                     paths: Sequence[str | Path] = ()) -> IndexSpec:
        """``spec_path``, else ``<indexes_dir>/<name>.yaml`` if it exists, else defaults; ``paths``
        replace the spec's sources when given."""
        path = Path(spec_path) if spec_path else find_spec(name, self.settings.indexes_dir)
        spec = load_spec(path) if path else IndexSpec()
        return spec.with_paths(list(paths)) if paths else spec

    def _config(self, spec: IndexSpec, embedder: Embedder, scrubber: Any) -> dict[str, Any]:
        return {"embedder": {"id": embedder.id, "dim": embedder.dim, "model": spec.embedder.model},
                "chunking": spec.chunking.model_dump(), "vectors": spec.vectors.model_dump(),
                "pii": spec.pii.model_dump(), "pii_policy": getattr(scrubber, "policy_id", None) or "none"}

    def _chunker(self, config: dict[str, Any], embedder: Embedder) -> Chunker:
        chunking = ChunkingConfig(**config["chunking"])
        if chunking.chunk_tokens + 2 > embedder.max_tokens:
            raise ConfigError(f"chunking.chunk_tokens = {chunking.chunk_tokens} does not fit embedder "
                              f"{embedder.id!r}, which reads at most {embedder.max_tokens} tokens",
                              fix=f"set chunk_tokens to at most {embedder.max_tokens - 2}")
        return Chunker(chunking, embedder.count_tokens)

    # -- writing --------------------------------------------------------------------------------
    def create(self, name: str, *, spec: IndexSpec | None = None, spec_path: Path | str | None = None,
               paths: Sequence[str | Path] = (), progress: Progress | None = None) -> IngestReport:
        """Create index ``name`` and ingest its sources. Raises ConflictError if it exists."""
        check_name(name)
        if self.exists(name):
            raise ConflictError(f"index {name!r} already exists",
                                fix=f"add documents with `agentstack index add {name} PATH...`, or pick another name")
        spec = spec.with_paths(list(paths)) if spec is not None and paths else \
            spec or self.resolve_spec(name, spec_path, paths)
        embedder = self.embedder_for(spec.embedder.model)
        scrubber = self.scrubber_for(spec.pii, Path(spec.base_dir) if spec.base_dir else None)
        config = self._config(spec, embedder, scrubber)
        self._chunker(config, embedder)  # validate before anything is created
        self.backend.create(name, spec=spec.model_dump(), config=config)
        return self.add(name, progress=progress)

    def _stored_spec(self, index: Index) -> IndexSpec:
        return parse_spec(index.store.spec(), where=f"the stored spec of {index.store.location()}", base_dir=None)

    def _items(self, sources: Iterable[Source], max_bytes: int, progress: Progress | None
               ) -> Iterator[Document | LoadFailure]:
        files: list[tuple[Source, Path]] = []
        for source in sources:
            found = source_files(source)
            if isinstance(found, LoadFailure):
                yield found
                continue
            files += [(source, f) for f in found or []]
        if progress:
            progress("files", total=len(files))
        for source, path in files:
            faults.point("load")
            yield from load_file(path, metadata=source.metadata, encoding=source.encoding, max_bytes=max_bytes)

    def _run(self, name: str, items: Callable[[IndexSpec], Iterable[Document | LoadFailure]],
             progress: Progress | None, prune: Callable[[Any], list[str]] | None = None) -> IngestReport:
        index = self.open(name)
        spec = self._stored_spec(index)
        with index.store.writer(self.lock_timeout) as writer:
            config = writer.config()
            embedder = self.embedder_for(config["embedder"].get("model"))
            check_embedder(writer.manifest, embedder.id)  # the id only: the dimension would load the model
            notes = list(writer.notes)

            def scrubber() -> Any:  # built only if some document changed
                return self.scrubber_for(PiiSpec.model_validate(config["pii"]),
                                         Path(spec.base_dir) if spec.base_dir else None)

            def write_config() -> dict[str, Any]:  # the configuration recorded with new versions
                nonlocal config
                policy = getattr(scrubber(), "policy_id", None) or "none"
                if policy != config["pii_policy"]:
                    notes.append(f"PII policy changed since the last write ({config['pii_policy']} -> {policy}); "
                                 f"new documents use the new one; `agentstack index rebuild {name}` re-scrubs the "
                                 "others")
                    config = {**config, "pii_policy": policy}
                return config

            pipeline = IngestPipeline(embedder, self._chunker(config, embedder), scrubber,
                                      commit_every=spec.limits.commit_every_chunks, progress=progress)
            report = pipeline.run(writer, items(spec), index=name, config=write_config)
            report.notes = notes + report.notes
            stale = prune(writer) if prune else []
            if stale:  # one more version, after the ingest's own: a crash between them loses nothing
                report.generation = writer.commit(deletes=stale, report={"kind": "prune", "deleted": len(stale)})
                report.deleted = stale
            if report.generation is None:
                report.generation = writer.generation
        return report

    def add(self, name: str, paths: Sequence[str | Path] | None = None, *, sources_from: IndexSpec | None = None,
            prune: bool = False, progress: Progress | None = None) -> IngestReport:
        """Ingest ``paths`` (default: the sources of the index's spec, or of ``sources_from``) into
        ``name``: new documents are added, changed ones replaced, unchanged ones skipped.

        ``prune`` also deletes the documents these sources no longer hold (see :func:`stale_documents`):
        files that vanished from a scanned directory, records gone from a JSONL file. A file that
        failed to load and a source that is missing altogether (an unmounted disk?) keep theirs."""
        scanned: list[Source] = []
        loaded: set[str] = set()
        failed: set[str] = set()

        def items(spec: IndexSpec) -> Iterator[Document | LoadFailure]:
            if sources_from is not None:
                spec = spec.model_copy(update={"sources": sources_from.sources, "base_dir": sources_from.base_dir})
            sources = spec.with_paths(list(paths)).resolved_sources() if paths else spec.resolved_sources()
            scanned.extend(sources)
            for item in self._items(sources, spec.limits.max_file_bytes, progress):
                if isinstance(item, LoadFailure):
                    failed.add(item.source)
                else:
                    loaded.add(item.doc_id)
                yield item

        def stale(writer: Any) -> list[str]:
            return stale_documents(writer.live_documents(), scanned, loaded, failed)

        return self._run(name, items, progress, prune=stale if prune else None)

    def add_bytes(self, name: str, files: Sequence[tuple[str, bytes]], *, metadata: dict[str, Any] | None = None,
                  progress: Progress | None = None) -> IngestReport:
        """Ingest uploaded files (``(filename, content)``); each is the document ``upload:<filename>``,
        so uploading a file of the same name again replaces it."""
        for filename, _ in files:
            if not filename or "/" in filename or "\\" in filename or filename in (".", "..") or len(filename) > 255:
                raise InvalidRequestError(f"invalid file name {filename!r}", param="files",
                                          fix="send plain file names without directories")

        def items(spec: IndexSpec) -> Iterator[Document | LoadFailure]:
            for filename, data in files:
                yield from load_bytes(data, f"{UPLOAD_PREFIX}{filename}", metadata=metadata,
                                      max_bytes=spec.limits.max_file_bytes)

        return self._run(name, items, progress)

    def delete(self, name: str, ref: str) -> IngestReport:
        """Delete the documents whose id or source is ``ref`` (a JSONL file's source removes all of
        its records); their vectors and rows go in one new version."""
        index = self.open(name)
        with index.store.writer(self.lock_timeout) as writer:
            doc_ids = writer.resolve(ref)
            if not doc_ids:
                raise NotFoundError(f"index {name!r} has no document with id or source {ref!r}", param="doc_id",
                                    fix=f"list documents with `agentstack index docs {name}`")
            gen = writer.commit(deletes=doc_ids, report={"kind": "delete", "deleted": len(doc_ids)})
        return IngestReport(index=name, deleted=doc_ids, generation=gen, notes=list(writer.notes))

    def rebuild(self, name: str, *, spec_path: Path | str | None = None, vectors_only: bool = False,
                progress: Progress | None = None) -> IngestReport:
        """Re-scrub, re-chunk and re-embed every stored document with the index's spec (or the new
        spec at ``spec_path``) and the embedder configured now, as one new version. Use it after
        changing the embedder, the chunking or the PII policy. ``vectors_only`` keeps the stored
        chunks and vectors and only rebuilds the FAISS structure (after changing ``vectors``)."""
        index = self.open(name)
        spec = load_spec(spec_path) if spec_path else self._stored_spec(index)
        if vectors_only:
            return self._rebuild_vectors(index, spec)
        embedder = self.embedder_for(spec.embedder.model)
        scrubber = self.scrubber_for(spec.pii, Path(spec.base_dir) if spec.base_dir else None)
        config = self._config(spec, embedder, scrubber)
        pipeline = IngestPipeline(embedder, self._chunker(config, embedder), scrubber,
                                  commit_every=spec.limits.commit_every_chunks, progress=progress)
        report = IngestReport(index=name)
        with index.store.writer(self.lock_timeout) as writer:
            report.notes = list(writer.notes)
            rows = writer.live_documents()
            if progress:
                progress("files", total=len(rows))
            docs = []
            for row in rows:
                doc = Document(row["doc_id"], row["source"], row["title"], row["text"], row["format"],
                               json.loads(row["metadata"]))
                prepared = pipeline.prepare(doc)
                if isinstance(prepared, LoadFailure):
                    report.failures.append(prepared)
                    continue
                prepared.fingerprint, prepared.content_hash = row["fingerprint"], row["content_hash"]
                docs.append(prepared)
                if progress:
                    progress("document", source=row["source"], status="prepared", chunks=len(prepared.chunks))
            pipeline.embed(docs)
            if spec_path:
                index.store.set_spec(spec.model_dump())
            report.generation = writer.commit(docs, replace_all=True, config=config, report={
                "kind": "rebuild", "updated": len(docs), "chunks": sum(len(d.chunks) for d in docs),
                "scrub": {d.doc_id: d.scrub_counts for d in docs if d.scrub_counts},
                "failures": [f.as_dict() for f in report.failures]})
        report.updated = [d.doc_id for d in docs]
        report.chunks = sum(len(d.chunks) for d in docs)
        report.scrub = {d.doc_id: d.scrub_counts for d in docs if d.scrub_counts}
        with self._lock:
            self._indexes.pop(name, None)  # the embedder may have changed
        return report

    def _rebuild_vectors(self, index: Index, spec: IndexSpec) -> IngestReport:
        with index.store.writer(self.lock_timeout) as writer:
            config = {**writer.config(), "vectors": spec.vectors.model_dump()}
            gen = writer.commit(config=config, report={"kind": "rebuild-vectors"})
            notes = list(writer.notes)
        index.store.set_spec({**index.store.spec(), "vectors": spec.vectors.model_dump()})
        return IngestReport(index=index.name, generation=gen, notes=notes)

    def verify(self, name: str, *, repair: bool = False) -> Any:
        """Check ``name``; with ``repair``, first let a writer finish an interrupted write."""
        index = self.open(name)
        notes: list[str] = []
        if repair:
            with index.store.writer(self.lock_timeout) as writer:
                notes = list(writer.notes)
        report = index.verify()
        report.notes = [f"repaired: {n}" for n in notes] + report.notes
        return report

    def drop(self, name: str) -> None:
        """Remove index ``name`` entirely (readers never see half of it)."""
        index = self.open(name)
        self.backend.drop(name, self.lock_timeout)
        index.store.close()
        with self._lock:
            self._indexes.pop(name, None)

    def close(self) -> None:
        with self._lock:
            for index in self._indexes.values():
                index.store.close()
            self._indexes.clear()
        self.backend.close()


def ensure_demo_index(settings: Settings, *, embedder: Embedder | None = None,
                      manager: IndexManager | None = None) -> IngestReport | None:
    """Build the ``demo`` index (the project's own docs, spec ``indexes/demo.yaml``) if it does
    not exist, or bring it up to date if it does (cheap when nothing changed). Returns the ingest
    report, or None when there is no demo spec or another process holds the index."""
    manager = manager or IndexManager(settings, embedder=embedder)
    spec_path = find_spec("demo", settings.indexes_dir)
    if spec_path is None:
        log.warning("no demo.yaml in the index specs folder; the demo index is not built")
        return None
    try:
        if manager.exists("demo"):
            # unchanged documents cost a read and a hash (no model, no scrubber): this finishes a
            # build interrupted on an earlier start and picks up documentation changed by an upgrade
            report = manager.add("demo", sources_from=load_spec(spec_path))
        else:
            report = manager.create("demo", spec_path=spec_path)
    except ConflictError as exc:  # another process is building it right now
        log.info("demo index not built here: %s", exc.message)
        return None
    if report.added or report.updated:
        log.info("demo index: %d added, %d updated, %d chunks", len(report.added), len(report.updated),
                 report.chunks)
    return report


def stale_documents(rows: Iterable[Any], sources: Sequence[Source], loaded: set[str],
                    failed: set[str]) -> list[str]:
    """Ids of the live documents (``rows``) that ``sources`` cover but no longer hold.

    A document is covered when its file is one ``sources`` would yield (:func:`covers`). It is
    stale when it is covered and was not loaded in this scan: its file vanished, or its record left
    a JSONL file. Kept: uploads, documents of a file that failed to load this time (a JSONL line
    failure counts for its file), and everything under a source that is missing altogether."""
    failed_files = {file_of(f) for f in failed}
    present = [s for s in sources if s.path.exists()]
    out = []
    for row in rows:
        source = file_of(row["source"])
        if row["doc_id"] in loaded or source in failed_files or not os.path.isabs(source):
            continue
        if any(covers(s, Path(source)) for s in present):
            out.append(row["doc_id"])
    return out
