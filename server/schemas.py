"""Request and response bodies of the OpenAI-compatible API.

``ChatCompletionRequest`` accepts the fields OpenAI's API and LangChain's ``ChatOpenAI`` send, plus
vLLM's named extras, so one client drives both servers. Unknown fields are refused with 422 naming
the field (``extra="forbid"``). Fields accepted for compatibility that do not change what
agentstack does (``store``, ``metadata``, ``service_tier``, ``prompt_cache_key``,
``safety_identifier``, ``priority``) are documented as such; fields that would change the output
and that agentstack does not implement are refused with 400 rather than silently ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentstack.engines.messages import ROLES
from agentstack.engines.params import SamplingParams, StructuredOutput
from agentstack.errors import InvalidRequestError
from agentstack.orchestrators.events import GroundingOptions
from agentstack.strict import StrictModel


class StreamOptions(StrictModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False
    continuous_usage_stats: bool = False


class ChatMessageIn(BaseModel):
    # Messages are permissive (clients add fields such as ``refusal`` or ``annotations``);
    # normalize_messages() validates role and content.
    model_config = ConfigDict(extra="allow")
    role: str = Field(json_schema_extra={"enum": list(ROLES)})
    content: str | list[Any] | None = Field(default=None, json_schema_extra={"anyOf": [
        {"type": "string"}, {"type": "null"},
        {"type": "array", "items": {"anyOf": [{"type": "string"}, {
            "type": "object", "required": ["type", "text"],
            "properties": {"type": {"const": "text"}, "text": {"type": "string"}}}]}}]})
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class GroundingSwitch(StrictModel):
    """The groundedness verifier's per-request switches; unset fields take ``orchestration.grounding``."""

    enabled: bool | None = Field(default=None, description="false: answer without the verifier.")
    unsupported: Literal["remove", "mark"] | None = Field(default=None, description="Remove unsupported "
                                                          "sentences, or keep and mark them.")
    fallback: Literal["abstain", "extract"] | None = Field(default=None, description="rag, when no supported "
                                                           "sentence answers: abstain, or quote the sources.")

    def options(self) -> GroundingOptions:
        return GroundingOptions(**self.model_dump())


