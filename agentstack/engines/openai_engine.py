"""The ``openai`` chat engine: any OpenAI-compatible server, vLLM first of all.

Chat and streaming go through the official ``openai`` client (timeouts, bounded retries with
backoff). vLLM's extra sampling parameters (``top_k``, ``min_p``, ``repetition_penalty``,
``min_tokens``, ``ignore_eos``, ``stop_token_ids``) and structured outputs travel in
``extra_body``, as vLLM documents. Token counting and LoRA hot-loading use vLLM's ``/tokenize``,
``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter``, which agentstack's own server also
speaks, so this engine is tested against a real agentstack server on loopback.

Every transport failure becomes :class:`EngineUnavailableError` naming the URL and how to fix it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from agentstack.config import EngineSettings
from agentstack.engines.base import (Capabilities, ChatRequest, ChatResult, ModelInfo, StreamEvent, TokenLogprob,
                                     Usage, collect)
from agentstack.engines.params import SamplingParams, StructuredOutput, check_limits
from agentstack.errors import (AgentstackError, ContextLengthError, EngineUnavailableError, InvalidRequestError,
                               ModelNotFoundError, OverloadedError)

log = logging.getLogger(__name__)


def sampling_kwargs(params: SamplingParams) -> tuple[dict[str, Any], dict[str, Any]]:
    """(standard OpenAI arguments, vLLM extras for ``extra_body``)."""
    std: dict[str, Any] = {"temperature": params.temperature, "top_p": params.top_p, "n": params.n}
    if params.max_tokens is not None:
        std["max_tokens"] = params.max_tokens
    if params.stop:
        std["stop"] = list(params.stop)
    if params.seed is not None:
        std["seed"] = params.seed
    if params.presence_penalty:
        std["presence_penalty"] = params.presence_penalty
    if params.frequency_penalty:
        std["frequency_penalty"] = params.frequency_penalty
    if params.logit_bias:
        std["logit_bias"] = {str(k): v for k, v in params.logit_bias.items()}
    if params.logprobs:
        std["logprobs"] = True
        if params.top_logprobs:
            std["top_logprobs"] = params.top_logprobs
    extra: dict[str, Any] = {}
    defaults = SamplingParams()
    for name in ("top_k", "min_p", "repetition_penalty", "min_tokens", "ignore_eos"):
        value = getattr(params, name)
        if value != getattr(defaults, name):
            extra[name] = value
    if params.stop_token_ids:
        extra["stop_token_ids"] = list(params.stop_token_ids)
    return std, extra


def structured_kwargs(structured: StructuredOutput | None) -> tuple[dict[str, Any], dict[str, Any]]:
    if structured is None:
        return {}, {}
    if structured.kind == "json_schema":
        schema = structured.value
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": "output", "schema": schema, "strict": True}}}, {}
    if structured.kind == "json_object":
        return {"response_format": {"type": "json_object"}}, {}
    key = {"regex": "regex", "choice": "choice", "grammar": "grammar"}[structured.kind]
    return {}, {"structured_outputs": {key: structured.value}}


class OpenAIEngine:
    kind = "openai"
    capabilities = Capabilities(streaming=True, structured_output=True, tools=True, lora=True, logprobs=True)

    def __init__(self, settings: EngineSettings):
        self.settings = settings
        self.base_url = settings.base_url.rstrip("/")
        self.root_url = self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url
        # async clients are bound to the event loop that created them; scripts may run several loops
        self._clients: dict[int, tuple[Any, httpx.AsyncClient]] = {}
        self._models: list[ModelInfo] = []
        self._models_at = 0.0

    # -- lifecycle --------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        key = self.settings.api_key.get_secret_value() if self.settings.api_key else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _loop_clients(self) -> tuple[Any, httpx.AsyncClient]:
        import asyncio

        from openai import AsyncOpenAI

        loop = asyncio.get_running_loop()
        found = self._clients.get(id(loop))
        if found is None or found[1].is_closed:
            for key in [k for k, (_, http) in self._clients.items() if http.is_closed]:
                del self._clients[key]
            secret = self.settings.api_key.get_secret_value() if self.settings.api_key else "EMPTY"
            http = httpx.AsyncClient(timeout=self.settings.timeout_s)
            client = AsyncOpenAI(base_url=self.base_url, api_key=secret, timeout=self.settings.timeout_s,
                                 max_retries=self.settings.max_retries, http_client=http)
            found = self._clients[id(loop)] = (client, http)
        return found

    def _http_client(self) -> httpx.AsyncClient:
        return self._loop_clients()[1]

    def warm_up(self) -> None:
        try:
            with httpx.Client(timeout=min(10.0, self.settings.timeout_s)) as client:
                response = client.get(f"{self.base_url}/models", headers=self._headers())
                response.raise_for_status()
                self._set_models(response.json())
        except httpx.HTTPError as exc:
            log.warning("model server at %s not reachable yet (%s); will retry on first request",
                        self.base_url, type(exc).__name__)

    async def aclose(self) -> None:
        import asyncio

        found = self._clients.pop(id(asyncio.get_running_loop()), None)
        if found is not None:
            await found[0].close()

    def _unavailable(self, exc: Exception) -> EngineUnavailableError:
        return EngineUnavailableError(f"cannot reach the model server at {self.base_url} ({type(exc).__name__})",
                                      fix="start the server (e.g. `docker compose up vllm`) or correct "
                                          "AGENTSTACK_ENGINE__BASE_URL")

    # -- models -----------------------------------------------------------------------------------
    def _set_models(self, payload: dict[str, Any]) -> None:
        self._models = [ModelInfo(id=m["id"], parent=m.get("parent"), context_length=m.get("max_model_len"),
                                  created=int(m.get("created") or time.time()), path=m.get("root"))
                        for m in payload.get("data", [])]
        self._models_at = time.monotonic()

    async def refresh_models(self) -> list[ModelInfo]:
        try:
            response = await self._http_client().get(f"{self.base_url}/models", headers=self._headers())
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc
        self._raise_for(response)
        self._set_models(response.json())
        return self._models

    def models(self) -> list[ModelInfo]:
        return list(self._models)

    def context_length(self, model: str) -> int:
        found = next((m for m in self._models if m.id == model), None)
        if found is None:
            raise ModelNotFoundError(f"model {model!r} is not served at {self.base_url}; available: "
                                     f"{', '.join(m.id for m in self._models) or '(none seen yet)'}", param="model")
        return self.settings.context_length or found.context_length or 2048

    async def _tokenize(self, payload: dict[str, Any]) -> int:
        try:
            response = await self._http_client().post(f"{self.root_url}/tokenize", headers=self._headers(),
                                                      json=payload)
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc
        self._raise_for(response)
        return int(response.json()["count"])

    async def count_tokens(self, messages: list[dict[str, Any]], model: str) -> int:
        return await self._tokenize({"model": model, "messages": messages})

    async def count_text_tokens(self, text: str, model: str) -> int:
        return await self._tokenize({"model": model, "prompt": text, "add_special_tokens": False})

    # -- generation -------------------------------------------------------------------------------
    async def chat(self, request: ChatRequest) -> ChatResult:
        return await collect(self.stream(request), request.params.n)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        import openai

        client = self._loop_clients()[0]
        check_limits(request.params, max_tokens_limit=self.settings.max_tokens_limit, max_n=self.settings.max_n)
        std, extra = sampling_kwargs(request.params)
        s_std, s_extra = structured_kwargs(request.structured)
        std.update(s_std)
        extra.update(s_extra)
        if request.tools:
            std["tools"] = request.tools
            if request.tool_choice is not None:
                std["tool_choice"] = request.tool_choice
            if request.parallel_tool_calls is not None:
                std["parallel_tool_calls"] = request.parallel_tool_calls
        try:
            stream = await client.chat.completions.create(
                model=request.model, messages=request.messages, stream=True,
                stream_options={"include_usage": True}, extra_body=extra or None, **std)
        except openai.APIConnectionError as exc:
            raise self._unavailable(exc) from exc
        except openai.APIStatusError as exc:
            raise self._status_error(exc) from exc
        usage, version = Usage(), request.model
        try:
            async for chunk in stream:
                version = chunk.model or version
                if chunk.usage is not None:
                    usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                for choice in chunk.choices:
                    text = (choice.delta.content or "") if choice.delta else ""
                    logprobs = None
                    if choice.logprobs is not None and choice.logprobs.content:
                        logprobs = [TokenLogprob(t.token, t.logprob, [(x.token, x.logprob) for x in t.top_logprobs
                                                                       or []]) for t in choice.logprobs.content]
                    if text or choice.finish_reason or logprobs:
                        yield StreamEvent(index=choice.index, text=text, finish_reason=choice.finish_reason,
                                          logprobs=logprobs)
        except openai.APIConnectionError as exc:
            raise self._unavailable(exc) from exc
        finally:
            await stream.close()
        yield StreamEvent(usage=usage, model_version=version)

    def _status_error(self, exc: Any) -> AgentstackError:
        body = exc.body if isinstance(exc.body, dict) else {}
        err = body.get("error", body) if isinstance(body, dict) else {}
        message = (err.get("message") if isinstance(err, dict) else None) or str(exc)
        code = err.get("code") if isinstance(err, dict) else None
        param = err.get("param") if isinstance(err, dict) else None
        status = exc.status_code
        if status == 404:
            return ModelNotFoundError(message, param=param or "model")
        if status == 429:
            retry = float(exc.response.headers.get("retry-after", "1") or 1)
            return OverloadedError(message, retry_after=retry)
        if status in (400, 413, 422):
            cls = ContextLengthError if code == "context_length_exceeded" else InvalidRequestError
            return cls(message, param=param)
        if status in (401, 403):
            return EngineUnavailableError(f"the model server at {self.base_url} refused our key: {message}",
                                          fix="set AGENTSTACK_ENGINE__API_KEY to a key it accepts")
        return EngineUnavailableError(f"the model server at {self.base_url} failed ({status}): {message}")

    def _raise_for(self, response: httpx.Response) -> None:
        if response.is_success:
            return
        import openai

        raise self._status_error(openai.APIStatusError(response.text, response=response,
                                                       body=_json_or_none(response)))

    # -- adapters ---------------------------------------------------------------------------------
    async def _post(self, path: str, payload: dict[str, Any]) -> None:
        """POST to every replica (or the one server): an adapter must be loaded on each of them
        before the alias may point at it."""
        urls = [u.rstrip("/") for u in self.settings.replica_urls] or [self.base_url]
        for url in urls:
            try:
                response = await self._http_client().post(f"{url}/{path}", json=payload, headers=self._headers())
            except httpx.HTTPError as exc:
                raise EngineUnavailableError(f"cannot reach the model server at {url} ({type(exc).__name__})",
                                             fix="check AGENTSTACK_ENGINE__REPLICA_URLS") from exc
            self._raise_for(response)
        await self.refresh_models()

    async def load_adapter(self, name: str, path: Path) -> None:
        await self._post("load_lora_adapter", {"lora_name": name, "lora_path": str(path)})

    async def unload_adapter(self, name: str) -> None:
        await self._post("unload_lora_adapter", {"lora_name": name})

    def stats(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "models": [m.id for m in self._models]}


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
