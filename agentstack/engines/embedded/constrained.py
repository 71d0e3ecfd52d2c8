"""Structured decoding for the embedded engine with llguidance.

A :class:`StructuredOutput` (JSON schema, any JSON object, regex, choice, or a Lark grammar)
compiles once into an llguidance grammar; each sequence gets its own matcher. Before every
sampling step the matcher says which tokens may come next (the sampler masks the rest to -inf);
after it, the chosen token advances the matcher. When the grammar is complete only EOS is allowed,
so a constrained answer always parses.

Why llguidance: ~10 MB, no torch/triton dependency (xgrammar pulls in triton, ~1 GB), and mask
computation in tens of microseconds per step.

JSON is generated compactly (no free whitespace): small models otherwise drift into endless runs
of spaces and newlines that the schema allows.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import torch

from agentstack.engines.params import StructuredOutput
from agentstack.errors import InvalidRequestError, require

_tokenizers: dict[int, Any] = {}
_lock = threading.Lock()
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def _lltokenizer(tokenizer: Any) -> Any:
    """llguidance's view of a Hugging Face fast tokenizer (~1 s to build, so cached)."""
    require("llguidance", package="llguidance")
    import llguidance.hf

    with _lock:
        found = _tokenizers.get(id(tokenizer))
        if found is None:
            found = _tokenizers[id(tokenizer)] = llguidance.hf.from_tokenizer(tokenizer)
        return found


def grammar_for(structured: StructuredOutput) -> str:
    from llguidance import LLMatcher, grammar_from

    kind, value = structured.kind, structured.value
    try:
        if kind == "json_schema":
            if not isinstance(value, dict):
                raise InvalidRequestError("a JSON schema must be an object", param="response_format")
            return LLMatcher.grammar_from_json_schema(value, overrides=JSON_OPTIONS)
        if kind == "json_object":
            return LLMatcher.grammar_from_json_schema({"type": "object"}, overrides=JSON_OPTIONS)
        if kind == "regex":
            if not isinstance(value, str) or not value:
                raise InvalidRequestError("a regex constraint must be a non-empty string", param="regex")
            return LLMatcher.grammar_from_regex(value)
        if kind == "choice":
            if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
                raise InvalidRequestError("a choice constraint must be a non-empty list of strings", param="choice")
            return grammar_from("choice", json.dumps(value))
        if kind == "grammar":
            if not isinstance(value, str) or not value.strip():
                raise InvalidRequestError("a grammar constraint must be a non-empty string", param="grammar")
            return grammar_from("grammar", value)
    except ValueError as exc:
        raise InvalidRequestError(f"invalid {kind} constraint: {exc}", param=kind) from exc
    raise InvalidRequestError(f"unknown constraint kind {kind!r}", param="structured_outputs")


class Constraint:
    """A compiled grammar; :meth:`new_matcher` gives each sequence its own state."""

    def __init__(self, lltok: Any, grammar: str, eos_ids: frozenset[int], vocab_size: int):
        from llguidance import LLMatcher

        error = LLMatcher.validate_grammar(grammar, lltok)
        if error and not error.startswith("WARNING"):
            raise InvalidRequestError(f"the output constraint does not compile: {error}", param="structured_outputs",
                                      fix="check the schema, regex or grammar")
        self._lltok = lltok
        self._grammar = grammar
        self._eos = sorted(eos_ids)
        self._vocab = vocab_size

    def new_matcher(self) -> tuple[Callable[[list[int]], torch.Tensor | None], Callable[[int], None]]:
        from llguidance import LLMatcher

        matcher = LLMatcher(self._lltok, self._grammar, log_level=0)
        vocab, eos = self._vocab, self._eos

        def mask(_out_ids: list[int]) -> torch.Tensor:
            allowed = torch.zeros(vocab, dtype=torch.bool)
            if matcher.is_stopped():
                allowed[eos] = True
                return allowed
            bias = torch.frombuffer(bytearray(matcher.compute_logit_bias()), dtype=torch.uint8)
            n = min(vocab, bias.numel())
            allowed[:n] = bias[:n] > 0
            if matcher.is_accepting():
                allowed[eos] = True
            if not bool(allowed.any()):  # the grammar is stuck; end rather than emit garbage
                allowed[eos] = True
            return allowed

        def advance(token: int) -> None:
            if token in eos or matcher.is_stopped():
                return
            if not matcher.consume_token(token):
                raise InvalidRequestError(f"constrained decoding failed: {matcher.get_error()}",
                                          param="structured_outputs")

        return mask, advance


@lru_cache(maxsize=64)
def _cached_grammar(key: str) -> str:
    kind, value = json.loads(key)
    return grammar_for(StructuredOutput(kind=kind, value=value))


def compile_constraint(tokenizer: Any, structured: StructuredOutput, eos_ids: frozenset[int],
                       vocab_size: int) -> Constraint:
    lltok = _lltokenizer(tokenizer)
    # no sort_keys: a schema's property order is the order the model writes the keys in
    key = json.dumps([structured.kind, structured.value])
    return Constraint(lltok, _cached_grammar(key), eos_ids, vocab_size)
