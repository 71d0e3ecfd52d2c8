"""Suite files: a dataset, a system under test, metrics and judges, in YAML.

Example (``bench/suites/ntrex_en_de.yaml``)::

    name: ntrex-en-de
    dataset:
      adapter: ntrex                      # or jsonl with fields: {id: ..., input: ..., reference: ...}
      path: "{datasets}/summarization_translation/ntrex"
      options: {target: deu}
    system:
      kind: plain                         # any key of agentstack.evaluation.systems.SYSTEMS
      prompt: "Translate into {target_language}:\\n\\n{input}"
      params: {max_tokens: 160}
    metrics: [bleu, chrf]
    judges: [fluency, similarity]

``{datasets}`` in a dataset path is the ``evaluation.datasets_dir`` setting (``../shared/data``
by default); any other relative path is relative to the suite file.

This module knows nothing about engines or how a run proceeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agentstack.errors import InvalidRequestError, NotFoundError
from agentstack.evaluation.judges.rubrics import RUBRICS


class DatasetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    adapter: str = Field(default="jsonl", description="Adapter name (see agentstack.evaluation.datasets).")
    path: str = Field(description="File or directory; `{datasets}` = the evaluation.datasets_dir setting.")
    options: dict[str, Any] = Field(default_factory=dict, description="Adapter keyword arguments.")


class JudgeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, description="Judge model version; unset = evaluation.judge_model "
                              "or the engine's base model.")
    structured: bool | None = Field(default=None, description="Force structured output on/off; unset = use it "
                                    "when the engine supports it.")
    question: str = Field(default="{input}", description="Template of the QUESTION the judges see.")
    max_chars: int = Field(default=3000, ge=100, description="Characters kept per judge input.")
    max_context_chars: int = Field(default=12000, ge=100, description="Characters of context kept.")


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="Names the run and its report.")
    description: str = ""
    dataset: DatasetSpec
    system: dict[str, Any] = Field(default_factory=lambda: {"kind": "plain"})
    metrics: list[str | dict[str, Any]] = Field(default_factory=list)
    judges: list[str] = Field(default_factory=list, description=f"Any of: {', '.join(RUBRICS)}.")
    judge: JudgeOptions = Field(default_factory=JudgeOptions)
    group_by: str | None = Field(default=None, description="Example field to break every metric down by.")
    concurrency: int | None = Field(default=None, ge=1, le=256, description="Overrides evaluation.concurrency.")

    @field_validator("judges")
    @classmethod
    def _known_judges(cls, v: list[str]) -> list[str]:
        unknown = [j for j in v if j not in RUBRICS]
        if unknown:
            raise ValueError(f"unknown judge(s) {unknown}; known: {', '.join(RUBRICS)}")
        return v

    def identity(self) -> dict[str, Any]:
        """What defines the run (used in its id): everything but prose and concurrency."""
        return self.model_dump(exclude={"description", "concurrency"})


def load_suite(path: Path | str) -> Suite:
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"suite file {path} does not exist", param="suite",
                            fix="give the path of a suite YAML file, e.g. bench/suites/ntrex_en_de.yaml")
    try:
        data = yaml.safe_load(path.read_text("utf-8"))
    except yaml.YAMLError as exc:
        raise InvalidRequestError(f"suite {path} is not valid YAML: {exc}", param="suite") from None
    if not isinstance(data, dict):
        raise InvalidRequestError(f"suite {path} must be a mapping with name, dataset and system", param="suite")
    try:
        return Suite.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidRequestError(f"suite {path}: {problems}", param="suite",
                                  fix="correct the named fields (see docs/evaluation.md)") from None


def dataset_path(suite: Suite, suite_dir: Path, datasets_dir: Path) -> Path:
    raw = suite.dataset.path
    if "{datasets}" in raw:
        return Path(raw.replace("{datasets}", str(datasets_dir))).expanduser()
    p = Path(raw).expanduser()
    return p if p.is_absolute() else suite_dir / p
