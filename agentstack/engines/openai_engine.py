"""The ``openai`` chat engine: any OpenAI-compatible server, vLLM first of all.

Chat and streaming go through the official ``openai`` client (timeouts, bounded retries with
backoff). vLLM's extra sampling parameters (``top_k``, ``min_p``, ``repetition_penalty``,
``min_tokens``, ``ignore_eos``, ``stop_token_ids``) and structured outputs (``structured_outputs``:
regex, choice, Lark grammar) travel in ``extra_body``, as vLLM documents; JSON goes through
OpenAI's ``response_format``. Every payload is checked against
vLLM's own request models by the ``vllm`` test tier. Token counting and LoRA hot-loading use vLLM's
``/tokenize``, ``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter``, which agentstack's own
server also speaks. The engine is tested against real vLLM and against a real agentstack server.

Tool calls (``engine.tool_calls``): ``grammar`` (default, chosen by measurement, see
docs/benchmarks.md) describes the tools in the prompt and constrains the answer with agentstack's
Lark grammar, exactly as the embedded engine does, then parses the calls; ``server`` passes
``tools``/``tool_choice`` on and folds the server's streamed ``delta.tool_calls``.

Adapters are loaded on every replica or none and reloaded after a replica restarts
(:mod:`.remote_adapters`). A LoRA's context length is its parent's. Every transport failure
becomes :class:`EngineUnavailableError` naming the URL and how to fix it; vLLM's context-length
400 becomes :class:`ContextLengthError` naming both lengths.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from agentstack.config import EngineSettings
from agentstack.engines.base import (Capabilities, ChatRequest, ChatResult, ModelInfo, StreamEvent, TokenLogprob,
                                     Usage, collect)
from agentstack.engines import toolcalls
from agentstack.engines.adapter_limits import check_adapter_dir
from agentstack.engines.messages import normalize_messages
from agentstack.engines.params import SamplingParams, StructuredOutput, check_limits
from agentstack.engines.remote_adapters import RemoteAdapters
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
    """(standard arguments, vLLM extras) for a constraint: JSON through OpenAI's ``response_format``,
    regex, choice and Lark grammars through vLLM's ``structured_outputs``. vLLM's JSON whitespace is
    flexible (its per-request ``disable_any_whitespace`` has no effect in 0.32), the embedded
    engine's is compact."""
    if structured is None:
        return {}, {}
    if structured.kind == "json_schema":
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": "output", "schema": structured.value, "strict": True}}}, {}
    if structured.kind == "json_object":
        return {"response_format": {"type": "json_object"}}, {}
    key = {"regex": "regex", "choice": "choice", "grammar": "grammar"}[structured.kind]
    return {}, {"structured_outputs": {key: structured.value}}


CONTEXT = re.compile(r"maximum context length is (\d+) tokens")
PROMPT = re.compile(r"(?:contains at least|contains|requested) (\d+) (?:input )?tokens")


