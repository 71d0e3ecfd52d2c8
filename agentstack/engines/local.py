"""What the two in-process engines (``llamacpp`` and ``embedded``) share: versions by name, the
tokenizer (chat template, token counting), the checks every request passes before anything runs
(limits, model, tools, context window), and the checks before an adapter loads.

An engine using :class:`LocalEngine` fills ``tokenizer``, ``base_name``, ``_ctx`` and ``_versions``
(name -> an object with ``name``, ``parent``, ``path``, ``loaded_at``) when it warms up, and defines
``_require_ready``. This module knows nothing about how tokens are computed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentstack.engines import toolcalls
from agentstack.engines.base import ChatRequest, ChatResult, ModelInfo, collect
from agentstack.engines.messages import normalize_messages
from agentstack.engines.params import StructuredOutput, check_limits, resolve_max_tokens
from agentstack.errors import AgentstackError, ConflictError, InvalidRequestError, ModelNotFoundError, NotFoundError


class GenerationError(AgentstackError):
    code = "generation_failed"


@dataclass
class Prepared:
    """A request that passed every check: what to run, on which version."""

    version: Any
    prompt: str
    ids: list[int]
    max_new: int
    structured: StructuredOutput | None
    tool_mode: bool


class LocalEngine:
    def __init__(self, settings: Any, model_cache: Path, metrics: Any = None):
        self.settings = settings
        self.model_cache = Path(model_cache)
        self.metrics = metrics
        self.tokenizer: Any = None
        self.base_name = ""
        self._versions: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._ctx = 0
        self.load_seconds: float | None = None

    def _require_ready(self) -> None:
        raise NotImplementedError

    # -- models -----------------------------------------------------------------------------------
    def models(self) -> list[ModelInfo]:
        with self._lock:
            versions = list(self._versions.values())
        return [ModelInfo(id=v.name, parent=v.parent, context_length=self._ctx, created=int(v.loaded_at),
                          path=v.path) for v in versions]

    def context_length(self, model: str) -> int:
        self._get(model)
        return self._ctx

    def _get(self, model: str) -> Any:
        with self._lock:
            found = self._versions.get(model)
            names = sorted(self._versions)
        if found is None:
            raise ModelNotFoundError(f"model {model!r} is not loaded; available: {', '.join(names)}",
                                     param="model", fix="use one of the listed model names")
        return found

    # -- tokens -----------------------------------------------------------------------------------
    def render(self, messages: list[dict[str, Any]]) -> tuple[str, list[int]]:
        self._require_ready()
        text = self.tokenizer.apply_chat_template(normalize_messages(messages), tokenize=False,
                                                  add_generation_prompt=True)
        return text, list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    async def count_tokens(self, messages: list[dict[str, Any]], model: str) -> int:
        self._get(model)
        return len(self.render(messages)[1])

    async def count_text_tokens(self, text: str, model: str) -> int:
        self._require_ready()
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def truncate_text(self, text: str, max_tokens: int) -> str:
        """The longest prefix of ``text`` within ``max_tokens`` tokens, cut at a token boundary."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= max_tokens:
            return text
        return self.tokenizer.decode(ids[:max_tokens], skip_special_tokens=True)

    # -- requests ---------------------------------------------------------------------------------
    async def chat(self, request: ChatRequest) -> ChatResult:
        return await collect(self.stream(request), request.params.n)  # type: ignore[attr-defined]

    def _prepare(self, request: ChatRequest) -> Prepared:
        """Every check a request passes before the first event (each raises a 4xx error)."""
        self._require_ready()
        params, s = request.params, self.settings
        check_limits(params, max_tokens_limit=s.max_tokens_limit, max_n=s.max_n)
        version = self._get(request.model)
        messages, structured, tool_mode = request.messages, request.structured, False
        if request.tools or request.tool_choice not in (None, "auto", "none"):
            if structured is not None:
                raise InvalidRequestError("response_format/structured outputs cannot be combined with tools",
                                          param="response_format")
            messages, structured, tool_mode = toolcalls.prepare(messages, request.tools, request.tool_choice,
                                                                request.parallel_tool_calls is not False)
        prompt, ids = self.render(messages)
        max_new = resolve_max_tokens(params, prompt_tokens=len(ids), context_length=self._ctx,
                                     default_max_tokens=s.default_max_tokens)
        return Prepared(version, prompt, ids, max_new, structured, tool_mode)

    # -- adapters ---------------------------------------------------------------------------------
    def _check_new_adapter(self, name: str, path: Path) -> Path:
        self._require_ready()
        with self._lock:
            if name in self._versions:
                raise ConflictError(f"a model named {name!r} is already loaded", param="lora_name",
                                    fix="unload it first, or pick another name")
        return require_adapter_dir(path)

    def _forget_adapter(self, name: str, base_name: str) -> None:
        with self._lock:
            if name == base_name:
                raise InvalidRequestError("the base model cannot be unloaded", param="lora_name")
            if name not in self._versions:
                raise ModelNotFoundError(f"no adapter named {name!r} is loaded", param="lora_name")
            del self._versions[name]  # running requests keep their own reference


def require_adapter_dir(path: Path) -> Path:
    """``path`` as a Path when it holds a PEFT adapter (``adapter_config.json``), else a 404 saying so."""
    path = Path(path)
    if not (path / "adapter_config.json").is_file():
        raise NotFoundError(f"no LoRA adapter at {path} (adapter_config.json missing)", param="lora_path",
                            fix="give the directory written by the trainer or by peft's save_pretrained")
    return path
