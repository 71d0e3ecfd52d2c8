"""What an operator asks for when starting a round: ``POST /v1/admin/alignment/jobs`` and
``agentstack align run`` send a :class:`JobSpec`.

    {"method": "dpo",                          # dpo | kto | rlhf | sft
     "data_window": {"days": 30},              # or {"since": "2025-01-01T00:00:00Z", "until": ...}
     "data": {"revisions": false, "constitution": null},
     "hyperparameters": {"max_steps": 50, "beta": 0.1, "learning_rate": 5e-5},
     "thresholds": {"min_pairs": 50, "max_per_user": 50, "heldout_fraction": 0.1},
     "gate": {"max_kl": 0.15, "min_win_rate": 0.5},
     "promote": true}

``thresholds`` and ``gate`` override the server's ``alignment.preferences`` and ``alignment.gate``
settings field by field (same names, same bounds). Unknown fields are rejected (422).

This module knows nothing about how the job runs; it validates and resolves.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, create_model, model_validator

from agentstack.config import GateSettings, PreferenceSettings, Settings
from agentstack.errors import InvalidRequestError
from agentstack.strict import StrictModel

Method = Literal["dpo", "kto", "rlhf", "sft"]
METHODS: tuple[str, ...] = ("dpo", "kto", "rlhf", "sft")


def _optional(name: str, model: type[BaseModel]) -> type[BaseModel]:
    """``model`` with every field optional (None = use the settings' value)."""
    fields: dict[str, Any] = {}
    for field_name, info in model.model_fields.items():
        annotation = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
        fields[field_name] = (annotation | None, Field(default=None, description=info.description))
    return create_model(name, __base__=StrictModel, **fields)  # type: ignore[call-overload]


Thresholds = _optional("Thresholds", PreferenceSettings)
GateOverrides = _optional("GateOverrides", GateSettings)


class DataWindow(StrictModel):
    """Which votes a round reads, by the time each was last cast. ``days`` counts back from the
    job's start and is ignored when ``since`` is given. Timestamps: ISO 8601 or Unix seconds."""

    model_config = {"extra": "forbid"}

    since: datetime | float | None = Field(default=None, description="Earliest vote time (inclusive).")
    until: datetime | float | None = Field(default=None, description="Latest vote time (exclusive).")
    days: float | None = Field(default=None, gt=0, description="The last N days (when `since` is unset).")

    @staticmethod
    def _ts(value: datetime | float | None) -> float | None:
        if value is None:
            return None
        return value.timestamp() if isinstance(value, datetime) else float(value)

    def resolve(self, now: float | None = None) -> tuple[float | None, float | None]:
        now = time.time() if now is None else now
        since, until = self._ts(self.since), self._ts(self.until)
        if since is None and self.days is not None:
            since = now - self.days * 86400
        return since, until

    def check_order(self) -> None:
        """JSON Schema cannot compare two fields: checked on submit (400), see JobSpec.check."""
        since, until = self._ts(self.since), self._ts(self.until)
        if since is not None and until is not None and until <= since:
            raise InvalidRequestError(f"data_window.until ({self.until}) must be after since ({self.since})",
                                      param="data_window.until")


class ConstitutionData(StrictModel):
    """Offline constitutional pairs: the current model answers red-team prompts (the AdvBench
    train half), critiques and revises its answers against sampled principles; (revision,
    original) become preference pairs and the revisions SFT rows."""

    model_config = {"extra": "forbid"}

    dataset: Literal["advbench"] = Field(default="advbench", description="Red-team prompt set.")
    path: Path | None = Field(default=None, description="Folder of the set; unset = alignment.gate.advbench_path.")
    limit: int = Field(default=100, ge=1, le=10_000, description="Prompts taken from the train half.")
    rounds: int = Field(default=1, ge=1, le=4, description="Critique-revision rounds per answer.")
    max_new_tokens: int = Field(default=128, ge=8, le=1024, description="Tokens per generated answer, critique "
                                "or revision.")
    seed: int = Field(default=0, description="Seed for sampling principles.")


class DataSources(StrictModel):
    model_config = {"extra": "forbid"}

    feedback: bool = Field(default=True, description="Use the votes in the data window.")
    modes: list[Literal["plain", "rag", "react"]] | None = Field(default=None, description="Response modes "
                                                                  "used; unset = all.")
    revisions: bool = Field(default=False, description="Pair each thumbs-down answer without a correction with "
                            "its constitutional revision (generated by the current model).")
    revision_limit: int = Field(default=200, ge=1, description="Most thumbs-down answers revised per round.")
    constitution: ConstitutionData | None = Field(default=None, description="Add offline red-team pairs.")


class Hyperparameters(StrictModel):
    """Training knobs. Unset values take the method's defaults (see ``alignment/trainers/``)."""

    model_config = {"extra": "forbid"}

    max_steps: int | None = Field(default=None, ge=1, le=1_000_000, description="Optimizer steps; unset = "
                                  "`epochs` passes over the data.")
    epochs: float = Field(default=1.0, gt=0, le=100, description="Passes over the data when max_steps is unset.")
    learning_rate: float | None = Field(default=None, gt=0, le=1.0, description="AdamW learning rate.")
    beta: float | None = Field(default=None, gt=0, le=10.0, description="KL strength: DPO/KTO beta, RLOO/GRPO "
                               "KL coefficient (must be > 0: the policy is held to the reference).")
    batch_size: int = Field(default=4, ge=1, le=512, description="Examples per device per step.")
    grad_accum: int = Field(default=1, ge=1, le=512, description="Gradient accumulation steps.")
    max_length: int = Field(default=256, ge=16, le=32_768, description="Tokens per prompt + completion.")
    lora_r: int = Field(default=16, ge=1, le=512, description="LoRA rank.")
    lora_alpha: int = Field(default=32, ge=1, description="LoRA alpha.")
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="LoRA dropout.")
    lora_targets: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
                                    description="Module names that get LoRA adapters.")
    seed: int = Field(default=0, description="Seed for data order, LoRA init and sampling.")
    init_from: Literal["current", "base"] = Field(
        default="current", description="current: continue the served version's adapter, with the served version as "
        "the KL reference (LoRA shape settings then come from that adapter); base: a fresh LoRA on the base model, "
        "with the base model as the reference.")
    rl_algorithm: Literal["rloo", "grpo"] = Field(default="rloo", description="RLHF policy optimiser.")
    num_generations: int = Field(default=4, ge=2, le=64, description="RLHF: completions sampled per prompt.")
    max_completion_length: int = Field(default=64, ge=4, le=4096, description="RLHF: tokens per sampled "
                                       "completion.")
    temperature: float = Field(default=1.0, gt=0, le=2.0, description="RLHF: sampling temperature.")
    rm_max_steps: int | None = Field(default=None, ge=1, description="Reward model: optimizer steps; unset = "
                                     "rm_epochs.")
    rm_epochs: float = Field(default=1.0, gt=0, le=100, description="Reward model: passes over the pairs.")
    rm_learning_rate: float = Field(default=1e-4, gt=0, le=1.0, description="Reward model learning rate.")


