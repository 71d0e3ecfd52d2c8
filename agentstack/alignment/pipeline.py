"""One alignment round, as the worker process runs it: data → (revisions) → reward model →
policy training → registry → gate.

:class:`Round` owns the round's directory (``<data_dir>/alignment/jobs/<job id>/``: ``data/`` with
the scrubbed JSONL, one directory per training run, ``log.txt``) and reports progress by updating
the job row. Torch work happens in child training processes (``launch.py``) and, for revisions and
the gate, through a local engine of the kind the server runs, serving the same weights in the same
format (base model + the served adapter + the candidate): with the llamacpp engine the candidate is
judged as the GGUF LoRA that will serve it, and the converter's version goes into ``gate.json``.
KL and perplexity are teacher-forced in torch, on the adapter as trained.

This module knows nothing about HTTP or about promotion (the server promotes, ``deploy.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from agentstack.alignment import launch
from agentstack.alignment.jobs import Job, JobStore
from agentstack.alignment.preferences import (
    Pair,
    PreferenceBuilder,
    PreferenceData,
    require,
    reward_pairs_from_unpaired,
)
from agentstack.alignment.registry import ModelRegistry, ModelVersion
from agentstack.alignment.spec import JobSpec
from agentstack.config import EngineSettings, Settings
from agentstack.storage.files import read_json

log = logging.getLogger(__name__)

DEFAULT_LR = {"dpo": 5e-5, "kto": 5e-5, "rlhf": 1e-5, "sft": 5e-5}
DEFAULT_BETA = {"dpo": 0.1, "kto": 0.1, "rlhf": 0.05}
METRIC_KEYS = ("step", "epoch", "loss", "grad_norm", "learning_rate", "rewards/chosen", "rewards/rejected",
               "rewards/margins", "rewards/accuracies", "kl", "reward", "reward_std", "accuracy", "margin",
               "mean_reward", "entropy")


def served_version(settings: Settings, base_name: str, db: Any) -> str:
    """The version the replicas serve now (``model_state`` in the database), else the base model."""
    from agentstack.state.records import ModelState

    return ModelState(db, settings.engine.served_model_name).get().active or base_name


class Round:
    def __init__(self, settings: Settings, job: Job, jobs: JobStore):
        from agentstack.db import open_db
        from agentstack.engines.embedded.weights import resolve_model_dir

        self.settings = settings
        self.job = job
        self.jobs = jobs
        self.spec = JobSpec.model_validate(job.spec)
        self.method = self.spec.method
        self.prefs = self.spec.preferences(settings)
        self.gate_settings = self.spec.gate_settings(settings)
        self.dir = jobs.job_dir(job.id)
        self.data_dir = self.dir / "data"
        self.registry = ModelRegistry(settings.registry_path)
        self.db = open_db(settings)
        base = settings.alignment.base_model or settings.engine.model
        if settings.engine.kind == "openai" and not settings.alignment.base_model:
            raise ValueError("engine.kind is openai: set alignment.base_model to a local copy of the served base "
                             "model (training and the gate need its weights)")
        self.base_spec = base
        model_dir, self.base_name = resolve_model_dir(base, settings.model_cache)
        self.model_dir = str(model_dir)
        self.current = served_version(settings, self.base_name, self.db)
        self.current_adapter = (str(self.registry.get(self.current).adapter_dir)
                                if self.current != self.base_name and self.registry.exists(self.current) else None)
        if self.current != self.base_name and self.current_adapter is None:
            log.warning("served version %s is not in this registry; comparing against the base model", self.current)
            self.current = self.base_name
        self.loop = asyncio.new_event_loop()
        self._engine: Any = None
        self._models: Any = None
        self.data = PreferenceData()
        self.sft_rows: list[dict[str, Any]] = []
        self.data_hash = ""
        self.summaries: dict[str, Any] = {}
        self.configs: dict[str, Any] = {}
        self.reward_accuracy: float | None = None

    # -- progress ------------------------------------------------------------------------------
    def stage(self, stage: str, **fields: Any) -> None:
        log.info("stage: %s", stage)
        self.jobs.update(self.job.id, stage=stage, only_if_active=True, **fields)

    def _metrics_poller(self, name: str, path: Path) -> Any:
        def poll() -> None:
            if not path.is_file():
                return
            rows = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
            history = [{k: r[k] for k in METRIC_KEYS if k in r} for r in rows if "loss" in r][-500:]
            metrics = dict(self.jobs.get(self.job.id).metrics or {})
            metrics[name] = {"history": history, **({"summary": self.summaries[name]} if name in self.summaries
                                                    else {})}
            metrics["latest"] = {"run": name, **(history[-1] if history else {})}
            self.jobs.update(self.job.id, metrics=metrics)
        return poll

    # -- local models (revisions, gate) ---------------------------------------------------------
    def engine(self) -> Any:
        if self._engine is None:
            from agentstack.compute import worker
            from agentstack.engines.embedded.engine import EmbeddedEngine

            a = self.settings.alignment
            worker().run(_set_threads, a.worker_threads)
            if self.settings.engine.kind == "llamacpp":
                from agentstack.engines.llamacpp.engine import LlamaCppEngine

                self._engine = LlamaCppEngine(EngineSettings(kind="llamacpp", model=self.settings.engine.model,
                                                             max_batch_size=16, max_running=16, max_queue=1024,
                                                             threads=a.worker_threads,
                                                             context_length=self.settings.engine.context_length),
                                              self.settings.model_cache)
            else:
                self._engine = EmbeddedEngine(EngineSettings(model=self.base_spec, device=a.device, max_batch_size=16,
                                                         max_running=64, max_queue=1024,
                                                         threads=a.worker_threads), self.settings.model_cache)
            self._engine.warm_up()
            if self.current_adapter:
                self.loop.run_until_complete(self._engine.load_adapter(self.current, Path(self.current_adapter)))
        return self._engine

    def models(self) -> Any:
        if self._models is None:
            from agentstack.alignment.measures import ModelSet
            from agentstack.compute import worker

            device = "cuda" if self._cuda() else "cpu"
            self._models = worker().run(ModelSet, self.model_dir, device=device)
            if self.current_adapter:
                worker().run(self._models.add, self.current, self.current_adapter)
        return self._models

    def _cuda(self) -> bool:
        if self.settings.alignment.device == "cpu":
            return False
        import torch

        return torch.cuda.is_available()

    # -- 1. data ------------------------------------------------------------------------------
    def prepare(self) -> None:
        from agentstack.feedback.privacy import purge_expired
        from agentstack.feedback.scrub import TextScrubber
        from agentstack.feedback.store import FeedbackStore

        purge_expired(self.db, self.settings.privacy.retention_days)
        d = self.spec.data
        scrubber = TextScrubber(self.settings, enabled=self.prefs.scrub_pii)
        builder = PreferenceBuilder(FeedbackStore(self.db), scrubber, self.prefs,
                                    modes=tuple(d.modes) if d.modes else None)
        since, until = self.spec.data_window.resolve(self.job.created_at)
        revisions: dict[str, str] = {}
        extra: list[Pair] = []
        if d.feedback and d.revisions:
            revisions = self._revise_thumbs_down(builder, since, until)
        if d.constitution:
            extra = self._constitution_pairs()
        data = builder.build(since, until, revisions=revisions, extra_pairs=extra, use_votes=d.feedback)
        for pair in data.pairs:
            if pair.source in ("revision", "constitution"):
                self.sft_rows.append({"prompt": pair.prompt, "completion": pair.chosen})
        if self.method == "sft":
            if len(self.sft_rows) < self.prefs.min_examples:
                from agentstack.alignment.preferences import InsufficientDataError

                raise InsufficientDataError(
                    f"too little data: an SFT round needs at least {self.prefs.min_examples} revisions "
                    f"(thresholds.min_examples), the model revised {len(self.sft_rows)}",
                    needed=self.prefs.min_examples, found=len(self.sft_rows),
                    fix="revise more answers (data.constitution.limit, data.revision_limit) or lower min_examples")
        else:
            require(self.method, data, self.prefs)
        hashes = data.write(self.data_dir)
        sft_text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in self.sft_rows)
        (self.data_dir / "sft.jsonl").write_text(sft_text, "utf-8")
        hashes["sft"] = hashlib.sha256(sft_text.encode()).hexdigest()
        self.data_hash = hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()
        self.data = data
        self.jobs.update(self.job.id, data={**data.stats, "sft_rows": len(self.sft_rows), "files": hashes,
                                            "content_hash": self.data_hash, "window": {"since": since, "until": until}})

    def _revise_thumbs_down(self, builder: PreferenceBuilder, since: float | None, until: float | None) -> dict[str, str]:
        from agentstack.alignment.constitution import load_constitution, revise_answers
        from agentstack.feedback.export import prompt_messages

        self.stage("revising")
        votes = [v for v in builder.votes(since, until) if v.feedback.rating == "down" and not v.feedback.correction]
        votes = votes[-self.spec.data.revision_limit:]
        items = [(v.response.id, builder.scrubber.messages(prompt_messages(v.response)),
                  builder.scrubber.text(v.response.answer) or "") for v in votes]
        if not items:
            return {}
        constitution = load_constitution(self.settings.alignment.constitution, self.settings.policies_dir)
        engine = self.engine()
        out = self.loop.run_until_complete(revise_answers(engine, self.current, items, constitution,
                                                          seed=self.spec.hyperparameters.seed))
        log.info("constitutional revisions: %d of %d thumbs-down answers changed", len(out), len(items))
        return out

    def _constitution_pairs(self) -> list[Pair]:
        from agentstack.alignment.constitution import constitutional_pairs, load_constitution
        from agentstack.alignment.gate import advbench_half, safety_paths

        self.stage("revising")
        c = self.spec.data.constitution
        assert c is not None
        path = c.path or safety_paths(self.settings, self.gate_settings)[0]
        prompts = advbench_half(path, "train")[: c.limit]
        constitution = load_constitution(self.settings.alignment.constitution, self.settings.policies_dir)
        rows, stats = self.loop.run_until_complete(constitutional_pairs(
            self.engine(), self.current, prompts, constitution, rounds=c.rounds, max_tokens=c.max_new_tokens,
            seed=c.seed))
        log.info("constitution: %s", stats)
        self.summaries["constitution"] = stats
        now = time.time()
        return [Pair(r["prompt"], r["revision"], r["original"], "constitution", at=now) for r in rows]

    # -- 2. training ----------------------------------------------------------------------------
    def _common(self, name: str, train_file: Path, **overrides: Any) -> dict[str, Any]:
        h = self.spec.hyperparameters
        a = self.settings.alignment
        init = self.current_adapter if h.init_from == "current" else None
        config = {"model_dir": self.model_dir, "output_dir": str(self.dir / name), "train_file": str(train_file),
                  "metrics_file": str(self.dir / name / "metrics.jsonl"), "init_adapter": init,
                  "max_steps": h.max_steps, "epochs": h.epochs, "batch_size": h.batch_size,
                  "grad_accum": h.grad_accum, "max_length": h.max_length, "lora_r": h.lora_r,
                  "lora_alpha": h.lora_alpha, "lora_dropout": h.lora_dropout, "lora_targets": h.lora_targets,
                  "seed": h.seed, "threads": a.worker_threads, "device": a.device, **overrides}
        (self.dir / name).mkdir(parents=True, exist_ok=True)
        return config

    def _launch(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        self.configs[name] = config
        metrics = Path(config["metrics_file"])
        with open(self.jobs.log_path(self.job.id), "a", encoding="utf-8") as log_file:
            summary = launch.run(config, self.dir / f"{name}.json", self.settings, log_file=log_file,
                                 launcher=self.spec.launcher.model_dump(), on_poll=self._metrics_poller(name, metrics))
        self.summaries[name] = summary
        self._metrics_poller(name, metrics)()
        return summary

    def _reward_pairs(self) -> tuple[list[Pair], list[Pair]]:
        data = self.data
        heldout_view = PreferenceData(unpaired=data.unpaired_heldout)
        if self.method == "dpo":
            return data.pairs, data.pairs_heldout
        if self.method == "kto":
            return reward_pairs_from_unpaired(data), reward_pairs_from_unpaired(heldout_view)
        return (data.pairs + reward_pairs_from_unpaired(data),
                data.pairs_heldout + reward_pairs_from_unpaired(heldout_view))

    def _wants_reward_model(self) -> bool:
        if self.method == "rlhf":
            return True
        scorer = self.gate_settings.win_rate_scorer
        train, held = self._reward_pairs() if self.method in ("dpo", "kto") else ([], [])
        return scorer in ("auto", "reward_model") and len(train) >= 2 and len(held) >= 1

    def train(self) -> None:
        h = self.spec.hyperparameters
        if self._wants_reward_model():
            self.stage("training_reward_model")
            train, held = self._reward_pairs()
            _write(self.data_dir / "rm_train.jsonl", [p.row() for p in train])
            _write(self.data_dir / "rm_heldout.jsonl", [p.row() for p in held])
            config = self._common("reward", self.data_dir / "rm_train.jsonl", method="reward",
                                  heldout_file=str(self.data_dir / "rm_heldout.jsonl"), init_adapter=None,
                                  max_steps=h.rm_max_steps, epochs=h.rm_epochs, learning_rate=h.rm_learning_rate)
            summary = self._launch("reward", config)
            self.reward_accuracy = (summary.get("heldout") or {}).get("accuracy")
        self.stage("training")
        lr = h.learning_rate or DEFAULT_LR[self.method]
        if self.method == "dpo":
            config = self._common("policy", self.data_dir / "pairs.jsonl", method="dpo", learning_rate=lr,
                                  beta=h.beta or DEFAULT_BETA["dpo"])
        elif self.method == "kto":
            config = self._common("policy", self.data_dir / "unpaired.jsonl", method="kto", learning_rate=lr,
                                  beta=h.beta or DEFAULT_BETA["kto"])
        elif self.method == "sft":
            config = self._common("policy", self.data_dir / "sft.jsonl", method="sft", learning_rate=lr)
        else:
            prompts = _unique_prompts([p.prompt for p in self.data.pairs] + [u.prompt for u in self.data.unpaired])
            _write(self.data_dir / "prompts.jsonl", [{"prompt": p} for p in prompts])
            config = self._common("policy", self.data_dir / "prompts.jsonl", method="rlhf", learning_rate=lr,
                                  beta=h.beta or DEFAULT_BETA["rlhf"], algorithm=h.rl_algorithm,
                                  reward_model_dir=str(self.dir / "reward" / "reward_model"),
                                  num_generations=h.num_generations, max_completion_length=h.max_completion_length,
                                  temperature=h.temperature)
        self._launch("policy", config)

    # -- 3. registry ----------------------------------------------------------------------------
    def register(self) -> ModelVersion:
        self.stage("registering")
        import importlib.metadata as md

        versions = {}
        for lib in ("torch", "transformers", "trl", "peft", "accelerate"):
            try:
                versions[lib] = md.version(lib)
            except md.PackageNotFoundError:
                versions[lib] = None
        base_manifest = read_json(Path(self.model_dir) / "manifest.json", {}) or {}
        since, until = self.spec.data_window.resolve(self.job.created_at)
        metadata = {
            "method": self.method, "job_id": self.job.id, "created_by": self.job.created_by,
            "base_model": {"name": self.base_name, "path": self.model_dir,
                           "source_sha256": base_manifest.get("source_sha256")},
            "parent_version": self.current, "init_from": self.spec.hyperparameters.init_from,
            "data_window": {"since": since, "until": until},
            "data": {"pairs": len(self.data.pairs), "unpaired": len(self.data.unpaired),
                     "heldout_pairs": len(self.data.pairs_heldout), "sft_rows": len(self.sft_rows),
                     "content_hash": self.data_hash, "stats": self.data.stats},
            "config": {"spec": self.spec.model_dump(mode="json"), "trainers": self.configs},
            "metrics": {name: {k: v for k, v in s.items() if k != "adapter"} for name, s in self.summaries.items()},
            "libraries": versions,
        }
        extra = {}
        if self.method == "rlhf":
            extra["reward_model"] = self.dir / "reward" / "reward_model"
        version = self.registry.register(self.dir / "policy" / "adapter", metadata, extra_dirs=extra)
        self.jobs.update(self.job.id, version=version.name)
        return version

    # -- 4. gate --------------------------------------------------------------------------------
    def gate(self, version: ModelVersion) -> dict[str, Any]:
        from agentstack.alignment.gate import Gate, safety_paths
        from agentstack.alignment.measures import BASE
        from agentstack.alignment.scorers import JudgeScorer, RewardScorer
        from agentstack.compute import worker

        self.stage("gating")
        engine = self.engine()
        self.loop.run_until_complete(engine.load_adapter(version.name, version.adapter_dir))
        models = self.models()
        worker().run(models.add, version.name, str(version.adapter_dir))
        scorer = None
        rm_dir = self.dir / "reward" / "reward_model"
        if rm_dir.is_dir():
            scorer = RewardScorer(self.model_dir, str(rm_dir), self.reward_accuracy, worker().arun)
        judge = JudgeScorer(engine, self.settings, self.settings.evaluation.judge_model or self.base_name)
        advbench, xstest = safety_paths(self.settings, self.gate_settings)
        gate = Gate(self.gate_settings, engine, models, advbench=advbench, xstest=xstest, judge=judge,
                    cache_dir=self.settings.registry_path / "gate_cache")
        prompts = _unique_prompts([p.prompt for p in self.data.pairs_heldout] +
                                  [u.prompt for u in self.data.unpaired_heldout])
        decision = self.loop.run_until_complete(gate.run(
            version.name, self.current, candidate_in_models=version.name,
            current_in_models=BASE if self.current == self.base_name else self.current,
            heldout_pairs=[p.row() for p in self.data.pairs_heldout], heldout_prompts=prompts, scorer=scorer))
        result = {**decision.as_dict(), "job_id": self.job.id, "thresholds": self.gate_settings.model_dump(mode="json")}
        if hasattr(engine, "served_format"):
            result["served_format"] = engine.served_format(version.name)
        self.registry.write_gate(version.name, result)
        metrics = dict(self.jobs.get(self.job.id).metrics or {})
        kl = next((c for c in decision.checks if c.name == "kl"), None)
        metrics["gate"] = {"kl_vs_current": kl.value if kl else None, "passed": decision.passed}
        self.jobs.update(self.job.id, gate=result, metrics=metrics)
        return result

    def run(self) -> dict[str, Any]:
        self.stage("preparing_data", current_version=self.current)
        self.prepare()
        self.train()
        version = self.register()
        return self.gate(version)

    def close(self) -> None:
        if self._engine is not None:
            self.loop.run_until_complete(self._engine.aclose())
        self.loop.close()


def _set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows), "utf-8")


def _unique_prompts(prompts: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    seen, out = set(), []
    for p in prompts:
        key = json.dumps(p, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out
