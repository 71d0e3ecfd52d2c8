"""`agentstack index ...`: create, add, search, list, show, docs, delete, stats, rebuild, verify, copy, drop.

Thin: parse, call :class:`agentstack.index.manager.IndexManager` on the local data directory,
print (rich for people, ``--json`` for scripts). Safe while a server runs on the same data: writes
take the index's lock, and the server picks up each new version on its next query.

Exit codes: 0 success; 1 partial (some files failed, listed; or verify found issues) or the
operation could not run (index busy, embedder mismatch); 2 usage error (bad arguments, unknown
index, invalid spec).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from agentstack.cli.app import app

index_app = typer.Typer(name="index", help="Build, search and check document indexes.", no_args_is_help=True)
app.add_typer(index_app, name="index")

JsonOpt = typer.Option(False, "--json", help="Print JSON for scripts.")


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=False, highlight=False)


def _manager() -> Any:
    from agentstack.config import load_settings
    from agentstack.index.manager import IndexManager

    return IndexManager(load_settings())


def _emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@contextmanager
def _errors(as_json: bool) -> Iterator[None]:
    """Domain errors become one line (or a JSON error) and exit 2 (usage) or 1 (could not run)."""
    from agentstack.errors import AgentstackError, ConfigError, InvalidRequestError, NotFoundError

    try:
        yield
    except AgentstackError as exc:
        code = 2 if isinstance(exc, (InvalidRequestError, NotFoundError, ConfigError)) else 1
        if as_json:
            _emit({"error": {"code": exc.code, "message": exc.message, "fix": exc.fix}})
        else:
            typer.echo(f"error: {exc.message}" + (f"\n  fix: {exc.fix}" if exc.fix else ""), err=True)
        raise typer.Exit(code) from None


@contextmanager
def _progress(enabled: bool) -> Iterator[Any]:
    """A rich progress display fed by the pipeline's events (nothing when ``enabled`` is False)."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True) as bar:
        files = bar.add_task("documents", total=None)
        chunks = bar.add_task("embedded", total=0)

        def on_event(event: str, **info: Any) -> None:
            if event == "files":
                bar.update(files, total=info["total"])
            elif event == "document":
                bar.advance(files)
                if info.get("chunks"):
                    bar.update(chunks, total=(bar.tasks[chunks].total or 0) + info["chunks"])
            elif event == "embedded":
                bar.advance(chunks, info["chunks"])

        yield on_event


def _print_report(report: Any, as_json: bool) -> None:
    if as_json:
        _emit(report.to_dict())
    else:
        console = _console()
        console.print(f"[bold]{report.index}[/bold]: {len(report.added)} added, {len(report.updated)} updated, "
                      f"{len(report.unchanged)} unchanged, {len(report.deleted)} deleted, {report.chunks} chunks "
                      f"embedded, version {report.generation} ({report.seconds:.1f}s)")
        totals = report.scrub_totals()
        if totals:
            console.print("PII scrubbed: " + ", ".join(f"{k} {v}" for k, v in totals.items()))
        for note in report.notes:
            console.print(f"[yellow]note[/yellow]: {note}")
        if report.failures:
            console.print(f"[red]{len(report.failures)} failed[/red]:")
            for f in report.failures:
                console.print(f"  {f.source}: [red]{f.code}[/red] {f.reason}", markup=True, soft_wrap=True)
    if report.failures:
        raise typer.Exit(1)


@index_app.command("create")
def create(name: str = typer.Argument(..., help="Index name."),
           paths: list[Path] = typer.Argument(None, help="Files or directories (default: the spec's sources)."),
           spec: Path = typer.Option(None, "--spec", help="Spec file (default: indexes/NAME.yaml if it exists)."),
           as_json: bool = JsonOpt) -> None:
    """Create an index and ingest its sources."""
    with _errors(as_json):
        manager = _manager()
        with _progress(not as_json) as progress:
            report = manager.create(name, spec_path=spec, paths=paths or (), progress=progress)
    _print_report(report, as_json)


@index_app.command("add")
def add(name: str = typer.Argument(...),
        paths: list[Path] = typer.Argument(None, help="Files or directories (default: the spec's sources)."),
        prune: bool = typer.Option(False, "--prune", help="Also delete documents whose files vanished from these "
                                   "sources (or whose records left a JSONL file)."),
        as_json: bool = JsonOpt) -> None:
    """Add or update documents; unchanged ones are skipped. With --prune, the index follows deletions too."""
    with _errors(as_json):
        manager = _manager()
        with _progress(not as_json) as progress:
            report = manager.add(name, paths or None, prune=prune, progress=progress)
    _print_report(report, as_json)


