"""The OpenAI-compatible surface: chat completions (JSON and SSE), models, embeddings, vLLM's
``/tokenize`` and LoRA hot-loading routes.

Routes read "look up, check, act": resolve the model, validate parameters, start the engine's
stream (every request error surfaces before the first event, so it is still a plain HTTP error),
then answer as JSON or as server-sent events. Every finished completion is stored; its ``id`` is
what feedback refers to. A client that disconnects cancels its generation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, StreamingResponse

from agentstack.engines.base import ChatRequest, StreamEvent, TokenLogprob, Usage
from agentstack.errors import AgentstackError, InvalidRequestError, ModelNotFoundError
from agentstack.history import ResponseRecord, new_id
from server.auth import Principal
from server.deps import AppUser, Operator, Svc
from server.disconnect import until_disconnect
from server.errors import request_id, status_for
from server.schemas import ChatCompletionRequest, EmbeddingRequest, LoraLoadRequest, LoraUnloadRequest, TokenizeRequest
from server.services import Services

log = logging.getLogger(__name__)
router = APIRouter(tags=["OpenAI-compatible"])


# -- models -----------------------------------------------------------------------------------------
def _model_cards(svc: Services, principal: Principal | None = None) -> list[dict[str, Any]]:
    active = svc.router.active
    models = svc.engine.models()
    ctx = {m.id: m.context_length for m in models}
    cards = [{"id": svc.router.alias, "object": "model", "created": int(time.time()), "owned_by": "agentstack",
              "root": active, "parent": None, "max_model_len": ctx.get(active), "active_version": active}]
    visible = None if principal is None or principal.has("operator") else \
        {active, *svc.alignment.deployer.selectable()}  # app keys see what they may select
    cards += [{"id": m.id, "object": "model", "created": m.created, "owned_by": "agentstack", "root": m.id,
               "parent": m.parent, "max_model_len": m.context_length} for m in models
              if visible is None or m.id in visible]
    if principal is not None:
        for name in svc.indexes.names():
            if principal.may_read_index(name):
                cards += [{"id": f"{mode}:{name}", "object": "model", "created": int(time.time()),
                           "owned_by": "agentstack", "root": active, "parent": None, "max_model_len": ctx.get(active)}
                          for mode in ("rag", "react")]
    return cards


@router.get("/v1/models", summary="List the models: the served alias, then each loaded version")
async def list_models(user: AppUser, svc: Svc) -> dict[str, Any]:
    return {"object": "list", "data": await asyncio.to_thread(_model_cards, svc, user)}


@router.get("/v1/models/{model_id:path}", summary="One model card")
async def get_model(model_id: str, user: AppUser, svc: Svc) -> dict[str, Any]:
    for card in await asyncio.to_thread(_model_cards, svc, user):
        if card["id"] == model_id:
            return card
    svc.resolve_model(model_id, user)  # raises the 404 listing what exists, or 403 for an app key
    raise ModelNotFoundError(model_id)


# -- chat completions -------------------------------------------------------------------------------
def _logprobs_json(items: list[TokenLogprob] | None) -> dict[str, Any] | None:
    if not items:
        return None
    return {"content": [{"token": t.token, "logprob": t.logprob, "bytes": list(t.token.encode()),
                         "top_logprobs": [{"token": tok, "logprob": lp, "bytes": list(tok.encode())}
                                          for tok, lp in t.top]} for t in items]}


def _store(svc: Services, principal: Principal, *, completion_id: str, body: ChatCompletionRequest,
           texts: list[str], reasons: list[str | None], usage: Usage, version: str, prompt: str | None,
           params: dict[str, Any], started: float) -> None:
    latency = (time.perf_counter() - started) * 1000
    for i, text in enumerate(texts):
        svc.responses.record(ResponseRecord(
            id=completion_id if i == 0 else f"{completion_id}.{i}", parent_id=None if i == 0 else completion_id,
            key_id=principal.key_id, user_id=principal.user_id, endpoint="chat.completions", model=body.model,
            model_version=version, messages=body.message_dicts(), params=params, answer=text,
            rendered_prompt=prompt, finish_reason=reasons[i], prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens if len(texts) == 1 else None, latency_ms=latency))


async def _first(events: AsyncIterator[StreamEvent]) -> StreamEvent:
    try:
        return await events.__anext__()
    except StopAsyncIteration:  # engines always end with a usage event; this is a bug if it happens
        raise AgentstackError("the engine produced no output") from None


@router.post("/v1/chat/completions", summary="Create a chat completion (JSON, or SSE with stream=true). "
             "Models `rag:<index>` and `react:<index>` run the orchestrators; their sources come in `sources`.")
async def chat_completions(body: ChatCompletionRequest, request: Request, user: AppUser, svc: Svc):
    mode, _, index = body.model.partition(":")
    if index and mode in ("rag", "react"):
        from server.routes.orchestrated import orchestrated_completion

        return await orchestrated_completion(body, mode, index, request, user, svc)
    if body.grounding is not None:
        raise InvalidRequestError("`grounding` applies to the rag:<index> and react:<index> models only",
                                  param="grounding", fix="drop the field, or ask a rag:<index> model")
    version = svc.resolve_model(body.model, user)
    params = body.sampling_params()
    chat = ChatRequest(messages=body.message_dicts(), model=version, params=params, structured=body.structured(),
                       tools=body.tools, tool_choice=body.tool_choice, parallel_tool_calls=body.parallel_tool_calls,
                       request_id=request_id(request))
    completion_id = new_id("chatcmpl")
    started = time.perf_counter()
    events = svc.engine.stream(chat)
    try:
        first = await _first(events)
    except InvalidRequestError as exc:
        raise body.in_client_terms(exc) from None
    stored_params = params.model_dump(exclude_defaults=True)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        stream = _sse(svc, user, body, completion_id, first, events, params.n, include_usage, stored_params,
                      started)
        return StreamingResponse(stream, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    calls: list[list[dict[str, Any]]] = [[] for _ in range(params.n)]

    async def collect() -> tuple[list[str], list[str | None], list[list[TokenLogprob]], Usage, str, str | None]:
        texts, reasons = [""] * params.n, [None] * params.n
        logprobs: list[list[TokenLogprob]] = [[] for _ in range(params.n)]
        usage, prompt, model_version = Usage(), None, version
        ev: StreamEvent | None = first
        while ev is not None:
            texts[ev.index] += ev.text
            logprobs[ev.index] += ev.logprobs or []
            calls[ev.index] += ev.tool_calls or []
            reasons[ev.index] = ev.finish_reason or reasons[ev.index]
            if ev.usage is not None:
                usage, prompt, model_version = ev.usage, ev.rendered_prompt, ev.model_version or version
            ev = await anext(events, None)
        return texts, reasons, logprobs, usage, model_version, prompt

    try:
        texts, reasons, logprobs, usage, model_version, prompt = await until_disconnect(
            request, collect(), svc.settings.server.request_timeout_s)
    finally:
        await events.aclose()
    stored = [t + (json.dumps({"tool_calls": c}, ensure_ascii=False) if c else "") for t, c in zip(texts, calls)]
    await asyncio.to_thread(_store, svc, user, completion_id=completion_id, body=body, texts=stored,
                            reasons=reasons, usage=usage, version=model_version, prompt=prompt,
                            params=stored_params, started=started)
    choices = [{"index": i, "message": _message(texts[i], calls[i]), "finish_reason": reasons[i],
                "logprobs": _logprobs_json(logprobs[i])} for i in range(params.n)]
    return {"id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": body.model,
            "model_version": model_version, "system_fingerprint": model_version, "choices": choices,
            "usage": usage.as_dict()}


def _message(text: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
    if calls:
        return {"role": "assistant", "content": text or None, "tool_calls": calls}
    return {"role": "assistant", "content": text}


def _sse_data(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _sse(svc: Services, principal: Principal, body: ChatCompletionRequest, completion_id: str,
               first: StreamEvent, events: AsyncIterator[StreamEvent], n: int, include_usage: bool,
               stored_params: dict[str, Any], started: float) -> AsyncIterator[str]:
    created = int(time.time())
    base = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": body.model}
    texts, reasons = [""] * n, [None] * n
    usage, version, prompt = Usage(), None, None
    try:
        for i in range(n):
            yield _sse_data({**base, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                                  "logprobs": None, "finish_reason": None}]})
        ev: StreamEvent | None = first
        while ev is not None:
            if ev.usage is not None:
                usage, version, prompt = ev.usage, ev.model_version, ev.rendered_prompt
            if ev.text or ev.finish_reason or ev.logprobs or ev.tool_calls:
                texts[ev.index] += ev.text
                reasons[ev.index] = ev.finish_reason or reasons[ev.index]
                delta: dict[str, Any] = {"content": ev.text} if ev.text else {}
                if ev.tool_calls:
                    delta["tool_calls"] = [{"index": k, **call} for k, call in enumerate(ev.tool_calls)]
                    texts[ev.index] += json.dumps({"tool_calls": ev.tool_calls}, ensure_ascii=False)
                yield _sse_data({**base, "choices": [{"index": ev.index, "delta": delta,
                                                      "logprobs": _logprobs_json(ev.logprobs),
                                                      "finish_reason": ev.finish_reason}]})
            ev = await anext(events, None)
        if include_usage:
            yield _sse_data({**base, "choices": [], "usage": usage.as_dict(), "model_version": version})
        yield "data: [DONE]\n\n"
    except AgentstackError as exc:  # after the headers went out, errors travel in the stream
        status, kind = status_for(exc)
        yield _sse_data({"error": {"message": str(exc), "type": kind, "param": exc.param, "code": exc.code,
                                   "status": status}})
        yield "data: [DONE]\n\n"
        return
    finally:
        await events.aclose()
    await asyncio.to_thread(_store, svc, principal, completion_id=completion_id, body=body, texts=texts,
                            reasons=reasons, usage=usage, version=version or body.model, prompt=prompt,
                            params=stored_params, started=started)


# -- tokenize / embeddings --------------------------------------------------------------------------
@router.post("/tokenize", summary="Count a chat prompt's tokens (vLLM-compatible)")
async def tokenize(body: TokenizeRequest, user: AppUser, svc: Svc) -> dict[str, Any]:
    version = svc.resolve_model(body.model, user)
    if (body.messages is None) == (body.prompt is None):
        raise InvalidRequestError("send exactly one of messages or prompt", param="messages")
    if body.prompt is not None:
        count = await svc.engine.count_text_tokens(body.prompt, version)
    else:
        messages = [m.model_dump(exclude_none=True) for m in body.messages or []]
        count = await svc.engine.count_tokens(messages, version)
    return {"count": count, "max_model_len": svc.engine.context_length(version)}


@router.post("/v1/embeddings", summary="Embed text with the sentence-transformers embedder")
async def embeddings(body: EmbeddingRequest, user: AppUser, svc: Svc) -> dict[str, Any]:
    embedder = await asyncio.to_thread(svc.embedder)
    names = {embedder.id, embedder.id.split("/")[-1], "default"}
    if body.model not in names:
        raise ModelNotFoundError(f"embedding model {body.model!r} is not served; available: {embedder.id}",
                                 param="model")
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    if not texts or any(not isinstance(t, str) or not t for t in texts):
        raise InvalidRequestError("input must be a non-empty string or a list of non-empty strings", param="input")
    if len(texts) > 2048:
        raise InvalidRequestError(f"input has {len(texts)} texts; at most 2048 per request", param="input")
    if body.dimensions is not None and body.dimensions != embedder.dim:
        raise InvalidRequestError(f"dimensions must be {embedder.dim} for {embedder.id}", param="dimensions")
    vectors = await asyncio.to_thread(embedder.encode, texts)
    if body.encoding_format == "base64":
        import base64

        data = [{"object": "embedding", "index": i, "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode()}
                for i, v in enumerate(vectors)]
    else:
        data = [{"object": "embedding", "index": i, "embedding": [float(x) for x in v]} for i, v in enumerate(vectors)]
    tokens = sum(len(t.split()) for t in texts)
    count = getattr(embedder, "count_tokens", None)
    if callable(count):
        tokens = sum(count(t) for t in texts)
    return {"object": "list", "data": data, "model": embedder.id,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


# -- LoRA hot-loading (vLLM's API) ------------------------------------------------------------------
@router.post("/v1/load_lora_adapter", response_class=PlainTextResponse, summary="Load a LoRA adapter (operator)")
async def load_lora_adapter(body: LoraLoadRequest, op: Operator, svc: Svc) -> PlainTextResponse:
    from pathlib import Path

    # vLLM's rules: not the base model's name; a loaded name only again in place
    if body.lora_name in (svc.router.base, svc.router.alias):
        raise InvalidRequestError(f"The lora adapter '{body.lora_name}' conflicts with a served base model.",
                                  param="lora_name")
    loaded = next((m for m in svc.engine.models() if m.id == body.lora_name), None)
    if loaded is not None and not body.load_inplace:
        raise InvalidRequestError(f"The lora adapter '{body.lora_name}' has already been loaded. If you want to load "
                                  "the adapter in place, set 'load_inplace' to True.", param="lora_name")
    try:
        if loaded is None or svc.engine.kind == "openai":  # the openai engine always loads in place
            await svc.engine.load_adapter(body.lora_name, Path(body.lora_path))
        else:  # in place: the weights are read again (from the same path too: retrained files)
            await _reload_in_place(svc.engine, body.lora_name, Path(body.lora_path), loaded.path)
    except AgentstackError as exc:
        await asyncio.to_thread(svc.audit.record, key_id=op.key_id, action="lora.load", target=body.lora_name,
                                detail={"path": body.lora_path, "error": exc.code}, outcome="error")
        raise
    await asyncio.to_thread(svc.audit.record, key_id=op.key_id, action="lora.load", target=body.lora_name,
                            detail={"path": body.lora_path})
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' added successfully.")


async def _reload_in_place(engine: Any, name: str, path: Any, old_path: str | None) -> None:
    """Unload ``name`` and load it from ``path``; when that load fails, the old weights are loaded
    back, so a bad path never leaves the name (perhaps the active version) unserved."""
    from agentstack.engines.local import require_adapter_dir

    require_adapter_dir(path)
    await engine.unload_adapter(name)
    try:
        await engine.load_adapter(name, path)
    except AgentstackError:
        if old_path:
            from pathlib import Path

            try:
                await engine.load_adapter(name, Path(old_path))
            except AgentstackError:
                log.exception("adapter %s: the old weights from %s did not load back", name, old_path)
        raise


@router.post("/v1/unload_lora_adapter", response_class=PlainTextResponse,
             summary="Unload a LoRA adapter (operator)")
async def unload_lora_adapter(body: LoraUnloadRequest, op: Operator, svc: Svc) -> PlainTextResponse:
    try:
        if body.lora_name == svc.router.active:
            raise InvalidRequestError(f"{body.lora_name!r} is the active version; promote another one first",
                                      param="lora_name")
        await svc.engine.unload_adapter(body.lora_name)
    except AgentstackError as exc:  # refused or failed operator actions are audited too
        await asyncio.to_thread(svc.audit.record, key_id=op.key_id, action="lora.unload", target=body.lora_name,
                                detail={"error": exc.code}, outcome="error")
        raise
    deployer = svc.alignment.deployer
    if body.lora_name in deployer.selectable():  # a later adapter of the same name must be marked anew
        await asyncio.to_thread(deployer.set_selectable, body.lora_name, False)
    await asyncio.to_thread(svc.audit.record, key_id=op.key_id, action="lora.unload", target=body.lora_name)
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")

