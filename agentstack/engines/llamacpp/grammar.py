"""Structured outputs as the Lark grammars that llama.cpp hands to LLGuidance.

llama.cpp treats a ``grammar`` that starts with ``%llguidance`` as an LLGuidance Lark grammar, so
every :class:`StructuredOutput` form becomes one: a JSON schema is ``%json {...}`` (generated
compactly, as the torch engine does: small models otherwise drift into endless whitespace), a regex
is a ``/.../`` terminal, a choice an alternation of string literals, and a grammar (Lark, or GBNF
converted by llguidance) is passed as it is.

llama.cpp serves a grammar it cannot compile *unconstrained* (measured: it logs and samples
freely), so each grammar is first compiled here with llguidance against the model's tokenizer;
a bad one is refused with a 400 before anything is generated.

This module knows nothing about serving.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from agentstack.engines.embedded.constrained import JSON_OPTIONS
from agentstack.engines.params import StructuredOutput
from agentstack.errors import InvalidRequestError

HEADER = "%llguidance {}\n"


def to_lark(structured: StructuredOutput) -> str:
    """The Lark grammar (without the ``%llguidance`` header) for ``structured``."""
    kind, value = structured.kind, structured.value
    if kind in ("json_schema", "json_object"):
        if kind == "json_schema" and not isinstance(value, dict):
            raise InvalidRequestError("a JSON schema must be an object", param="response_format")
        schema = dict(value) if kind == "json_schema" else {"type": "object"}
        schema["x-guidance"] = {**JSON_OPTIONS, **(schema.get("x-guidance") or {})}
        return f"start: %json {json.dumps(schema)}\n"
    if kind == "regex":
        if not isinstance(value, str) or not value:
            raise InvalidRequestError("a regex constraint must be a non-empty string", param="regex")
        return "start: /" + value.replace("/", "\\/") + "/\n"
    if kind == "choice":
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise InvalidRequestError("a choice constraint must be a non-empty list of strings", param="choice")
        return "start: " + " | ".join(json.dumps(v) for v in value) + "\n"
    if kind == "grammar":
        if not isinstance(value, str) or not value.strip():
            raise InvalidRequestError("a grammar constraint must be a non-empty string", param="grammar")
        from llguidance.gbnf_to_lark import any_to_lark

        try:
            return any_to_lark(value)
        except Exception as exc:  # llguidance raises plain exceptions for GBNF it cannot read
            raise InvalidRequestError(f"invalid grammar constraint: {exc}", param="grammar") from exc
    raise InvalidRequestError(f"unknown constraint kind {kind!r}", param="structured_outputs")


@lru_cache(maxsize=128)
def _checked(key: str, tokenizer_id: int) -> str:
    kind, value = json.loads(key)
    lark = to_lark(StructuredOutput(kind=kind, value=value))
    from llguidance import LLMatcher

    try:
        grammar = LLMatcher.grammar_from_lark(lark)
    except ValueError as exc:
        raise InvalidRequestError(f"invalid {kind} constraint: {exc}", param=kind) from exc
    from agentstack.engines.embedded.constrained import _tokenizers

    error = LLMatcher.validate_grammar(grammar, _tokenizers[tokenizer_id])
    if error and not error.startswith("WARNING"):
        raise InvalidRequestError(f"the output constraint does not compile: {error}", param="structured_outputs",
                                  fix="check the schema, regex or grammar")
    return HEADER + lark


def compile_grammar(tokenizer: Any, structured: StructuredOutput) -> str:
    """The ``grammar`` field for llama.cpp, checked against ``tokenizer``; raises a 400 when bad."""
    from agentstack.engines.embedded.constrained import _lltokenizer  # llguidance's tokenizer, cached

    _lltokenizer(tokenizer)
    # no sort_keys: a schema's property order is the order the model writes the keys in
    key = json.dumps([structured.kind, structured.value])
    return _checked(key, id(tokenizer))