# Launcher._machines in JSON Schema, so that /openapi.json says it too (a schema-valid launcher passes).
_LAUNCHER_RULES = {"allOf": [
    {"if": {"required": ["num_machines"], "properties": {"num_machines": {"minimum": 2}}},
     "then": {"required": ["main_process_ip", "main_process_port"],
              "properties": {"main_process_ip": {"type": "string"}, "main_process_port": {"type": "integer"},
                             "kind": {"not": {"const": "process"}}}},
     "else": {"properties": {"main_process_ip": {"type": "null"}}}}]}


class Launcher(StrictModel):
    """How training starts. Several machines: the job's worker is machine rank 0 and the address
    every other machine dials; each other machine joins with ``python -m agentstack.alignment.launch
    follow --machine-rank N <step config>`` (docs/alignment.md)."""

    model_config = {"extra": "forbid", "json_schema_extra": _LAUNCHER_RULES}

    kind: Literal["process", "accelerate"] | None = Field(default=None, description="Override alignment.launcher.")
    config_file: Path | None = Field(default=None, description="Override alignment.accelerate_config.")
    num_processes: int | None = Field(default=None, ge=1, description="Override alignment.num_processes; with "
                                      "several machines, the processes of all of them.")
    num_machines: int = Field(default=1, ge=1, le=1024, description="Machines the training spans (> 1 needs kind "
                              "accelerate, main_process_ip and main_process_port).")
    main_process_ip: str | None = Field(default=None, min_length=1, max_length=253,
                                        pattern=r"^[A-Za-z0-9]([A-Za-z0-9.:\-]*[A-Za-z0-9])?$",
                                        description="Address of machine rank 0 (this job's worker) that the "
                                        "others reach: an IP or a host name.")
    main_process_port: int | None = Field(default=None, ge=1024, le=65535, description="Rendezvous port on "
                                          "machine rank 0; unset = a free port (one machine only).")

    @model_validator(mode="after")
    def _machines(self) -> Launcher:
        if self.num_machines == 1:
            if self.main_process_ip is not None:
                raise ValueError("launcher.main_process_ip is only used with launcher.num_machines > 1")
            return self
        if self.kind == "process":
            raise ValueError(f"launcher.num_machines={self.num_machines} needs launcher.kind 'accelerate' "
                             "(one process cannot span machines)")
        missing = [f"launcher.{n}" for n in ("main_process_ip", "main_process_port") if getattr(self, n) is None]
        if missing:
            raise ValueError(f"launcher.num_machines={self.num_machines} needs {' and '.join(missing)}: rank 0's "
                             "address and port, which every machine dials")
        return self

    def check_processes(self) -> None:
        """A rule JSON Schema cannot say (a multiple of another field), checked on submit (400), see
        JobSpec.check."""
        if self.num_processes is not None and (self.num_processes < self.num_machines
                                               or self.num_processes % self.num_machines):
            raise InvalidRequestError(f"launcher.num_processes ({self.num_processes}) counts the processes of all "
                                      f"machines: it must be a multiple of launcher.num_machines "
                                      f"({self.num_machines})", param="launcher.num_processes")