class ChatCompletionRequest(StrictModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessageIn] = Field(min_length=1)
    # OpenAI sampling
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = Field(default=None, max_length=256)
    # accepted for compatibility; no effect (every completion is stored anyway)
    store: bool | None = None
    metadata: dict[str, Any] | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    # vLLM extras
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    min_tokens: int | None = None
    ignore_eos: bool | None = None
    stop_token_ids: list[int] | None = None
    skip_special_tokens: bool | None = None
    include_stop_str_in_output: bool | None = None
    structured_outputs: dict[str, Any] | None = None
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None
    request_id: str | None = Field(default=None, max_length=128)
    priority: int | None = None
    # agentstack extra, for the rag:<index> and react:<index> models only
    grounding: GroundingSwitch | None = None

    def sampling_params(self) -> SamplingParams:
        if self.skip_special_tokens is False:
            raise InvalidRequestError("skip_special_tokens=false is not supported", param="skip_special_tokens")
        if self.include_stop_str_in_output:
            raise InvalidRequestError("include_stop_str_in_output=true is not supported",
                                      param="include_stop_str_in_output")
        if self.max_tokens is not None and self.max_completion_tokens is not None \
                and self.max_tokens != self.max_completion_tokens:
            raise InvalidRequestError("max_tokens and max_completion_tokens disagree; send one", param="max_tokens")
        raw: dict[str, Any] = {
            "max_tokens": self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens,
            "temperature": self.temperature, "top_p": self.top_p, "n": self.n, "stop": self.stop,
            "seed": self.seed, "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty, "logprobs": self.logprobs,
            "top_logprobs": self.top_logprobs, "top_k": self.top_k, "min_p": self.min_p,
            "repetition_penalty": self.repetition_penalty, "min_tokens": self.min_tokens,
            "ignore_eos": self.ignore_eos, "stop_token_ids": self.stop_token_ids,
        }
        if self.logit_bias:
            try:
                raw["logit_bias"] = {int(k): v for k, v in self.logit_bias.items()}
            except ValueError:
                raise InvalidRequestError("logit_bias keys must be token ids", param="logit_bias") from None
        given = {k: v for k, v in raw.items() if v is not None}
        try:
            return SamplingParams(**given)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = str(err["loc"][0]) if err.get("loc") else "params"
            if field == "max_tokens" and self.max_completion_tokens is not None:
                field = "max_completion_tokens"
            raise InvalidRequestError(f"{field}: {err['msg']} (got {err.get('input')!r})", param=field) from None

    def in_client_terms(self, exc: InvalidRequestError) -> InvalidRequestError:
        """Engines say ``max_tokens``; name the field this client actually sent."""
        if exc.param == "max_tokens" and self.max_completion_tokens is not None:
            exc.param = "max_completion_tokens"
            exc.message = exc.message.replace("max_tokens", "max_completion_tokens")
        return exc

    def structured(self) -> StructuredOutput | None:
        """The one output constraint this request asks for, from whichever field carries it."""
        found: list[tuple[str, StructuredOutput]] = []
        rf = self.response_format
        if rf:
            kind = rf.get("type")
            if kind == "json_schema":
                schema = (rf.get("json_schema") or {}).get("schema")
                if not isinstance(schema, dict):
                    raise InvalidRequestError("response_format.json_schema.schema must be an object",
                                              param="response_format")
                found.append(("response_format", StructuredOutput(kind="json_schema", value=schema)))
            elif kind == "json_object":
                found.append(("response_format", StructuredOutput(kind="json_object")))
            elif kind != "text":
                raise InvalidRequestError(f"response_format.type {kind!r} is not one of text, json_object, "
                                          "json_schema", param="response_format")
        so = self.structured_outputs or {}
        unknown = set(so) - {"json", "regex", "choice", "grammar", "json_object"}
        if unknown:
            raise InvalidRequestError(f"structured_outputs has unknown keys {sorted(unknown)}",
                                      param="structured_outputs")
        for key, kind in (("json", "json_schema"), ("regex", "regex"), ("choice", "choice"), ("grammar", "grammar")):
            if so.get(key) is not None:
                found.append(("structured_outputs", StructuredOutput(kind=kind, value=so[key])))
        if so.get("json_object"):
            found.append(("structured_outputs", StructuredOutput(kind="json_object")))
        legacy = (("guided_json", "json_schema"), ("guided_regex", "regex"), ("guided_choice", "choice"),
                  ("guided_grammar", "grammar"))
        for field, kind in legacy:
            value = getattr(self, field)
            if value is not None:
                if field == "guided_json" and isinstance(value, str):
                    import json

                    try:
                        value = json.loads(value)
                    except json.JSONDecodeError:
                        raise InvalidRequestError("guided_json is not valid JSON", param="guided_json") from None
                found.append((field, StructuredOutput(kind=kind, value=value)))
        if len(found) > 1:
            raise InvalidRequestError(f"more than one output constraint given ({', '.join(f for f, _ in found)})",
                                      param=found[1][0])
        return found[0][1] if found else None

    def message_dicts(self) -> list[dict[str, Any]]:
        return [m.model_dump(exclude_none=True) for m in self.messages]


class EmbeddingRequest(StrictModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    input: str | list[str] = Field(description="Text or list of texts (token-id inputs are not supported).")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


class LoraLoadRequest(StrictModel):
    model_config = ConfigDict(extra="forbid")
    lora_name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    lora_path: str = Field(min_length=1)
    load_inplace: bool = False


class LoraUnloadRequest(StrictModel):
    model_config = ConfigDict(extra="forbid")
    lora_name: str = Field(min_length=1, max_length=128)
    lora_int_id: int | None = None


class TokenizeRequest(StrictModel):
    """vLLM's /tokenize: either chat ``messages`` (rendered with the chat template) or a bare
    ``prompt``."""

    model_config = ConfigDict(extra="forbid")
    model: str
    messages: list[ChatMessageIn] | None = Field(default=None, min_length=1)
    prompt: str | None = None
    add_generation_prompt: bool = True
    add_special_tokens: bool = False
