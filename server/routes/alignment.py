"""Alignment jobs and model versions over HTTP (operator role only). Every action is audited.

* ``POST /v1/admin/alignment/jobs``: start a round (body: :class:`~agentstack.alignment.spec.JobSpec`).
  202 with the job; 409 ``insufficient_data`` (the message says how many examples are needed);
  409 when a job is already running; 422 for an invalid spec.
* ``GET /v1/admin/alignment/jobs`` (``?status=&limit=&offset=``), ``GET .../jobs/{job_id}``
  (``?log_lines=100``: the job with its spec, data counts, metrics history, gate decision, log tail).
* ``POST /v1/admin/alignment/jobs/{job_id}/cancel``.
* ``GET /v1/admin/models``: the base model and every registered version (metadata, gate decision,
  loaded, active), and the deployment history.
* ``POST /v1/admin/models/{version}/promote`` (body ``{"force": false}`` optional): hot swap; 404
  unknown version, 409 rejected by the gate (unless forced).
* ``POST /v1/admin/models/rollback`` (body ``{"version": null}`` optional: the previous version).
* ``POST /v1/admin/models/{version}/selectable`` (body ``{"selectable": true}``): whether app keys
  may ask for the version by name (they always get the active one through the served alias).

The work is in ``agentstack.alignment``; routes look up, check, act.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import ConfigDict, Field

from agentstack.alignment.jobs import STATUSES
from agentstack.alignment.spec import JobSpec
from agentstack.errors import AgentstackError, InvalidRequestError
from agentstack.strict import StrictModel
from server.auth import Principal
from server.deps import Operator, Svc
from server.services import Services

router = APIRouter(prefix="/v1/admin", tags=["Alignment (operator)"])


async def _audit(svc: Services, op: Principal, action: str, target: str | None, detail: dict[str, Any] | None = None,
                 outcome: str = "ok") -> None:
    await asyncio.to_thread(svc.audit.record, key_id=op.key_id, user_id=op.user_id, action=action, target=target,
                            detail=detail, outcome=outcome)


class PromoteRequest(StrictModel):
    model_config = ConfigDict(extra="forbid")

    force: bool = Field(default=False, description="Promote even if the gate rejected the version (audited).")


class RollbackRequest(StrictModel):
    model_config = ConfigDict(extra="forbid")

    version: str | None = Field(default=None, description="The version to return to; unset = the previous one.")


@router.post("/alignment/jobs", status_code=202, summary="Start an alignment round")
async def submit_job(spec: JobSpec, op: Operator, svc: Svc) -> dict[str, Any]:
    try:
        job = await asyncio.to_thread(svc.alignment.jobs.submit, spec, key_id=op.key_id)
    except AgentstackError as exc:
        await _audit(svc, op, "alignment.job.submit", None, {"method": spec.method, "error": exc.code,
                                                             "message": exc.message}, outcome="refused")
        raise
    await _audit(svc, op, "alignment.job.submit", job.id, {"method": spec.method,
                                                           "spec": spec.model_dump(mode="json", exclude_defaults=True)})
    return job.public(detail=True)


@router.get("/alignment/jobs", summary="Alignment jobs, newest first")
async def list_jobs(op: Operator, svc: Svc,
                    status: str | None = Query(default=None, description="Only jobs in this status.",
                                               json_schema_extra={"enum": list(STATUSES)}), limit: int = Query(default=50, ge=1, le=500),
                    offset: int = Query(default=0, ge=0)) -> dict[str, Any]:
    if status is not None and status not in STATUSES:
        raise InvalidRequestError(f"status must be one of {', '.join(STATUSES)}, got {status!r}", param="status")
    jobs = await asyncio.to_thread(svc.alignment.jobs.jobs.list, status=status, limit=limit, offset=offset)
    return {"object": "list", "data": [j.public() for j in jobs]}


@router.get("/alignment/jobs/{job_id}", summary="One job: status, metrics, gate decision, log tail")
async def get_job(job_id: str, op: Operator, svc: Svc, log_lines: int = Query(default=100, ge=0, le=5000)
                  ) -> dict[str, Any]:
    job = await asyncio.to_thread(svc.alignment.jobs.jobs.get, job_id, log_lines=log_lines)
    return job.public(detail=True)


@router.post("/alignment/jobs/{job_id}/cancel", summary="Cancel a queued or running job")
async def cancel_job(job_id: str, op: Operator, svc: Svc) -> dict[str, Any]:
    try:
        job = await asyncio.to_thread(svc.alignment.jobs.cancel, job_id)
    except AgentstackError as exc:
        await _audit(svc, op, "alignment.job.cancel", job_id, {"error": exc.code}, outcome="error")
        raise
    await _audit(svc, op, "alignment.job.cancel", job_id)
    return job.public(detail=True)


@router.get("/models", summary="Registered model versions, the active one, deployments")
async def list_models(op: Operator, svc: Svc) -> dict[str, Any]:
    return await asyncio.to_thread(svc.alignment.deployer.models)


@router.post("/models/{version}/promote", summary="Hot-swap the served model to a version")
async def promote(version: str, op: Operator, svc: Svc, body: PromoteRequest | None = None) -> JSONResponse:
    body = body or PromoteRequest()
    try:
        result = await svc.alignment.deployer.promote(version, key_id=op.key_id, force=body.force)
    except AgentstackError as exc:
        await _audit(svc, op, "model.promote", version, {"force": body.force, "error": exc.code,
                                                         "message": exc.message}, outcome="error")
        raise
    await _audit(svc, op, "model.promote", version, {"force": body.force, **result})
    return JSONResponse(result)


class SelectableRequest(StrictModel):
    model_config = ConfigDict(extra="forbid")

    selectable: bool = Field(default=True, description="Whether app keys may ask for this version by name.")


@router.post("/models/{version}/selectable", summary="Let app keys select a version by name, or stop them")
async def set_selectable(version: str, op: Operator, svc: Svc, body: SelectableRequest | None = None) -> JSONResponse:
    body = body or SelectableRequest()
    try:
        result = await asyncio.to_thread(svc.alignment.deployer.set_selectable, version, body.selectable)
    except AgentstackError as exc:
        await _audit(svc, op, "model.selectable", version, {"selectable": body.selectable, "error": exc.code},
                     outcome="error")
        raise
    await _audit(svc, op, "model.selectable", version, {"selectable": body.selectable, "changed": result["changed"]})
    return JSONResponse(result)


@router.post("/models/rollback", summary="Return to an earlier version (default: the previous one)")
async def rollback(op: Operator, svc: Svc, body: RollbackRequest | None = None) -> JSONResponse:
    body = body or RollbackRequest()
    try:
        result = await svc.alignment.deployer.rollback(body.version, key_id=op.key_id)
    except AgentstackError as exc:
        await _audit(svc, op, "model.rollback", body.version, {"error": exc.code, "message": exc.message},
                     outcome="error")
        raise
    await _audit(svc, op, "model.rollback", result["active"], result)
    return JSONResponse(result)
