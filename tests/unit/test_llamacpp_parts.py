"""The llamacpp engine's pure parts: grammars, request bodies, error chunks, the GGUF header reader,
the LoRA permutation, the top-k KL estimate."""

from __future__ import annotations

import math

import pytest

from agentstack.engines.llamacpp.grammar import to_lark
from agentstack.engines.llamacpp.request import chunk_error, completion_body, logprobs_of
from agentstack.engines.params import SamplingParams, StructuredOutput
from agentstack.errors import ContextLengthError, InvalidRequestError

pytestmark = pytest.mark.unit


def test_structured_outputs_become_lark():
    schema = {"type": "object", "properties": {"b": {"type": "integer"}, "a": {"type": "string"}}}
    lark = to_lark(StructuredOutput(kind="json_schema", value=schema))
    assert lark.startswith("start: %json {") and '"whitespace_flexible": false' in lark
    assert lark.index('"b"') < lark.index('"a"')  # the schema's key order is kept
    assert to_lark(StructuredOutput(kind="regex", value="a/b[0-9]+")) == "start: /a\\/b[0-9]+/\n"
    assert to_lark(StructuredOutput(kind="choice", value=['say "hi"', "no"])) == 'start: "say \\"hi\\"" | "no"\n'
    assert "start" in to_lark(StructuredOutput(kind="grammar", value='root ::= "yes" | "no"'))  # GBNF converted
    with pytest.raises(InvalidRequestError, match="non-empty list"):
        to_lark(StructuredOutput(kind="choice", value=[]))


def test_completion_body_maps_sampling_and_refuses_what_llama_cpp_lacks():
    params = SamplingParams(temperature=0.7, top_p=0.9, top_k=-1, seed=2**40 + 5, stop=["\n"], logprobs=True,
                            top_logprobs=3, logit_bias={42: -100.0}, repetition_penalty=1.2, n=2)
    body = completion_body(params, [1, 2, 3], 10, grammar=None, lora=[{"id": 0, "scale": 1.0}])
    assert body["prompt"] == [1, 2, 3] and body["max_tokens"] == 10 and body["stream"] is True
    assert body["top_k"] == 0 and body["min_p"] == 0.0 and body["repeat_last_n"] == 13
    assert body["seed"] == (2**40 + 5) % (2**32 - 1) and body["logprobs"] == 3 and body["n"] == 2
    assert body["logit_bias"] == [[42, -100.0]] and body["stop"] == ["\n"] and body["lora"][0]["id"] == 0
    assert "seed" not in completion_body(SamplingParams(), [1], 5, grammar=None, lora=None)
    # a seeded request is computed from scratch (a cached prefix changes the logits' last bits)
    assert body["cache_prompt"] is False
    assert completion_body(SamplingParams(), [1], 5, grammar=None, lora=None)["cache_prompt"] is True
    with pytest.raises(InvalidRequestError, match="min_tokens"):
        completion_body(SamplingParams(min_tokens=2), [1], 5, grammar=None, lora=None)
    with pytest.raises(InvalidRequestError, match="stop_token_ids"):
        completion_body(SamplingParams(stop_token_ids=[2]), [1], 5, grammar=None, lora=None)


def test_error_chunks_map_to_domain_errors():
    assert chunk_error({"choices": []}) is None
    assert isinstance(chunk_error({"error": {"code": 400, "message": "bad", "type": "exceed_context_size_error"}}),
                      ContextLengthError)
    assert isinstance(chunk_error({"code": 400, "message": "bad", "type": "invalid_request_error"}),
                      InvalidRequestError)
    choice = {"logprobs": {"content": [{"token": "a", "logprob": -0.5,
                                        "top_logprobs": [{"token": "a", "logprob": -0.5}, {"token": "b", "logprob": -1}]}]}}
    lp = logprobs_of(choice, 1)
    assert lp[0].token == "a" and lp[0].top == [("a", -0.5)]


def test_header_reader_agrees_with_gguf(tmp_path):
    import gguf
    import numpy as np

    from agentstack.engines.llamacpp.model_file import read_header, read_info

    path = tmp_path / "tiny.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(512)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_block_count(1)
    w.add_token_list([f"t{i}" for i in range(100)])  # a long array: skipped, not read
    w.add_chat_template("{{ messages }}")
    w.add_tensor("blk.0.attn_q.weight", np.zeros((8, 16), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    kv, shapes = read_header(path)
    assert shapes == {"blk.0.attn_q.weight": [16, 8]}
    assert kv["tokenizer.ggml.tokens"] is None
    info = read_info(path)
    assert (info.architecture, info.context_length, info.head_count, info.head_count_kv, info.block_count) == (
        "llama", 512, 4, 2, 1)
    assert info.chat_template == "{{ messages }}"


def test_permutation_matches_llama_cpp_rotary_layout():
    import numpy as np

    from agentstack.engines.llamacpp.lora import _permute

    rows = np.arange(8, dtype=np.float32).reshape(8, 1)  # 2 heads of 4 rows: halves interleaved per head
    assert _permute(rows, 2).ravel().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_top_k_kl_estimate():
    from agentstack.engines.llamacpp.quality import _kl

    same = {"a": math.log(0.6), "b": math.log(0.3)}
    assert _kl(same, same) == pytest.approx(0.0, abs=1e-9)
    assert _kl({"a": math.log(0.9)}, {"b": math.log(0.9)}) > 1.0