# The cross-field rules of JobSpec._consistent, in JSON Schema, so that /openapi.json says them too.
_SPEC_RULES = {"allOf": [
    {"if": {"properties": {"method": {"const": "sft"}}, "required": ["method"]},
     "then": {"required": ["data"], "properties": {"data": {"anyOf": [
         {"required": ["revisions"], "properties": {"revisions": {"const": True}}},
         {"required": ["constitution"], "properties": {"constitution": {"type": "object"}}}]}}}},
    {"if": {"required": ["data"], "properties": {"data": {"required": ["feedback"],
                                                          "properties": {"feedback": {"const": False}}}}},
     "then": {"properties": {"data": {"required": ["constitution"],
                                      "properties": {"constitution": {"type": "object"}}}}}},
    {"if": {"required": ["method"], "properties": {"method": {"enum": ["kto", "rlhf"]}}},
     "then": {"properties": {"data": {"properties": {"feedback": {"const": True}}}}}},
]}


class JobSpec(StrictModel):
    model_config = {"extra": "forbid", "json_schema_extra": _SPEC_RULES}

    method: Method = Field(default="dpo", description="dpo (pairs, LoRA), kto (unpaired thumbs), rlhf (reward "
                           "model from thumbs + RLOO/GRPO with a KL penalty), sft (constitutional revisions).")
    data_window: DataWindow = Field(default_factory=DataWindow)
    data: DataSources = Field(default_factory=DataSources)
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    thresholds: Thresholds = Field(default_factory=Thresholds)  # type: ignore[valid-type]
    gate: GateOverrides = Field(default_factory=GateOverrides)  # type: ignore[valid-type]
    promote: bool | None = Field(default=None, description="Hot-swap the new version in when the gate passes "
                                 "it; unset = alignment.auto_promote.")
    launcher: Launcher = Field(default_factory=Launcher)
    note: str | None = Field(default=None, max_length=500, description="Free text kept with the job.")

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        if self.method == "sft" and not (self.data.revisions or self.data.constitution):
            raise ValueError("method 'sft' trains on constitutional revisions: set data.revisions or "
                             "data.constitution")
        if not self.data.feedback and not self.data.constitution:
            raise ValueError("data.feedback is false and data.constitution is unset: the round has no data")
        if self.method in ("kto", "rlhf") and not self.data.feedback:
            raise ValueError(f"method {self.method!r} learns from thumbs: data.feedback must be true")
        return self

    def check(self) -> None:
        """The rules JSON Schema cannot state (one field against another's value), checked when the
        job is submitted: InvalidRequestError (400) naming the field. Everything /openapi.json can
        say is said there (the model's validators: 422), so a schema-valid spec fails only here."""
        self.data_window.check_order()
        self.launcher.check_processes()

    # -- resolution against the settings -----------------------------------------------------------
    def preferences(self, settings: Settings) -> PreferenceSettings:
        base = settings.alignment.preferences.model_dump()
        base.update({k: v for k, v in self.thresholds.model_dump().items() if v is not None})
        return PreferenceSettings(**base)

    def gate_settings(self, settings: Settings) -> GateSettings:
        base = settings.alignment.gate.model_dump()
        base.update({k: v for k, v in self.gate.model_dump().items() if v is not None})
        return GateSettings(**base)

    def should_promote(self, settings: Settings) -> bool:
        return settings.alignment.auto_promote if self.promote is None else self.promote
