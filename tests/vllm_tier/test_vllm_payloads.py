"""The payload check itself can fail: a field vLLM 0.32 would ignore (the old ``guided_*``, an
unknown ``structured_outputs`` key) is reported, a clean payload is not."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.vllm


def test_the_payload_check_reports_fields_vllm_ignores(vllm_server, vllm_payloads):
    base = {"model": vllm_server.served_name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    clean = {"path": "/v1/chat/completions", "body": {**base, "structured_outputs": {"regex": "a+"}}}
    assert vllm_payloads.validate([clean]) == []
    ignored = [{"path": "/v1/chat/completions", "body": {**base, "guided_regex": "a+"}},
               {"path": "/v1/chat/completions", "body": {**base, "structured_outputs": {"regex": "a", "lark": "x"}}},
               {"path": "/v1/load_lora_adapter", "body": {"lora_name": "a", "lora_path": "/a", "replace": True}}]
    problems = vllm_payloads.validate(ignored)
    assert len(problems) == 3
    assert "guided_regex" in problems[0] and "lark" in problems[1] and "replace" in problems[2]
