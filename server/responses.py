"""Response bodies of the main routes, as /openapi.json documents them.

Documentation, not filters: routes still build their dicts (FastAPI's ``response_model`` would drop
fields it does not know), and ``server/openapi.py`` attaches these schemas to the 200 answers. Every
model allows extra fields, so adding a field never breaks a client; what is listed is required.
The API fuzzer (tests/fuzz/api.py, check ``response_schema_conformance``) validates every real
answer against them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Usage(Open):
    prompt_tokens: int | None
    completion_tokens: int | None


class CompletionMessage(Open):
    role: Literal["assistant"]
    content: str | None


class Choice(Open):
    index: int
    message: CompletionMessage
    finish_reason: str | None
    logprobs: dict[str, Any] | None


class ChatCompletion(Open):
    """``POST /v1/chat/completions`` (JSON). ``rag:``/``react:`` models add ``sources`` and ``trace``."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    model_version: str | None
    choices: list[Choice]
    usage: Usage


class ModelCard(Open):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(Open):
    object: Literal["list"]
    data: list[ModelCard]


class Embedding(Open):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str


class EmbeddingList(Open):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: Open


class TokenCount(Open):
    count: int
    max_model_len: int


class AppAnswer(Open):
    """``POST /v1/chat`` and regenerate (JSON): the stored answer."""

    id: str
    conversation_id: str | None
    mode: Literal["plain", "rag", "react"]
    answer: str
    sources: list[dict[str, Any]]
    trace: list[dict[str, Any]]
    model_version: str | None
    usage: Open


class Vote(Open):
    id: str
    response_id: str
    rating: Literal["up", "down"]
    created: bool


class Who(Open):
    key_id: str
    role: Literal["app", "operator"]
    user_id: str
    indexes: list[str] | None
    csrf_token: str | None


class Listing(Open):
    object: Literal["list"]
    data: list[dict[str, Any]]


class Health(Open):
    status: Literal["ok"]


SCHEMAS: dict[tuple[str, str], type[BaseModel]] = {
    ("get", "/healthz"): Health,
    ("get", "/v1/models"): ModelList,
    ("get", "/v1/models/{model_id}"): ModelCard,
    ("post", "/v1/chat/completions"): ChatCompletion,
    ("post", "/tokenize"): TokenCount,
    ("post", "/v1/embeddings"): EmbeddingList,
    ("post", "/v1/chat"): AppAnswer,
    ("post", "/v1/chat/{response_id}/regenerate"): AppAnswer,
    ("post", "/v1/feedback"): Vote,
    ("post", "/v1/session"): Who,
    ("get", "/v1/session"): Who,
    ("get", "/v1/indexes"): Listing,
    ("get", "/v1/conversations"): Listing,
    ("get", "/v1/admin/alignment/jobs"): Listing,
    ("get", "/v1/admin/audit"): Listing,
    ("get", "/v1/admin/eval/reports"): Listing,
}