def _parse_filters(items: list[str] | None) -> dict[str, Any] | None:
    from agentstack.errors import InvalidRequestError

    if not items:
        return None
    filters: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InvalidRequestError(f"--filter {item!r} is not KEY=VALUE", param="filter",
                                      fix="write --filter collection=docs")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        filters.setdefault(key, []).append(value)
    return {k: v[0] if len(v) == 1 else v for k, v in filters.items()}


@index_app.command("search")
def search(name: str = typer.Argument(...), query: str = typer.Argument(...),
           k: int = typer.Option(5, "--k", "-k", help="Number of results."),
           mode: str = typer.Option("hybrid", "--mode", help="dense | bm25 | hybrid."),
           filter_: list[str] = typer.Option(None, "--filter", help="KEY=VALUE on document metadata (repeatable)."),
           min_score: float = typer.Option(None, "--min-score", help="Drop results scoring below this."),
           as_json: bool = JsonOpt) -> None:
    """Search an index."""
    with _errors(as_json):
        hits = _manager().open(name).search(query, k=k, mode=mode, filters=_parse_filters(filter_),
                                            min_score=min_score)
    if as_json:
        _emit({"index": name, "mode": mode, "hits": [h.to_dict() for h in hits]})
        return
    console = _console()
    if not hits:
        console.print("no results")
    for rank, h in enumerate(hits, start=1):
        where = " > ".join(h.heading_path)
        console.print(f"[bold]{rank}.[/bold] {h.score:.4f}  [cyan]{where or h.title}[/cyan]  [dim]{h.source}"
                      f"[{h.start}:{h.end}][/dim]", soft_wrap=True)
        text = " ".join(h.text.split())
        console.print("   " + (text[:300] + " …" if len(text) > 300 else text), markup=False, soft_wrap=True)


@index_app.command("list")
def list_(as_json: bool = JsonOpt) -> None:
    """List the indexes of this data directory."""
    with _errors(as_json):
        rows = _manager().list()
    if as_json:
        _emit(rows)
        return
    from rich.table import Table

    table = Table("name", "documents", "chunks", "embedder", "vectors", "version", "description")
    for r in rows:
        if "error" in r:
            table.add_row(r["name"], "-", "-", "-", "-", "-", f"[red]{r['error']}[/red]")
        else:
            table.add_row(r["name"], str(r["documents"]), str(r["chunks"]), f"{r['embedder']} ({r['dim']})",
                          f"{r['vectors']} ({r['backend']})", str(r["generation"]), r["description"])
    _console().print(table)


@index_app.command("show")
def show(name: str = typer.Argument(...), as_json: bool = JsonOpt) -> None:
    """Show an index's manifest and spec."""
    with _errors(as_json):
        index = _manager().open(name)
        data = {"manifest": index.manifest(), "spec": index.store.spec(), "backend": index.backend, "location": index.store.location()}
    if as_json:
        _emit(data)
    else:
        from rich.pretty import Pretty

        _console().print(Pretty(data))


@index_app.command("docs")
def docs(name: str = typer.Argument(...), limit: int = typer.Option(100, "--limit", min=1, max=10000),
         offset: int = typer.Option(0, "--offset", min=0), as_json: bool = JsonOpt) -> None:
    """List an index's documents."""
    with _errors(as_json):
        rows, total = _manager().open(name).documents(offset=offset, limit=limit)
    if as_json:
        _emit({"index": name, "total": total, "offset": offset, "documents": rows})
        return
    from rich.table import Table

    table = Table("doc_id", "title", "format", "chunks", "chars", "source", title=f"{name}: {total} documents")
    for r in rows:
        table.add_row(r["doc_id"], r["title"], r["format"], str(r["n_chunks"]), str(r["chars"]), r["source"])
    _console().print(table)


@index_app.command("delete")
def delete(name: str = typer.Argument(...), ref: str = typer.Argument(..., metavar="DOC_ID_OR_SOURCE"),
           as_json: bool = JsonOpt) -> None:
    """Delete a document (by id or source) with its vectors."""
    with _errors(as_json):
        report = _manager().delete(name, ref)
    _print_report(report, as_json)


@index_app.command("stats")
def stats(name: str = typer.Argument(...), as_json: bool = JsonOpt) -> None:
    """Counts, sizes, configuration and the last ingest."""
    with _errors(as_json):
        data = _manager().open(name).stats()
    if as_json:
        _emit(data)
    else:
        from rich.pretty import Pretty

        _console().print(Pretty(data))


