"""Checks request bodies against vLLM's own request models. Runs with the vLLM venv's python.

vLLM's models accept unknown fields silently (``extra="allow"``, and a dataclass or TypedDict
drops them), so a field vLLM does not know would change nothing and go unnoticed. This script
reads one JSON object per line, ``{"method": ..., "path": ..., "body": ...}``, validates the body
with the model vLLM's route uses, and answers one line: ``{"ok": bool, "problems": [...]}``, where
every key that landed in a ``model_extra`` or was dropped is a problem.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import warnings

warnings.filterwarnings("ignore")

from pydantic import BaseModel, ValidationError  # noqa: E402

from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest  # noqa: E402
from vllm.entrypoints.serve.lora.protocol import LoadLoRAAdapterRequest, UnloadLoRAAdapterRequest  # noqa: E402
from vllm.entrypoints.serve.tokenize.protocol import TokenizeChatRequest, TokenizeCompletionRequest  # noqa: E402


def model_for(path: str, body: dict) -> type[BaseModel]:
    if path.endswith("/chat/completions"):
        return ChatCompletionRequest
    if path.endswith("/tokenize"):
        return TokenizeChatRequest if "messages" in body else TokenizeCompletionRequest
    if path.endswith("/load_lora_adapter"):
        return LoadLoRAAdapterRequest
    if path.endswith("/unload_lora_adapter"):
        return UnloadLoRAAdapterRequest
    raise KeyError(path)


def unknown(value: object, data: object, where: str) -> list[str]:
    """Keys of ``data`` that vLLM's validated ``value`` did not take up."""
    out: list[str] = []
    if isinstance(value, BaseModel) and isinstance(data, dict):
        out += [f"{where}.{key}" for key in (value.model_extra or {})]
        known = {n for name, f in type(value).model_fields.items() for n in (name, f.alias) if n}
        extra = value.model_extra or {}
        out += [f"{where}.{key} (dropped)" for key in data if key not in known and key not in extra]
        for name, field in type(value).model_fields.items():
            key = field.alias or name
            if key in data:
                out += unknown(getattr(value, name), data[key], f"{where}.{key}")
    elif dataclasses.is_dataclass(value) and isinstance(data, dict):
        names = {f.name for f in dataclasses.fields(value)}
        out += [f"{where}.{key} (dropped)" for key in data if key not in names]
        out += [p for key in data if key in names for p in unknown(getattr(value, key), data[key], f"{where}.{key}")]
    elif isinstance(value, dict) and isinstance(data, dict):
        out += [f"{where}.{key} (dropped)" for key in data if key not in value]
        out += [p for key in data if key in value for p in unknown(value[key], data[key], f"{where}.{key}")]
    elif isinstance(value, list | tuple) and isinstance(data, list):
        for i, (v, d) in enumerate(zip(value, data, strict=False)):
            out += unknown(v, d, f"{where}[{i}]")
    return out


def check(path: str, body: dict) -> dict:
    try:
        model = model_for(path, body)
    except KeyError:
        return {"ok": False, "problems": [f"no vLLM request model for {path}"]}
    try:
        value = model.model_validate(body)
    except ValidationError as exc:
        return {"ok": False, "problems": [f"invalid for {model.__name__}: {exc.errors()[:3]}"]}
    except Exception as exc:  # noqa: BLE001  (vLLM's validators raise their own error types)
        return {"ok": False, "problems": [f"invalid for {model.__name__}: {exc}"]}
    problems = unknown(value, body, model.__name__)
    return {"ok": not problems, "problems": problems}


def main() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        print(json.dumps(check(request["path"], request["body"])), flush=True)


if __name__ == "__main__":
    main()
