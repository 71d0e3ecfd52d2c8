"""Index specs: ``indexes/<name>.yaml`` says what an index holds and how it is built.

```yaml
description: The project's own documentation
sources:
  - path: ../docs            # relative paths are relative to the spec file
    include: ["*.md"]        # default: every supported format
    exclude: ["drafts/**"]
    metadata: {kind: docs}
  - {path: ../README.md, optional: true}
chunking: {chunk_tokens: 200, overlap_tokens: 32, markdown_headings: true}
embedder: {model: null}      # null = settings.embedder.model
vectors: {kind: flat}        # flat | ivf | hnsw
pii: {enabled: true, policy: null, overrides: {}}
limits: {max_file_bytes: 20971520}
```

Specs are looked up in ``settings.indexes_dir``, else the shipped ``indexes/`` folder (bundled in
the wheel as ``agentstack/_bundled/indexes``, with the docs beside it so ``../docs`` still resolves).
A copy of the resolved spec is stored in each index's folder, so an index keeps working when its
spec file moves. This module only describes and validates; it builds nothing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from agentstack.errors import ConfigError, InvalidRequestError
from agentstack.ingest.chunking import ChunkingConfig
from agentstack.ingest.loaders import DEFAULT_MAX_BYTES
from agentstack.ingest.sources import DEFAULT_EXCLUDE, DEFAULT_INCLUDE, Source

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name) or name.endswith(".yaml"):
        raise InvalidRequestError(f"invalid index name {name!r}", param="name",
                                  fix="use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    return name


class SourceSpec(BaseModel):
    model_config = {"extra": "forbid"}

    path: str = Field(description="File or directory; relative to the spec file's folder.")
    include: list[str] = Field(default_factory=lambda: list(DEFAULT_INCLUDE),
                               description="Globs of files to read inside a directory.")
    exclude: list[str] = Field(default_factory=lambda: list(DEFAULT_EXCLUDE), description="Globs to skip.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Metadata added to each document.")
    encoding: str = Field(default="utf-8", description="Text encoding of the files.")
    optional: bool = Field(default=False, description="Skip silently when the path does not exist.")

    def to_source(self, base: Path) -> Source:
        path = Path(self.path).expanduser()
        if not path.is_absolute():
            path = (base / path).resolve()
        return Source(path, tuple(self.include), tuple(self.exclude), dict(self.metadata), self.encoding,
                      self.optional)


class ChunkingSpec(BaseModel):
    model_config = {"extra": "forbid"}

    chunk_tokens: int = Field(default=200, ge=8, le=8192, description="Largest chunk, in embedder tokens.")
    overlap_tokens: int = Field(default=32, ge=0, description="Tokens shared by neighbouring chunks.")
    markdown_headings: bool = Field(default=True, description="Split Markdown/HTML at headings first.")

    @model_validator(mode="after")
    def _overlap(self) -> ChunkingSpec:
        if self.overlap_tokens >= self.chunk_tokens:
            raise ValueError(f"overlap_tokens ({self.overlap_tokens}) must be below chunk_tokens "
                             f"({self.chunk_tokens})")
        return self

    def config(self) -> ChunkingConfig:
        return ChunkingConfig(self.chunk_tokens, self.overlap_tokens, self.markdown_headings)


class EmbedderSpec(BaseModel):
    model_config = {"extra": "forbid"}

    model: str | None = Field(default=None, description="Local sentence-transformers directory; "
                              "null = settings.embedder.model (default all-MiniLM-L6-v2).")


class VectorSpec(BaseModel):
    model_config = {"extra": "forbid"}

    kind: Literal["flat", "ivf", "hnsw"] = Field(default="flat", description="flat: exact; ivf/hnsw: "
                                                 "approximate, for large collections.")
    nlist: int | None = Field(default=None, ge=1, description="ivf: inverted lists; null = 4*sqrt(n).")
    nprobe: int = Field(default=16, ge=1, description="ivf: lists searched per query.")
    min_train: int = Field(default=2000, ge=64, description="ivf: vectors needed before training; below "
                           "it the index stays flat (exact).")
    hnsw_m: int = Field(default=32, ge=4, le=128, description="hnsw: graph degree.")
    ef_construction: int = Field(default=80, ge=8, description="hnsw: build-time beam width.")
    ef_search: int = Field(default=64, ge=8, description="hnsw: query-time beam width.")


class PiiSpec(BaseModel):
    model_config = {"extra": "forbid"}

    enabled: bool = Field(default=True, description="Scrub PII before anything is chunked or stored.")
    policy: str | None = Field(default=None, description="Policy YAML; null = the default policies/pii.yaml.")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Deep-merged over the policy.")


class LimitsSpec(BaseModel):
    model_config = {"extra": "forbid"}

    max_file_bytes: int = Field(default=DEFAULT_MAX_BYTES, ge=1, description="Larger files are refused.")
    max_query_chars: int = Field(default=2000, ge=1, description="Longer queries are refused.")
    max_k: int = Field(default=100, ge=1, description="Largest top-k a search may ask for.")
    commit_every_chunks: int = Field(default=2048, ge=1, description="Chunks per committed index version "
                                     "during a long ingest.")


class IndexSpec(BaseModel):
    """A validated index spec. Source paths are resolved against ``base_dir``."""

    model_config = {"extra": "forbid"}

    description: str = Field(default="", description="Shown by `agentstack index list`.")
    sources: list[SourceSpec] = Field(default_factory=list, description="What to ingest.")
    chunking: ChunkingSpec = Field(default_factory=ChunkingSpec)
    embedder: EmbedderSpec = Field(default_factory=EmbedderSpec)
    vectors: VectorSpec = Field(default_factory=VectorSpec)
    pii: PiiSpec = Field(default_factory=PiiSpec)
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    base_dir: str | None = Field(default=None, description="Folder relative source paths resolve against "
                                 "(set from the spec file's location).")

    @field_validator("sources", mode="before")
    @classmethod
    def _paths_as_sources(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"path": s} if isinstance(s, str) else s for s in v]
        return v

    def resolved_sources(self) -> list[Source]:
        base = Path(self.base_dir) if self.base_dir else Path.cwd()
        return [s.to_source(base) for s in self.sources]

    def with_paths(self, paths: list[str | Path]) -> IndexSpec:
        """A copy whose sources are ``paths`` (absolute), with this spec's include/exclude defaults."""
        sources = [SourceSpec(path=str(Path(p).expanduser().resolve())) for p in paths]
        return self.model_copy(update={"sources": sources})


