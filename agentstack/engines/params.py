"""Inference parameters, validated once for every engine.

Ranges follow OpenAI's API and vLLM's ``SamplingParams``. A bad value raises pydantic's
``ValidationError`` whose location names the field, which the server turns into a 400/422 naming it.
Limits that depend on the deployment (``max_tokens`` ceiling, ``n`` ceiling) are checked by
:func:`check_limits` with the engine settings.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentstack.errors import InvalidRequestError


class SamplingParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int | None = Field(default=None, ge=1, description="Most new tokens to generate.")
    temperature: float = Field(default=1.0, ge=0.0, le=2.0, description="0 = greedy.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass, in (0, 1].")
    top_k: int = Field(default=0, ge=-1, description="Keep the k most likely tokens; 0 or -1 = off.")
    min_p: float = Field(default=0.0, ge=0.0, le=1.0, description="Drop tokens below min_p × the top probability.")
    repetition_penalty: float = Field(default=1.0, gt=0.0, le=10.0,
                                      description="CTRL-style penalty on tokens already present (1 = off).")
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    logit_bias: dict[int, float] = Field(default_factory=dict)
    stop: list[str] = Field(default_factory=list, max_length=16)
    stop_token_ids: list[int] = Field(default_factory=list, max_length=64)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    n: int = Field(default=1, ge=1, le=128)
    logprobs: bool = False
    top_logprobs: int = Field(default=0, ge=0, le=20)
    ignore_eos: bool = False
    min_tokens: int = Field(default=0, ge=0)

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, v: Any) -> Any:
        if v is None:
            return []
        return [v] if isinstance(v, str) else v

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, v: list[str]) -> list[str]:
        for s in v:
            if not s or len(s) > 256:
                raise ValueError("each stop string must have 1 to 256 characters")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _bias_range(cls, v: dict[int, float]) -> dict[int, float]:
        for token, bias in v.items():
            if not -100 <= bias <= 100:
                raise ValueError(f"bias for token {token} is {bias}; it must be within [-100, 100]")
        return v

    @model_validator(mode="after")
    def _cross(self) -> "SamplingParams":
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs=true")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens ({self.min_tokens}) exceeds max_tokens ({self.max_tokens})")
        if self.n > 1 and self.temperature == 0.0:  # identical copies; vLLM refuses them too
            raise ValueError(f"n must be 1 when using greedy sampling (temperature=0), got n={self.n}")
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class StructuredOutput(BaseModel):
    """A constraint on the generated text. ``kind`` picks how ``value`` is read:
    ``json_schema`` (a JSON Schema dict), ``json_object`` (any JSON object), ``regex`` (a pattern),
    ``choice`` (a list of strings), ``grammar`` (a Lark grammar, llguidance dialect)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["json_schema", "json_object", "regex", "choice", "grammar"]
    value: Any = None


def check_limits(params: SamplingParams, *, max_tokens_limit: int, max_n: int) -> None:
    """Deployment limits; raises :class:`InvalidRequestError` naming the field."""
    if params.max_tokens is not None and params.max_tokens > max_tokens_limit:
        raise InvalidRequestError(f"max_tokens={params.max_tokens} is over this server's limit of "
                                  f"{max_tokens_limit}", param="max_tokens",
                                  fix=f"ask for at most {max_tokens_limit} tokens")
    if params.n > max_n:
        raise InvalidRequestError(f"n={params.n} is over this server's limit of {max_n}", param="n",
                                  fix=f"ask for at most {max_n} choices")


def resolve_max_tokens(params: SamplingParams, *, prompt_tokens: int, context_length: int,
                       default_max_tokens: int) -> int:
    """The number of new tokens a request may generate, or :class:`ContextLengthError` when the
    prompt alone fills the context window. A ``max_tokens`` beyond the room left is cut to it (the
    answer then ends with ``finish_reason="length"``), as vLLM does."""
    from agentstack.errors import ContextLengthError

    room = context_length - prompt_tokens
    if room <= 0:
        raise ContextLengthError(
            f"the prompt has {prompt_tokens} tokens but the model's context window is {context_length} tokens",
            param="messages", fix="shorten the conversation or the retrieved context")
    if params.max_tokens is None:
        return min(default_max_tokens, room)
    return min(params.max_tokens, room)
