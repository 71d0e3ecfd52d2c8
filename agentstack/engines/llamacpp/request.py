"""agentstack's request as a llama.cpp completion body, and llama.cpp's stream chunks back.

The prompt travels as token ids (rendered and counted by agentstack's tokenizer), so usage and
``/tokenize`` agree with what runs. Sampling maps onto llama.cpp's names; its defaults that differ
from OpenAI's (``top_k`` 40, ``min_p`` 0.05, penalties over the last 64 tokens only) are overridden so a
request means the same on every engine. ``min_tokens`` and ``stop_token_ids`` have no llama.cpp
counterpart and are refused with a 400 rather than ignored.

This module knows nothing about threads or asyncio.
"""

from __future__ import annotations

from typing import Any

from agentstack.engines.base import TokenLogprob
from agentstack.engines.params import SamplingParams
from agentstack.errors import AgentstackError, ContextLengthError, InvalidRequestError, OverloadedError


def completion_body(params: SamplingParams, ids: list[int], max_new: int, *, grammar: str | None,
                    lora: list[dict[str, Any]] | None) -> dict[str, Any]:
    if params.min_tokens:
        raise InvalidRequestError("min_tokens is not supported by the llamacpp engine", param="min_tokens",
                                  fix="drop min_tokens, or serve with AGENTSTACK_ENGINE__KIND=embedded")
    if params.stop_token_ids:
        raise InvalidRequestError("stop_token_ids is not supported by the llamacpp engine", param="stop_token_ids",
                                  fix="use stop strings instead")
    body: dict[str, Any] = {
        # A seeded request is computed from scratch: reusing a slot's cached prompt evaluates the last
        # tokens in a different batch shape, and llama.cpp's logits then differ in the last bits, enough
        # to change sampled (and occasionally greedy) tokens. Unseeded requests keep the prefix reuse.
        "prompt": ids, "max_tokens": max_new, "stream": True, "n": params.n, "cache_prompt": params.seed is None,
        "temperature": params.temperature, "top_p": params.top_p, "top_k": max(params.top_k, 0),
        "min_p": params.min_p, "repeat_penalty": params.repetition_penalty, "repeat_last_n": len(ids) + max_new,
        "presence_penalty": params.presence_penalty, "frequency_penalty": params.frequency_penalty,
        "ignore_eos": params.ignore_eos,
    }
    if params.stop:
        body["stop"] = list(params.stop)
    if params.seed is not None:
        body["seed"] = params.seed % (2**32 - 1)  # llama.cpp seeds are uint32; 0xFFFFFFFF means random
    if params.logit_bias:
        body["logit_bias"] = [[int(k), float(v)] for k, v in params.logit_bias.items()]
    if params.logprobs:
        body["logprobs"] = max(1, params.top_logprobs)
    if grammar is not None:
        body["grammar"] = grammar
    if lora is not None:
        body["lora"] = lora
    return body


def chunk_error(chunk: dict[str, Any]) -> AgentstackError | None:
    """The agentstack error for an error chunk, else None."""
    if "choices" in chunk:
        return None
    err = chunk.get("error", chunk)
    if not isinstance(err, dict) or not ("message" in err or "code" in err):
        return None
    message = str(err.get("message") or err)
    code = err.get("code")
    kind = str(err.get("type") or "")
    if code == 503 or kind == "unavailable_error":
        return OverloadedError(f"llama.cpp is busy: {message}", retry_after=1)
    if kind == "exceed_context_size_error":
        return ContextLengthError(message, param="messages")
    if code == 400 or kind == "invalid_request_error":
        return InvalidRequestError(f"llama.cpp refused the request: {message}")
    from agentstack.engines.local import GenerationError

    return GenerationError(f"llama.cpp failed: {message}")


def logprobs_of(choice: dict[str, Any], top: int) -> list[TokenLogprob] | None:
    content = (choice.get("logprobs") or {}).get("content") if isinstance(choice.get("logprobs"), dict) else None
    if not content:
        return None
    return [TokenLogprob(t.get("token", ""), float(t.get("logprob", 0.0)),
                         [(x.get("token", ""), float(x.get("logprob", 0.0))) for x in (t.get("top_logprobs") or [])][:top])
            for t in content]
