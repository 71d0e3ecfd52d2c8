"""The model registry: every trained result is a versioned model under ``settings.registry_path``.

    registry/                     a volume every replica (and vLLM) can read
      versions/
        v3-dpo/
          adapter/                adapter_config.json + adapter_model.safetensors (no pickle)
          reward_model/           (RLHF rounds) the reward model's adapter and score head
          metadata.json           base model, method, data window and counts, config, metrics
          manifest.json           written last: every file's SHA-256 and size, the content hash
          gate.json               the gate's decision with its numbers (added after the gate runs)

A version is built in ``versions/.tmp-*`` and renamed into place after its manifest is written,
so a directory named like a version always has a manifest and a killed registration leaves only a
temporary directory, removed by the next registration. ``verify`` recomputes the hashes.
Version names are ``v<N>-<method>``, N increasing, allocated under a file lock.

The served version and the deployment history are not files here: they live in the main database
(``model_state`` and ``deployments``, see ``state/records.py``), so every replica agrees on them;
``agentstack db migrate`` carries the ``active.json`` and ``deployments.jsonl`` of earlier releases
over. This module knows nothing about engines or serving; promotion lives in ``deploy.py``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from agentstack.errors import ConflictError, InvalidRequestError, NotFoundError
from agentstack.storage.files import atomic_write_json, fsync_dir, read_json

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
METADATA = "metadata.json"
GATE = "gate.json"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
NAME = re.compile(r"^v(\d+)-[a-z0-9]+$")


@dataclass
class ModelVersion:
    name: str
    path: Path
    metadata: dict[str, Any]
    manifest: dict[str, Any]

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def reward_model_dir(self) -> Path | None:
        d = self.path / "reward_model"
        return d if d.is_dir() else None

    @property
    def gate(self) -> dict[str, Any] | None:
        return read_json(self.path / GATE, None)

    @property
    def number(self) -> int:
        m = NAME.match(self.name)
        return int(m.group(1)) if m else 0

    def summary(self) -> dict[str, Any]:
        gate = self.gate
        md = self.metadata
        return {"version": self.name, "method": md.get("method"), "created_at": self.manifest.get("created_at"),
                "base_model": md.get("base_model", {}).get("name"), "parent_version": md.get("parent_version"),
                "job_id": md.get("job_id"), "data_window": md.get("data_window"),
                "data": {k: md.get("data", {}).get(k) for k in ("pairs", "unpaired", "content_hash")},
                "metrics": md.get("metrics", {}), "content_hash": self.manifest.get("content_hash"),
                "gate": None if gate is None else {"passed": gate.get("passed"), "at": gate.get("at"),
                                                   "summary": gate.get("summary")},
                "path": str(self.path)}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def content_hash(files: dict[str, dict[str, Any]]) -> str:
    lines = "\n".join(f"{name}:{info['sha256']}" for name, info in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


class ModelRegistry:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.versions_dir = self.root / "versions"

    def _lock(self) -> FileLock:
        self.root.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.root / ".registry.lock"), timeout=120)

    # -- writing ----------------------------------------------------------------------------------
    def register(self, adapter_dir: Path, metadata: dict[str, Any], *,
                 extra_dirs: dict[str, Path] | None = None) -> ModelVersion:
        """Copy a trained adapter (and e.g. ``{"reward_model": dir}``) into a new version."""
        adapter_dir = Path(adapter_dir)
        missing = [f for f in ADAPTER_FILES if not (adapter_dir / f).is_file()]
        if missing:
            raise InvalidRequestError(f"{adapter_dir} is not a safetensors LoRA adapter (missing {missing})",
                                      fix="save the adapter with peft's save_pretrained(safe_serialization=True)")
        method = re.sub(r"[^a-z0-9]", "", str(metadata.get("method", "model")).lower()) or "model"
        with self._lock():
            self.versions_dir.mkdir(parents=True, exist_ok=True)
            self._clean_temp()
            number = max([v.number for v in self.list()] + [0]) + 1
            name = f"v{number}-{method}"
            tmp = self.versions_dir / f".tmp-{name}-{secrets.token_hex(4)}"
            tmp.mkdir()
            try:
                files: dict[str, dict[str, Any]] = {}
                self._copy(adapter_dir, tmp / "adapter", ADAPTER_FILES, files, "adapter")
                for sub, src in (extra_dirs or {}).items():
                    names = tuple(p.name for p in Path(src).iterdir() if p.is_file() and p.suffix in
                                  (".json", ".safetensors", ".txt", ".jinja"))
                    self._copy(Path(src), tmp / sub, names, files, sub)
                metadata = {**metadata, "version": name}
                meta_path = tmp / METADATA
                meta_path.write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str) + "\n", "utf-8")
                _fsync(meta_path)
                files[METADATA] = {"sha256": _sha256(meta_path), "size": meta_path.stat().st_size}
                manifest = {"version": name, "created_at": time.time(), "files": files,
                            "content_hash": content_hash(files), "format": 1}
                atomic_write_json(tmp / MANIFEST, manifest)  # last: its presence means complete
                os.rename(tmp, self.versions_dir / name)
                fsync_dir(self.versions_dir)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        log.info("registered model version %s", name)
        return self.get(name)

    @staticmethod
    def _copy(src: Path, dst: Path, names: tuple[str, ...], files: dict[str, dict[str, Any]], prefix: str) -> None:
        dst.mkdir(parents=True, exist_ok=True)
        for fname in names:
            target = dst / fname
            shutil.copyfile(src / fname, target)
            _fsync(target)
            files[f"{prefix}/{fname}"] = {"sha256": _sha256(target), "size": target.stat().st_size}
        fsync_dir(dst)

    def _clean_temp(self) -> None:
        for leftover in self.versions_dir.glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def write_gate(self, name: str, decision: dict[str, Any]) -> None:
        version = self.get(name)
        atomic_write_json(version.path / GATE, decision)

    # -- reading ----------------------------------------------------------------------------------
    def list(self) -> list[ModelVersion]:
        if not self.versions_dir.is_dir():
            return []
        out = []
        for d in self.versions_dir.iterdir():
            if d.name.startswith(".") or not d.is_dir():
                continue
            manifest = read_json(d / MANIFEST, None)
            if manifest is None:
                continue
            out.append(ModelVersion(d.name, d, read_json(d / METADATA, {}), manifest))
        return sorted(out, key=lambda v: v.number)

    def exists(self, name: str) -> bool:
        return (self.versions_dir / name / MANIFEST).is_file() and bool(NAME.match(name))

    def get(self, name: str) -> ModelVersion:
        if not NAME.match(name or "") or not self.exists(name):
            raise NotFoundError(f"model version {name!r} is not in the registry", param="version",
                                fix="list versions with GET /v1/admin/models or `agentstack align models`")
        d = self.versions_dir / name
        return ModelVersion(name, d, read_json(d / METADATA, {}), read_json(d / MANIFEST, {}))

    def verify(self, name: str) -> ModelVersion:
        """The version, after checking every file against its manifest (ConflictError if not)."""
        version = self.get(name)
        bad = []
        for rel, info in version.manifest.get("files", {}).items():
            path = version.path / rel
            if not path.is_file() or _sha256(path) != info["sha256"]:
                bad.append(rel)
        if bad or content_hash(version.manifest.get("files", {})) != version.manifest.get("content_hash"):
            raise ConflictError(f"model version {name} does not match its manifest (changed or missing: {bad})",
                                fix="restore the files or retrain; a version is never modified after registration")
        return version
