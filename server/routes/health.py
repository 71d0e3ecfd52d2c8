"""Liveness, readiness (the server's own background check, server/readiness.py) and Prometheus
metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from server.deps import Operator, Svc
from server.errors import request_id

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up (public)")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The server's own last readiness check succeeded (public; never generates)")
async def readyz(request: Request, svc: Svc) -> JSONResponse:
    ready, body = svc.readiness.status()
    if not ready:  # the error shape every error has, with the readiness fields beside it
        body = {**body, "error": {"message": f"not ready: {body['reason']}", "type": "server_error", "param": None,
                                  "code": "not_ready"}, "request_id": request_id(request)}
    return JSONResponse(body, status_code=200 if ready else 503, headers={"Cache-Control": "no-store"})


@router.get("/metrics", summary="Prometheus metrics (operator)")
async def metrics(op: Operator, svc: Svc) -> Response:
    return Response(generate_latest(svc.registry), media_type=CONTENT_TYPE_LATEST)