def context_error(message: str, param: str | None) -> ContextLengthError:
    """vLLM's context-length 400 (an integer ``code``, the text "maximum context length") in our terms."""
    limit, prompt = CONTEXT.search(message), PROMPT.search(message)
    if limit and prompt:
        ours = (f"the prompt has {'at least ' if 'at least' in message else ''}{prompt.group(1)} tokens but the "
                f"model's context window is {limit.group(1)} tokens")
    else:
        ours = f"the request does not fit the model's context window: {message}"
    return ContextLengthError(ours, param="messages" if param in (None, "input_tokens") else param,
                              fix="shorten the conversation or the retrieved context, or lower max_tokens")


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
        self.adapters = RemoteAdapters(self.replica_urls, self._headers, settings.adapter_check_s,
                                       on_change=self._models_changed)

    # -- lifecycle --------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        key = self.settings.api_key.get_secret_value() if self.settings.api_key else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    def replica_urls(self) -> list[str]:
        """Every server an adapter must be loaded on: the listed replicas, else the one server."""
        return [u.rstrip("/") for u in self.settings.replica_urls] or [self.base_url]

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
            return
        # adapters the server kept while agentstack restarted: keep them on every replica too
        self.adapters.adopt({m.id: m.path for m in self._models if m.parent and m.path and Path(m.path).is_absolute()})

    async def aclose(self) -> None:
        import asyncio

        self.adapters.close()
        found = self._clients.pop(id(asyncio.get_running_loop()), None)
        if found is not None:
            await found[0].close()

    def _unavailable(self, exc: Exception) -> EngineUnavailableError:
        return EngineUnavailableError(f"cannot reach the model server at {self.base_url} ({type(exc).__name__})",
                                      fix="start the server (e.g. `docker compose up vllm`) or correct "
                                          "AGENTSTACK_ENGINE__BASE_URL")

    # -- models -----------------------------------------------------------------------------------
    def _set_models(self, payload: dict[str, Any]) -> None:
        cards = payload.get("data", [])
        # vLLM's card for a LoRA has no max_model_len: an adapter's context is its parent's
        lengths = {m["id"]: m.get("max_model_len") for m in cards}
        self._models = [ModelInfo(id=m["id"], parent=m.get("parent"),
                                  context_length=m.get("max_model_len") or lengths.get(m.get("parent")),
                                  created=int(m.get("created") or time.time()), path=m.get("root"))
                        for m in cards]
        self._models_at = time.monotonic()

    def _models_changed(self) -> None:
        try:
            with httpx.Client(timeout=10.0) as client:
                response = client.get(f"{self.base_url}/models", headers=self._headers())
                if response.is_success:
                    self._set_models(response.json())
        except httpx.HTTPError:
            pass

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

    def _messages(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Grammar mode renders tool turns as text, exactly as the embedded engine does, so the
        served model sees one format (and prompts count the same) on every backend."""
        return normalize_messages(messages) if self.settings.tool_calls == "grammar" else messages

    async def count_tokens(self, messages: list[dict[str, Any]], model: str) -> int:
        return await self._tokenize({"model": model, "messages": self._messages(messages)})

    async def count_text_tokens(self, text: str, model: str) -> int:
        return await self._tokenize({"model": model, "prompt": text, "add_special_tokens": False})

    # -- generation -------------------------------------------------------------------------------
    async def chat(self, request: ChatRequest) -> ChatResult:
        return await collect(self.stream(request), request.params.n)

    def _payload(self, request: ChatRequest) -> tuple[dict[str, Any], dict[str, Any], bool]:
        """(OpenAI arguments, vLLM extras, whether the answer is parsed for grammar-mode tool calls)."""
        check_limits(request.params, max_tokens_limit=self.settings.max_tokens_limit, max_n=self.settings.max_n)
        std, extra = sampling_kwargs(request.params)
        messages, structured, parse_calls = self._messages(request.messages), request.structured, False
        wants_tools = bool(request.tools) or request.tool_choice not in (None, "auto", "none")
        if wants_tools and self.settings.tool_calls == "grammar":
            if structured is not None:
                raise InvalidRequestError("response_format/structured outputs cannot be combined with tools",
                                          param="response_format")
            messages, structured, parse_calls = toolcalls.prepare(messages, request.tools, request.tool_choice,
                                                                  request.parallel_tool_calls is not False)
        elif request.tools:
            std["tools"] = request.tools
            if request.tool_choice is not None:
                std["tool_choice"] = request.tool_choice
            if request.parallel_tool_calls is not None:
                std["parallel_tool_calls"] = request.parallel_tool_calls
        s_std, s_extra = structured_kwargs(structured)
        std.update(s_std)
        extra.update(s_extra)
        std["messages"] = messages
        return std, extra, parse_calls

    async def _open(self, request: ChatRequest, std: dict[str, Any], extra: dict[str, Any]) -> Any:
        import openai

        client = self._loop_clients()[0]
        for attempt in (1, 2):
            try:
                return await client.chat.completions.create(
                    model=request.model, stream=True, stream_options={"include_usage": True},
                    extra_body=extra or None, **std)
            except openai.APIConnectionError as exc:
                raise self._unavailable(exc) from exc
            except openai.APIStatusError as exc:
                error = self._status_error(exc)
                # a replica that restarted lost the adapter: put it back and try once more
                if attempt == 1 and isinstance(error, ModelNotFoundError) and request.model in self.adapters.loaded:
                    import asyncio

                    if await asyncio.to_thread(self.adapters.reconcile):
                        continue
                raise error from exc
        raise AssertionError("unreachable")

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        import openai

        std, extra, parse_calls = self._payload(request)
        stream = await self._open(request, std, extra)
        n = request.params.n
        collectors = [toolcalls.CallCollector() if parse_calls else None for _ in range(n)]
        deltas = [toolcalls.DeltaCalls() for _ in range(n)]
        usage, version = Usage(), request.model
        try:
            async for chunk in stream:
                version = chunk.model or version
                if chunk.usage is not None:
                    usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                for choice in chunk.choices:
                    i = choice.index
                    text = (choice.delta.content or "") if choice.delta else ""
                    if choice.delta is not None and choice.delta.tool_calls:
                        deltas[i].feed(choice.delta.tool_calls)
                    logprobs = None
                    if choice.logprobs is not None and choice.logprobs.content:
                        logprobs = [TokenLogprob(t.token, t.logprob, [(x.token, x.logprob) for x in t.top_logprobs
                                                                       or []]) for t in choice.logprobs.content]
                    finish, calls = choice.finish_reason, None
                    if collectors[i] is not None:
                        text, found = collectors[i].feed(text, done=finish is not None)
                        calls = found or None
                    elif finish is not None:
                        calls = deltas[i].calls() or None
                    if calls and finish is not None:
                        finish = "tool_calls"  # vLLM answers "stop" for a named tool_choice
                    if text or finish or logprobs:
                        yield StreamEvent(index=i, text=text, finish_reason=finish, logprobs=logprobs,
                                          tool_calls=calls)
        except openai.APIConnectionError as exc:
            raise self._unavailable(exc) from exc
        except openai.APIError as exc:  # an error event inside the stream (vLLM: a grammar that does not compile)
            raise self._stream_error(exc) from exc
        finally:
            await stream.close()
        yield StreamEvent(usage=usage, model_version=version)

    def _stream_error(self, exc: Any) -> AgentstackError:
        body = exc.body if isinstance(exc.body, dict) else {}
        code, kind = body.get("code"), str(body.get("type") or "")
        if code in (400, "400", "invalid_request_error") or "BadRequest" in kind or "grammar" in exc.message.lower():
            return InvalidRequestError(f"the model server refused the request: {exc.message}",
                                       param=body.get("param") or "structured_outputs")
        return EngineUnavailableError(f"the model server at {self.base_url} failed mid-stream: {exc.message}")

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
            if code == "context_length_exceeded":
                return ContextLengthError(message, param=param)
            if "maximum context length" in message:
                return context_error(message, param)
            return InvalidRequestError(message, param=param)
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
    async def load_adapter(self, name: str, path: Path) -> None:
        """Idempotent (``load_inplace``), on every replica or none; refused adapters get a 4xx."""
        check_adapter_dir(Path(path), max_rank=self.settings.max_lora_rank, vllm=True)
        await self.adapters.load(self._http_client(), name, str(path))
        await self.refresh_models()

    async def unload_adapter(self, name: str) -> None:
        await self.adapters.unload(self._http_client(), name)
        await self.refresh_models()

    def stats(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "models": [m.id for m in self._models], **self.adapters.stats()}


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
