"""Chat messages as every engine accepts them.

OpenAI clients send content as a string or a list of parts, assistant turns with ``tool_calls`` and
no content, and ``tool`` turns answering a call. Chat templates of small models only know
``role`` and string ``content``, so :func:`normalize_messages` flattens everything to that shape,
and raises :class:`InvalidRequestError` naming the message at fault.
"""

from __future__ import annotations

import json
from typing import Any

from agentstack.errors import InvalidRequestError

ROLES = ("system", "developer", "user", "assistant", "tool")


def content_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise InvalidRequestError(f"{where}: content part of type {kind!r} is not supported; only text",
                                          param=where)
        return "".join(parts)
    raise InvalidRequestError(f"{where}: content must be a string or a list of text parts", param=where)


def normalize_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    if not messages:
        raise InvalidRequestError("messages is empty", param="messages", fix="send at least one message")
    out: list[dict[str, str]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise InvalidRequestError(f"{where} must be an object", param=where)
        role = message.get("role")
        if role not in ROLES:
            raise InvalidRequestError(f"{where}.role is {role!r}; expected one of {', '.join(ROLES)}",
                                      param=f"{where}.role")
        text = content_text(message.get("content"), f"{where}.content")
        if role == "developer":
            role = "system"
        if role == "assistant" and message.get("tool_calls"):
            calls = [json.dumps({"name": c.get("function", {}).get("name"), "arguments": _args(c)},
                                ensure_ascii=False) for c in message["tool_calls"]]
            text = (text + "\n" if text else "") + f"<tool_call>[{', '.join(calls)}]</tool_call>"
        if role == "tool":  # most chat templates only know system/user/assistant
            role = "user"
            text = f"Result of {message.get('name') or message.get('tool_call_id') or 'the tool'}: {text}"
        out.append({"role": role, "content": text})
    return out


def _args(call: dict[str, Any]) -> Any:
    raw = call.get("function", {}).get("arguments", "{}")
    try:
        return json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        return raw
