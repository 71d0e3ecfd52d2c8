"""Document indexes over HTTP.

App keys read the indexes they may use (``auth.keys[].indexes``; unset = all): list them, search,
list documents. Operators also upload documents, delete one, read stats, verify and rebuild.
Every operator action is written to the audit log. Work that touches SQLite, FAISS or the
embedder runs in a thread (the embedder itself waits on the compute worker), so the event loop
never blocks. Routes read "look up, check, act"; the work is in ``agentstack.index``.

Uploads are JSON (``{"documents": [{"name": "a.md", "text": "..."}, {"name": "b.pdf",
"content_base64": "..."}], "metadata": {...}}``); each becomes the document ``upload:<name>``,
so uploading the same name again replaces it. The body limit is ``server.max_body_bytes``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import ConfigDict, Field, model_validator

from agentstack.errors import ForbiddenError, InvalidRequestError
from agentstack.index.manager import IndexManager
from agentstack.index.spec import NAME_RE
from agentstack.strict import StrictModel
from server.auth import Principal
from server.deps import AppUser, Operator, Svc
from server.openapi import exactly_one_of
from server.services import Services

router = APIRouter(prefix="/v1/indexes", tags=["Indexes"])


def get_indexes(svc: Svc) -> IndexManager:
    """The server's one :class:`IndexManager` (``Services.indexes``: shares the server's embedder)."""
    return svc.indexes


Indexes = Annotated[IndexManager, Depends(get_indexes)]
# Documented only: a bad name still gets the index module's 400, which says how to fix it.
IndexName = Annotated[str, Path(description="An index name.", json_schema_extra={"pattern": NAME_RE.pattern})]


def _readable(principal: Principal, name: str) -> None:
    if not principal.may_read_index(name):
        raise ForbiddenError(f"key {principal.key_id!r} may not use index {name!r}",
                             fix="ask an operator to add the index to this key's `indexes`")


async def _audit(svc: Services, op: Principal, action: str, target: str, detail: dict[str, Any] | None = None,
                 outcome: str = "ok") -> None:
    await asyncio.to_thread(svc.audit.record, key_id=op.key_id, user_id=op.user_id, action=action, target=target,
                            detail=detail, outcome=outcome)
    if outcome != "ok" and outcome != "partial" or svc.shared is None:
        return
    from agentstack.state.base import INDEX_CHANNEL

    # tell every replica the index changed (index backends shared between replicas refresh on it)
    await asyncio.to_thread(svc.shared.publish, INDEX_CHANNEL, {"index": target, "action": action})


class SearchBody(StrictModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(description="The question or keywords.")
    k: int = Field(default=5, description="Number of results (1 to the index's max_k, 100 by default).")
    mode: Literal["dense", "bm25", "hybrid"] = Field(default="hybrid", description="Retrieval mode.")
    filters: dict[str, Any] | None = Field(default=None, description="Metadata filters: field -> value or "
                                           "list of values; also doc_id, source, format, title.")
    min_score: float | None = Field(default=None, description="Drop results scoring below this.")


class UploadDocument(StrictModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=exactly_one_of("text", "content_base64"))

    name: str = Field(min_length=1, max_length=255, description="File name; its extension picks the format.")
    text: str | None = Field(default=None, description="The content as text.")
    content_base64: str | None = Field(default=None, description="The content as base64 (PDFs, other encodings).")

    @model_validator(mode="after")
    def _one_content(self) -> UploadDocument:
        if (self.text is None) == (self.content_base64 is None):
            raise ValueError(f"document {self.name!r}: give exactly one of `text` or `content_base64`")
        return self

    def content(self) -> bytes:
        if self.text is not None:
            return self.text.encode("utf-8")
        try:
            return base64.b64decode(self.content_base64 or "", validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequestError(f"document {self.name!r}: content_base64 is not valid base64",
                                      param="documents", fix="encode the file with standard base64") from None


class UploadBody(StrictModel):
    model_config = ConfigDict(extra="forbid")

    documents: list[UploadDocument] = Field(min_length=1, max_length=1000)
    metadata: dict[str, Any] | None = Field(default=None, description="Metadata added to every document.")


# -- read: app keys -------------------------------------------------------------------------------
@router.get("", summary="List the indexes this key may use")
async def list_indexes(user: AppUser, indexes: Indexes) -> dict[str, Any]:
    rows = await asyncio.to_thread(indexes.list)
    return {"object": "list", "data": [r for r in rows if user.may_read_index(r["name"])]}


@router.post("/{name}/search", summary="Search an index (dense, bm25 or hybrid)")
async def search(name: IndexName, body: SearchBody, user: AppUser, indexes: Indexes) -> dict[str, Any]:
    _readable(user, name)
    index = indexes.open(name)
    hits = await asyncio.to_thread(index.search, body.query, k=body.k, mode=body.mode, filters=body.filters,
                                   min_score=body.min_score)
    return {"object": "list", "index": name, "mode": body.mode, "data": [h.to_dict() for h in hits]}


@router.get("/{name}/documents", summary="List an index's documents")
async def list_documents(name: IndexName, user: AppUser, indexes: Indexes, offset: int = Query(0, ge=0),
                         limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
    _readable(user, name)
    rows, total = await asyncio.to_thread(indexes.open(name).documents, offset=offset, limit=limit)
    return {"object": "list", "index": name, "total": total, "offset": offset, "data": rows}


# -- write and inspect: operators -------------------------------------------------------------------
@router.post("/{name}/documents", summary="Upload documents (added, replaced or skipped if unchanged)")
async def upload(name: IndexName, body: UploadBody, op: Operator, svc: Svc, indexes: Indexes) -> dict[str, Any]:
    files: list[tuple[str, bytes]] = []
    try:  # a refused upload (unknown index: 404 before anything is decoded) is audited too
        indexes.open(name)
        files = [(d.name, d.content()) for d in body.documents]
        report = await asyncio.to_thread(indexes.add_bytes, name, files, metadata=body.metadata)
    except Exception as exc:
        await _audit(svc, op, "index.upload", name, {"files": len(files)}, outcome=type(exc).__name__)
        raise
    await _audit(svc, op, "index.upload", name, {"added": len(report.added), "updated": len(report.updated),
                                                 "failed": len(report.failures)},
                 outcome="ok" if report.ok else "partial")
    return report.to_dict()


@router.delete("/{name}/documents/{ref:path}", summary="Delete a document by id or source, with its vectors")
async def delete_document(name: IndexName, ref: str, op: Operator, svc: Svc, indexes: Indexes) -> dict[str, Any]:
    try:
        report = await asyncio.to_thread(indexes.delete, name, ref)
    except Exception as exc:
        await _audit(svc, op, "index.delete_document", name, {"ref": ref}, outcome=type(exc).__name__)
        raise
    await _audit(svc, op, "index.delete_document", name, {"deleted": report.deleted})
    return report.to_dict()


@router.get("/{name}/stats", summary="Counts, sizes, configuration and the last ingest")
async def stats(name: IndexName, op: Operator, indexes: Indexes) -> dict[str, Any]:
    return await asyncio.to_thread(indexes.open(name).stats)


@router.get("/{name}/verify", summary="Check the index's consistency")
async def verify(name: IndexName, op: Operator, indexes: Indexes) -> dict[str, Any]:
    report = await asyncio.to_thread(indexes.verify, name)
    return report.to_dict()


@router.post("/{name}/rebuild", summary="Re-scrub, re-chunk and re-embed every document as one new version")
async def rebuild(name: IndexName, op: Operator, svc: Svc, indexes: Indexes) -> dict[str, Any]:
    try:
        indexes.open(name)
        report = await asyncio.to_thread(indexes.rebuild, name)
    except Exception as exc:
        await _audit(svc, op, "index.rebuild", name, outcome=type(exc).__name__)
        raise
    await _audit(svc, op, "index.rebuild", name, {"documents": len(report.updated), "chunks": report.chunks})
    return report.to_dict()
