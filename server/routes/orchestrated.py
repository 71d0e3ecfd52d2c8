"""``/v1/chat/completions`` with the models ``rag:<index>`` and ``react:<index>``: the orchestrators
behind OpenAI's wire format, so any OpenAI client gets RAG and ReAct. Sources (and the ReAct trace)
ride in extra fields: ``sources``/``trace``/``grounding`` on the completion, and on the final stream
chunk; the extra request field ``grounding`` (``{"enabled", "unsupported", "fallback"}``) switches
the groundedness verifier per request.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from agentstack.errors import AgentstackError, InvalidRequestError
from agentstack.history import new_id
from agentstack.orchestrators.events import AgentRequest, DoneEvent, GroundingOptions, TokenEvent
from server.auth import Principal
from server.disconnect import until_disconnect
from server.errors import status_for
from server.routes.chat import check_index, store_agent_response
from server.schemas import ChatCompletionRequest
from server.services import Services


def _public_sources(done: DoneEvent) -> list[dict[str, Any]]:
    return [{k: v for k, v in s.public().items() if k != "text"} for s in done.sources]


async def orchestrated_completion(body: ChatCompletionRequest, mode: str, index: str, http: Request,
                                  user: Principal, svc: Services):
    check_index(user, index)
    if body.tools or body.structured() is not None:
        raise InvalidRequestError(f"{mode}:<index> models do not take tools or output constraints", param="model")
    request = AgentRequest(messages=body.message_dicts(), mode=mode, index=index,  # type: ignore[arg-type]
                           params=body.sampling_params(),
                           grounding=body.grounding.options() if body.grounding else GroundingOptions())
    completion_id = new_id("chatcmpl")
    started = time.perf_counter()
    events = svc.orchestrators.run(request)
    first = await events.__anext__()

    async def all_events() -> AsyncIterator[Any]:
        yield first
        async for ev in events:
            yield ev

    async def store(done: DoneEvent) -> None:
        await asyncio.to_thread(store_agent_response, svc, user, response_id=completion_id, conversation_id=None,
                                parent_id=None, turn=None, request=request, done=done, started=started,
                                endpoint="chat.completions")

    if not body.stream:
        async def collect() -> DoneEvent:
            async for ev in all_events():
                if isinstance(ev, DoneEvent):
                    return ev
            raise AgentstackError("the orchestrator ended without an answer")

        try:
            done = await until_disconnect(http, collect(), svc.settings.server.request_timeout_s)
        finally:
            await events.aclose()
        await store(done)
        return {"id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": body.model,
                "model_version": done.model_version, "system_fingerprint": done.model_version,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": done.answer},
                             "finish_reason": done.finish_reason, "logprobs": None}],
                "usage": done.usage, "sources": _public_sources(done), "trace": [s.public() for s in done.trace],
                "grounding": done.grounding}

    base = {"id": completion_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": body.model}
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        payload = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                   **extra}
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    async def sse() -> AsyncIterator[str]:
        try:
            yield chunk({"role": "assistant", "content": ""})
            async for ev in all_events():
                if isinstance(ev, TokenEvent):
                    yield chunk({"content": ev.text})
                elif isinstance(ev, DoneEvent):
                    await store(ev)
                    yield chunk({}, ev.finish_reason or "stop", sources=_public_sources(ev),
                                trace=[s.public() for s in ev.trace], model_version=ev.model_version,
                                grounding=ev.grounding)
                    if include_usage:
                        yield f"data: {json.dumps({**base, 'choices': [], 'usage': ev.usage})}\n\n"
            yield "data: [DONE]\n\n"
        except AgentstackError as exc:
            status, kind = status_for(exc)
            err = {"message": str(exc), "type": kind, "param": exc.param, "code": exc.code, "status": status}
            yield f"data: {json.dumps({'error': err})}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            await events.aclose()

    return StreamingResponse(sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
