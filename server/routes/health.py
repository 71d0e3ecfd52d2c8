"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agentstack.engines.base import ChatRequest
from agentstack.engines.params import SamplingParams
from agentstack.errors import AgentstackError
from server.deps import Operator, Svc

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up (public)")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="A real one-token generation succeeds (public)")
async def readyz(svc: Svc) -> JSONResponse:
    started = time.perf_counter()
    try:
        version = svc.router.active
        request = ChatRequest(messages=[{"role": "user", "content": "ping"}], model=version,
                              params=SamplingParams(max_tokens=1, temperature=0.0))
        result = await asyncio.wait_for(svc.engine.chat(request), timeout=60)
    except (AgentstackError, asyncio.TimeoutError) as exc:
        return JSONResponse({"status": "not ready", "reason": type(exc).__name__}, status_code=503)
    return JSONResponse({"status": "ready", "model_version": result.model_version,
                         "latency_ms": round((time.perf_counter() - started) * 1000, 1)})


@router.get("/metrics", summary="Prometheus metrics (operator)")
async def metrics(op: Operator, svc: Svc) -> Response:
    return Response(generate_latest(svc.registry), media_type=CONTENT_TYPE_LATEST)
