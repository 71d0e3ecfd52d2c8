"""OpenAI tool calling for engines without native support (the embedded engine).

The tools are described in a system message, and the model calls one by answering::

    <tool_call>
    <tool_call>[{"name": "get_weather", "arguments": {"city": "Paris"}}]</tool_call>

(the format and system prompt SmolLM2 was tuned on). Generation runs under a grammar built from ``tools`` and
``tool_choice``, so a call always names a declared function with arguments valid for its JSON
schema: ``auto`` allows plain text (not starting with ``<``) or calls; ``required`` and a named
function allow only calls; ``none`` drops the tools. The text is then parsed into OpenAI's
``tool_calls``.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from agentstack.engines.params import StructuredOutput
from agentstack.errors import InvalidRequestError

CALL = re.compile(r"<tool_call>\s*(\[.*?\]|\{.*?\})\s*</tool_call>", re.DOTALL)
OPEN = "<tool_call>"


def _functions(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type") != "function" or not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise InvalidRequestError(f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ...}}}}",
                                      param=f"tools[{i}]")
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(params, dict):
            raise InvalidRequestError(f"tools[{i}].function.parameters must be a JSON schema object",
                                      param=f"tools[{i}]")
        out.append({"name": fn["name"], "description": fn.get("description", ""), "parameters": params})
    return out


def _chosen(functions: list[dict[str, Any]], tool_choice: Any) -> tuple[str, list[dict[str, Any]]]:
    """(mode, callable functions) for ``tool_choice``: mode is auto | required | none."""
    if tool_choice in (None, "auto"):
        return "auto", functions
    if tool_choice == "none":
        return "none", []
    if tool_choice == "required":
        return "required", functions
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
        name = (tool_choice.get("function") or {}).get("name")
        picked = [f for f in functions if f["name"] == name]
        if not picked:
            raise InvalidRequestError(f"tool_choice names {name!r}, which is not in tools", param="tool_choice")
        return "required", picked
    raise InvalidRequestError("tool_choice must be 'auto', 'none', 'required' or a function", param="tool_choice")


def _call_schema(functions: list[dict[str, Any]]) -> dict[str, Any]:
    variants = [{"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
                 "properties": {"name": {"const": f["name"]}, "arguments": f["parameters"]}} for f in functions]
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


def prepare(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, tool_choice: Any,
            parallel: bool = True) -> tuple[list[dict[str, Any]], StructuredOutput | None, bool]:
    """(messages with the tool instructions, the grammar, whether calls are possible)."""
    if not tools:
        if tool_choice not in (None, "none", "auto"):
            raise InvalidRequestError("tool_choice was given without tools", param="tool_choice")
        return messages, None, False
    mode, functions = _chosen(_functions(tools), tool_choice)
    if mode == "none":
        return messages, None, False
    listing = json.dumps(functions, ensure_ascii=False)
    must = ("You must call at least one of them." if mode == "required" else
            "If none of the functions can be used, answer in plain text instead.")
    instruction = ("You are an expert in composing functions. You are given a question and a set of possible "
                   "functions. Based on the question, you will need to make one or more function/tool calls to "
                   "achieve the purpose.\n\nYou have access to the following tools:\n<tools>" + listing +
                   "</tools>\n\nTo call functions, reply in this format and nothing else:\n"
                   f'{OPEN}[{{"name": "func_name1", "arguments": {{"argument1": "value1"}}}}]</tool_call>\n' + must)
    one = f"%json {json.dumps(_call_schema(functions))}"
    calls = f'"{OPEN}[" {one} ' + ('(", " ' + one + ')* ' if parallel else "") + '"]</tool_call>"'
    if mode == "required":
        grammar = f"start: {calls}\n"
    else:
        grammar = f"start: TEXT | {calls}\nTEXT: /[^<\\s][\\s\\S]*/\n"
    if messages and messages[0].get("role") in ("system", "developer"):
        first = {**messages[0], "content": f"{messages[0].get('content') or ''}\n\n{instruction}"}
        messages = [first, *messages[1:]]
    else:
        messages = [{"role": "system", "content": instruction}, *messages]
    return messages, StructuredOutput(kind="grammar", value=grammar), True


def parse_calls(text: str) -> list[dict[str, Any]]:
    """OpenAI ``tool_calls`` found in ``text`` (empty when it is a plain answer)."""
    calls = []
    for match in CALL.finditer(text):
        try:
            found = json.loads(match.group(1))
        except json.JSONDecodeError:
            continue
        for obj in found if isinstance(found, list) else [found]:
            if not (isinstance(obj, dict) and isinstance(obj.get("name"), str)):
                continue
            calls.append({"id": f"call_{secrets.token_hex(8)}", "type": "function",
                          "function": {"name": obj["name"],
                                       "arguments": json.dumps(obj.get("arguments", {}), ensure_ascii=False)}})
    return calls


class CallCollector:
    """Per-choice stream filter: plain answers pass through at once; text that starts with
    ``<tool_call>`` is held until the choice ends and then returned as ``tool_calls``."""

    def __init__(self) -> None:
        self._buffer = ""
        self._mode: str | None = None  # None: undecided, "text", "calls"

    def feed(self, text: str, *, done: bool) -> tuple[str, list[dict[str, Any]]]:
        if self._mode == "text":
            return text, []
        self._buffer += text
        stripped = self._buffer.lstrip()
        if self._mode is None and stripped:
            self._mode = "calls" if stripped.startswith("<") else "text"
            if self._mode == "text":
                out, self._buffer = self._buffer, ""
                return out, []
        if not done:
            return "", []
        found = parse_calls(self._buffer)
        if found:
            return "", found
        out, self._buffer = self._buffer, ""
        return out, []


class DeltaCalls:
    """Tool calls streamed as OpenAI ``delta.tool_calls`` fragments (a server's tool-call parser,
    vLLM's or agentstack's), folded into whole calls for the choice's final event."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, Any]] = {}

    def feed(self, deltas: list[Any]) -> None:
        for delta in deltas:
            slot = self._calls.setdefault(delta.index or 0, {"id": None, "name": "", "arguments": ""})
            if delta.id:
                slot["id"] = delta.id
            fn = delta.function
            if fn is not None:
                slot["name"] += fn.name or ""
                slot["arguments"] += fn.arguments or ""

    def calls(self) -> list[dict[str, Any]]:
        return [{"id": slot["id"] or f"call_{secrets.token_hex(8)}", "type": "function",
                 "function": {"name": slot["name"], "arguments": slot["arguments"] or "{}"}}
                for _, slot in sorted(self._calls.items())]