def parse_spec(raw: Any, *, where: str, base_dir: Path | None) -> IndexSpec:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"index spec {where} must be a mapping, got {type(raw).__name__}",
                          fix="see docs/ingestion.md for the spec format")
    raw = {k: v for k, v in raw.items() if k != "name"}
    if base_dir is not None and not raw.get("base_dir"):
        raw["base_dir"] = str(base_dir.resolve())
    try:
        return IndexSpec.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in e['loc']) or '(spec)'} = {e.get('input')!r}: {e['msg']}"
                 for e in exc.errors()]
        raise ConfigError(f"invalid index spec {where}:\n  " + "\n  ".join(lines),
                          fix="correct the fields named above (see docs/ingestion.md)") from None


def load_spec(path: Path | str) -> IndexSpec:
    """Read and validate a spec file; relative source paths resolve against its folder."""
    path = Path(path).expanduser()
    try:
        raw = yaml.safe_load(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"index spec {path} does not exist", fix="create it or pass another --spec") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"index spec {path} is not valid YAML: {exc}", fix="correct the YAML") from None
    return parse_spec(raw, where=str(path), base_dir=path.parent)


def specs_dir(indexes_dir: Path | None) -> Path | None:
    """``settings.indexes_dir`` or the shipped ``indexes/`` folder (None if neither exists)."""
    from agentstack.resources import resource_dir

    try:
        return resource_dir("indexes", indexes_dir)
    except ConfigError:
        if indexes_dir is not None:
            raise
        return None


def find_spec(name: str, indexes_dir: Path | None) -> Path | None:
    """The spec file ``<name>.yaml`` in the specs folder, if there is one."""
    folder = specs_dir(indexes_dir)
    if folder is None:
        return None
    for suffix in (".yaml", ".yml"):
        if (folder / f"{name}{suffix}").is_file():
            return folder / f"{name}{suffix}"
    return None
