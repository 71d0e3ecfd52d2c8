"""Stored evaluation reports over HTTP (operator role): what ``agentstack eval`` runs wrote under
``settings.eval_path`` (``agentstack.evaluation.reports``).

* ``GET /v1/admin/eval/reports``: summaries, newest first (suite, system, n, errors, headline figures).
* ``GET /v1/admin/eval/reports/{run_id}``: one report's JSON.
* ``GET /v1/admin/eval/reports/{run_id}/html``: its self-contained HTML page, served under a
  ``sandbox`` Content-Security-Policy (no script runs, nothing loads from elsewhere).

Server paths are not shown; a run id must name a folder directly under ``eval_path``.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import FileResponse

from agentstack.errors import NotFoundError
from server.deps import Operator, Svc

router = APIRouter(prefix="/v1/admin/eval", tags=["Evaluation (operator)"])
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
RunId = Annotated[str, PathParam(description="A run id (a folder name under eval_path).",
                                 json_schema_extra={"pattern": RUN_ID.pattern})]
REPORT_CSP = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'none'"


def _run_dir(eval_path: Path, run_id: str) -> Path:
    folder = (eval_path / run_id).resolve() if RUN_ID.match(run_id) else None
    if folder is None or folder.parent != eval_path.resolve() or not (folder / "report.json").is_file():
        raise NotFoundError(f"no eval report {run_id!r}", param="run_id",
                            fix="list them with GET /v1/admin/eval/reports or `agentstack eval list`")
    return folder


@router.get("/reports", summary="Stored evaluation reports, newest first")
async def list_eval_reports(op: Operator, svc: Svc) -> dict[str, Any]:
    from agentstack.evaluation.reports import list_reports

    rows = await asyncio.to_thread(list_reports, svc.settings.eval_path, getattr(svc, "db", None))
    data = []
    for row in rows:
        html = row.pop("html_path", None)
        row.pop("json_path", None)
        data.append({**row, "has_html": bool(html) and Path(html).is_file()})
    return {"object": "list", "data": data}


@router.get("/reports/{run_id}", summary="One evaluation report (JSON)")
async def get_eval_report(run_id: RunId, op: Operator, svc: Svc) -> dict[str, Any]:
    from agentstack.evaluation.reports import load_report

    folder = _run_dir(svc.settings.eval_path, run_id)
    return await asyncio.to_thread(load_report, folder)


@router.get("/reports/{run_id}/html", summary="One evaluation report as its HTML page (sandboxed)",
            response_class=FileResponse)
async def get_eval_report_html(run_id: RunId, op: Operator, svc: Svc) -> FileResponse:
    page = _run_dir(svc.settings.eval_path, run_id) / "report.html"
    if not page.is_file():
        raise NotFoundError(f"eval report {run_id!r} has no HTML page", param="run_id",
                            fix="re-run `agentstack eval` with HTML output")
    return FileResponse(page, media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": REPORT_CSP, "X-Content-Type-Options": "nosniff",
                                 "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})
