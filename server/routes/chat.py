"""The application chat API: ``POST /v1/chat`` (plain, rag, react; JSON or typed SSE), regenerate,
and reading back the caller's conversations.

SSE events (documented in docs/api.md):

* ``source`` — one retrieved source: ``{n, index, chunk_id, doc_id, title, source, score, snippet}``
* ``token``  — answer text: ``{"text": "..."}``
* ``step``   — one ReAct step: ``{n, thought, action, action_input, observation, error, latency_ms}``
* ``done``   — the stored response, as the JSON answer would be
* ``error``  — ``{"error": {message, type, code, param}}``; the stream ends after it

Every answer is stored (rendered prompt, template version, retrieved chunk ids and text, answer,
model version, parameters) before ``done`` is sent; its ``id`` is what feedback refers to.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import ConfigDict, Field, ValidationError

from agentstack.engines.params import SamplingParams
from agentstack.errors import AgentstackError, ForbiddenError, InvalidRequestError, NotFoundError
from agentstack.history import ResponseRecord, new_id, public_response
from agentstack.orchestrators.events import (AgentRequest, DoneEvent, GroundingOptions, SourceEvent, StepEvent,
                                             TokenEvent)
from agentstack.strict import StrictModel
from server.auth import Principal
from server.deps import AppUser, Svc
from server.disconnect import until_disconnect
from server.errors import status_for
from server.openapi import exactly_one_of
from server.schemas import ChatMessageIn, GroundingSwitch
from server.services import Services

router = APIRouter(tags=["chat"])


class GenerationParams(StrictModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    seed: int | None = None
    repetition_penalty: float | None = None
    stop: list[str] | None = None

    def sampling(self, defaults: Any = None) -> SamplingParams:
        """The request's parameters; unset ones take the deployment's defaults (``orchestration``)."""
        given = self.model_dump(exclude_none=True)
        if defaults is not None:
            given.setdefault("temperature", defaults.temperature)
            given.setdefault("repetition_penalty", defaults.repetition_penalty)
        try:
            return SamplingParams(**given)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = str(err["loc"][0]) if err.get("loc") else "params"
            raise InvalidRequestError(f"params.{field}: {err['msg']}", param=f"params.{field}") from None


class AppChatRequest(StrictModel):
    # Exactly one of `message` and `messages` (the server answers 400 otherwise; the schema says so).
    model_config = ConfigDict(extra="forbid", json_schema_extra=exactly_one_of("message", "messages"))
    message: str | None = Field(default=None, min_length=1, max_length=32_000,
                                description="The user's new message; history comes from `conversation_id`.")
    messages: list[ChatMessageIn] | None = Field(default=None, min_length=1,
                                                  description="A whole conversation instead of `message`.")
    conversation_id: str | None = None
    mode: Literal["plain", "rag", "react"] = "plain"
    index: str | None = None
    top_k: int | None = Field(default=None, description="Chunks to retrieve (rag, and react's search tool).")
    filters: dict[str, Any] | None = Field(default=None, description="Metadata filters on retrieval (rag).")
    tools: list[str] | None = Field(default=None, description="Narrow the allowed tools (react).")
    structured: bool = Field(default=True, description="React: constrain each step with a grammar.")
    model: str | None = Field(default=None, description="A model version; default: the active one.")
    params: GenerationParams = Field(default_factory=GenerationParams)
    grounding: GroundingSwitch = Field(default_factory=GroundingSwitch,
                                        description="The groundedness verifier's switches (rag, react).")
    stream: bool = False


class RegenerateRequest(StrictModel):
    model_config = ConfigDict(extra="forbid")
    params: GenerationParams | None = None
    stream: bool = False


def check_index(principal: Principal, index: str | None) -> None:
    if index is not None and not principal.may_read_index(index):
        raise ForbiddenError(f"key {principal.key_id!r} may not read index {index!r}", param="index")


def store_agent_response(svc: Services, principal: Principal, *, response_id: str, conversation_id: str | None,
                         parent_id: str | None, turn: int | None, request: AgentRequest, done: DoneEvent,
                         started: float, endpoint: str) -> ResponseRecord:
    rec = ResponseRecord(
        id=response_id, conversation_id=conversation_id, parent_id=parent_id, turn=turn, key_id=principal.key_id,
        user_id=principal.user_id, endpoint=endpoint, mode=request.mode, model=request.model or svc.router.alias,
        model_version=done.model_version, messages=request.messages,
        params={**request.params.model_dump(exclude_defaults=True), "index": request.index, "top_k": request.top_k,
                "filters": request.filters,
                "tools": request.tools, "structured": request.structured, "prompt_messages": done.messages,
                "grounding": {k: v for k, v in asdict(request.grounding).items() if v is not None}},
        answer=done.answer, rendered_prompt=done.rendered_prompt, finish_reason=done.finish_reason,
        prompt_template_version=done.prompt_template_version, sources=[s.public() for s in done.sources],
        trace=[s.public() for s in done.trace], prompt_tokens=done.usage.get("prompt_tokens"),
        completion_tokens=done.usage.get("completion_tokens"), latency_ms=(time.perf_counter() - started) * 1000,
        grounding=done.grounding or None)
    svc.responses.record(rec)
    if conversation_id is not None:
        svc.conversations.touch(conversation_id)
    return rec


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _answer(svc: Services, principal: Principal, request: AgentRequest, *, conversation_id: str,
                  parent_id: str | None, turn: int, stream: bool, http: Request, endpoint: str = "chat"):
    response_id = new_id("resp")
    started = time.perf_counter()
    events = svc.orchestrators.run(request)
    first = await events.__anext__()  # request errors surface here, as plain HTTP errors

    async def all_events() -> AsyncIterator[Any]:
        yield first
        async for ev in events:
            yield ev

    async def finish(done: DoneEvent) -> dict[str, Any]:
        rec = await asyncio.to_thread(store_agent_response, svc, principal, response_id=response_id,
                                      conversation_id=conversation_id, parent_id=parent_id, turn=turn,
                                      request=request, done=done, started=started, endpoint=endpoint)
        return {**public_response(rec), "usage": done.usage}

    if not stream:
        async def collect() -> dict[str, Any]:
            async for ev in all_events():
                if isinstance(ev, DoneEvent):
                    return await finish(ev)
            raise AgentstackError("the orchestrator ended without an answer")

        try:
            return await until_disconnect(http, collect(), svc.settings.server.request_timeout_s)
        finally:
            await events.aclose()

    async def sse() -> AsyncIterator[str]:
        try:
            async for ev in all_events():
                if isinstance(ev, TokenEvent):
                    yield _sse("token", {"text": ev.text})
                elif isinstance(ev, SourceEvent):
                    yield _sse("source", {k: v for k, v in ev.source.public().items() if k != "text"})
                elif isinstance(ev, StepEvent):
                    yield _sse("step", ev.step.public())
                elif isinstance(ev, DoneEvent):
                    yield _sse("done", await finish(ev))
        except AgentstackError as exc:
            status, kind = status_for(exc)
            yield _sse("error", {"error": {"message": str(exc), "type": kind, "code": exc.code, "param": exc.param,
                                           "status": status}})
        finally:
            await events.aclose()

    return StreamingResponse(sse(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/v1/chat", summary="Chat in plain, rag or react mode (JSON, or typed SSE with stream=true)")
async def chat(body: AppChatRequest, http: Request, user: AppUser, svc: Svc):
    if (body.message is None) == (body.messages is None):
        raise InvalidRequestError("send exactly one of `message` or `messages`", param="message")
    check_index(user, body.index)
    if body.model is not None:
        svc.resolve_model(body.model, user)  # an app key may name only the active or a selectable version
    if body.conversation_id:
        conv = await asyncio.to_thread(svc.conversations.get, body.conversation_id, key_id=user.key_id,
                                       user_id=user.user_id)
        history = await asyncio.to_thread(svc.conversations.history, conv["id"])
        conversation_id = conv["id"]
    else:
        history, conversation_id = [], None
    new = [{"role": "user", "content": body.message}] if body.message is not None else \
        [m.model_dump(exclude_none=True) for m in body.messages or []]
    request = AgentRequest(messages=history + new, mode=body.mode, index=body.index, top_k=body.top_k,
                           filters=body.filters,
                           params=body.params.sampling(svc.settings.orchestration), tools=body.tools,
                           structured=body.structured,
                           model=body.model, grounding=body.grounding.options())
    if conversation_id is None:
        title = str(new[-1].get("content", ""))[:120] if new else ""
        conversation_id = await asyncio.to_thread(svc.conversations.create, key_id=user.key_id,
                                                  user_id=user.user_id, mode=body.mode, index_name=body.index,
                                                  title=title)
    turn = await asyncio.to_thread(svc.conversations.next_turn, conversation_id)
    return await _answer(svc, user, request, conversation_id=conversation_id, parent_id=None, turn=turn,
                         stream=body.stream, http=http)


@router.post("/v1/chat/{response_id}/regenerate", summary="A sibling answer to the same prompt")
async def regenerate(response_id: str, http: Request, user: AppUser, svc: Svc, body: RegenerateRequest | None = None):
    body = body or RegenerateRequest()
    original = await asyncio.to_thread(svc.responses.get, response_id)
    if original is None or original.key_id != user.key_id or original.user_id != user.user_id \
            or original.conversation_id is None:
        raise NotFoundError(f"response {response_id!r} not found", param="response_id")
    params = original.params or {}
    check_index(user, params.get("index"))
    sampling = body.params.sampling(svc.settings.orchestration) if body.params else SamplingParams(
        **{k: v for k, v in params.items() if k in SamplingParams.model_fields})
    request = AgentRequest(messages=original.messages, mode=original.mode, index=params.get("index"),
                           top_k=params.get("top_k"), filters=params.get("filters"), params=sampling,
                           tools=params.get("tools"),
                           structured=params.get("structured", True), model=None,
                           grounding=GroundingOptions(**(params.get("grounding") or {})))
    return await _answer(svc, user, request, conversation_id=original.conversation_id,
                         parent_id=original.parent_id or original.id, turn=original.turn or 0, stream=body.stream,
                         http=http)


@router.get("/v1/conversations", summary="The calling user's conversations, newest first")
async def list_conversations(user: AppUser, svc: Svc, limit: int = 50, offset: int = 0) -> dict[str, Any]:
    limit = max(1, min(limit, 200))
    rows = await asyncio.to_thread(svc.conversations.list, key_id=user.key_id, user_id=user.user_id, limit=limit,
                                   offset=max(0, offset))
    return {"object": "list", "data": [{k: r[k] for k in ("id", "title", "mode", "index_name", "created_at",
                                                           "updated_at", "turns")} for r in rows]}


@router.get("/v1/conversations/{conversation_id}", summary="One conversation with every turn and sibling")
async def get_conversation(conversation_id: str, user: AppUser, svc: Svc) -> dict[str, Any]:
    conv = await asyncio.to_thread(svc.conversations.get, conversation_id, key_id=user.key_id, user_id=user.user_id)
    turns = await asyncio.to_thread(svc.conversations.detail, conversation_id)
    return {**{k: conv[k] for k in ("id", "title", "mode", "index_name", "created_at", "updated_at")}, "turns": turns}


@router.delete("/v1/conversations/{conversation_id}", summary="Delete a conversation and its answers")
async def delete_conversation(conversation_id: str, user: AppUser, svc: Svc) -> dict[str, Any]:
    await asyncio.to_thread(svc.conversations.get, conversation_id, key_id=user.key_id, user_id=user.user_id)
    await asyncio.to_thread(svc.conversations.delete, conversation_id)
    return {"id": conversation_id, "deleted": True}