@index_app.command("rebuild")
def rebuild(name: str = typer.Argument(...),
            spec: Path = typer.Option(None, "--spec", help="Adopt this spec (chunking, embedder, vectors, PII)."),
            vectors_only: bool = typer.Option(False, "--vectors-only", help="Only rebuild the FAISS structure "
                                              "from the stored vectors (after changing `vectors:`)."),
            as_json: bool = JsonOpt) -> None:
    """Re-scrub, re-chunk and re-embed every document as one new version."""
    with _errors(as_json):
        manager = _manager()
        with _progress(not as_json) as progress:
            report = manager.rebuild(name, spec_path=spec, vectors_only=vectors_only, progress=progress)
    _print_report(report, as_json)


@index_app.command("verify")
def verify(name: str = typer.Argument(...),
           repair: bool = typer.Option(False, "--repair", help="First finish an interrupted write (takes the lock)."),
           as_json: bool = JsonOpt) -> None:
    """Check an index's consistency and report every problem found."""
    with _errors(as_json):
        report = _manager().verify(name, repair=repair)
    if as_json:
        _emit(report.to_dict())
    else:
        console = _console()
        console.print(f"[bold]{name}[/bold]: " + ("[green]consistent[/green]" if report.ok else
                                                  f"[red]{len(report.issues)} issue(s)[/red]") +
                      f"  ({', '.join(f'{k}={v}' for k, v in report.checked.items())})", soft_wrap=True)
        for i in report.issues:
            console.print(f"  [red]issue[/red]: {i}", soft_wrap=True)
        for n in report.notes:
            console.print(f"  [yellow]note[/yellow]: {n}", soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)


@index_app.command("copy")
def copy(names: list[str] = typer.Argument(None, help="Indexes to copy (default with --all: every one)."),
         to: str = typer.Option(..., "--to", help="faiss | pgvector (the database of database.url) | a "
                                "postgresql:// URL."),
         from_: str = typer.Option(None, "--from", help="Where they are now (default: the other backend)."),
         all_: bool = typer.Option(False, "--all", help="Copy every index of the source."),
         as_name: str = typer.Option(None, "--as", help="Name on the target (one index only)."),
         as_json: bool = JsonOpt) -> None:
    """Copy indexes between backends (FAISS files <-> pgvector) without re-embedding: chunks, vectors,
    ids, spec and ingest log move as they are, one version on the target."""
    from agentstack.config import load_settings
    from agentstack.errors import InvalidRequestError
    from agentstack.index.copy import copy_index, resolve

    results: list[dict[str, Any]] = []
    with _errors(as_json):
        settings = load_settings()
        target = resolve(settings, to)
        source = resolve(settings, from_ or ("faiss" if target.kind == "pgvector" else "pgvector"))
        try:
            if source.kind == target.kind and from_ == to:
                raise InvalidRequestError("--from and --to name the same place", param="to",
                                          fix="copy between faiss and pgvector, or between two databases")
            todo = list(names or [])
            if all_:
                todo = todo or source.names()
            if not todo:
                raise InvalidRequestError("name the indexes to copy, or pass --all", param="names",
                                          fix="agentstack index copy NAME --to pgvector")
            if as_name and len(todo) != 1:
                raise InvalidRequestError("--as renames one index; several were named", param="as",
                                          fix="copy them one at a time")
            for name in todo:
                with _copy_progress(not as_json) as progress:
                    results.append(copy_index(source, target, name, as_name=as_name, progress=progress))
                if not as_json:
                    r = results[-1]
                    _console().print(f"[bold]{r['index']}[/bold] -> {r['to']} {r['as']}: {r['documents']} documents, "
                                     f"{r['chunks']} chunks ({r['vectors']}), version {r['generation']}, "
                                     f"{r['seconds']:.1f}s  [dim]{r['location']}[/dim]", soft_wrap=True)
        finally:
            source.close()
            target.close()
    if as_json:
        _emit({"copied": results})


@contextmanager
def _copy_progress(enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True) as bar:
        chunks = bar.add_task("chunks", total=None)

        def on_event(event: str, **info: Any) -> None:
            if event == "start":
                bar.update(chunks, total=info["chunks"], description=info["index"])
            elif event == "copied":
                bar.update(chunks, completed=info["chunks"])
            elif event == "indexing":
                bar.update(chunks, description="indexing")

        yield on_event


@index_app.command("drop")
def drop(name: str = typer.Argument(...), yes: bool = typer.Option(False, "--yes", help="Do not ask."),
         as_json: bool = JsonOpt) -> None:
    """Delete an index entirely (all its documents and vectors)."""
    with _errors(as_json):
        manager = _manager()
        manager.open(name)
        if not yes and not typer.confirm(f"Delete index {name!r} ({manager.backend.kind}) entirely?"):
            raise typer.Exit(1)
        manager.drop(name)
    if as_json:
        _emit({"dropped": name})
    else:
        _console().print(f"dropped {name}")
