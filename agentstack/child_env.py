"""The environment of every process agentstack starts (the alignment worker, trainers, ``accelerate
launch``): one allowlist, here, instead of a copy of the server's environment.

What passes: what a Python training process needs to run and find its hardware, caches and
libraries (``PATH``, ``HOME``, locale, temp dirs, ``PYTHONPATH``, ``CUDA_*``, ``NCCL_*``, thread
limits, the Hugging Face cache and offline flags, ``TORCH_*``, ``ACCELERATE_*``), and agentstack
settings that are not secrets (``AGENTSTACK_CONFIG`` and every ``AGENTSTACK_*`` variable naming a
non-secret setting). What does not: everything else, in particular API keys, the session secret,
salts, ``HF_TOKEN``, cloud credentials, database passwords, and whole settings sections given as
JSON (``AGENTSTACK_AUTH=...``), which may hold secrets. A child that needs a secret gets it
explicitly from its caller (``secrets=``), by name.

This module knows nothing about jobs or training.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache

PASS_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM", "TMPDIR", "TEMP", "TMP",
    "PYTHONPATH", "PYTHONHASHSEED", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONIOENCODING",
    "PYTHONWARNINGS", "PYTHONFAULTHANDLER", "VIRTUAL_ENV", "LD_LIBRARY_PATH",
    "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_DATASETS_CACHE", "HF_HUB_DISABLE_TELEMETRY",
    "TRANSFORMERS_OFFLINE", "TRANSFORMERS_CACHE", "TOKENIZERS_PARALLELISM", "SENTENCE_TRANSFORMERS_HOME",
    "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_RUNTIME_DIR",
    "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
    "CC", "CXX", "AGENTSTACK_CONFIG",
})
PASS_PREFIXES = ("LC_", "CUDA_", "NCCL_", "NVIDIA_", "OMP_", "MKL_", "KMP_", "GOMP_", "TORCH_", "PYTORCH_",
                 "TORCHINDUCTOR_", "TRITON_", "ACCELERATE_", "GLOO_", "HIP_", "ROCM_", "DS_")


@lru_cache(maxsize=1)
def _settings_vars() -> tuple[frozenset[str], frozenset[str]]:
    """(non-secret, secret) ``AGENTSTACK_*`` names of every leaf setting, from the settings tree:
    a setting is secret when its type holds a ``SecretStr`` (or API keys)."""
    from pydantic import BaseModel

    from agentstack.config import ENV_PREFIX, ApiKey, Settings

    public, secret = set(), set()

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            ann = info.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel) and ann is not ApiKey:
                walk(ann, f"{prefix}{name}__")
                continue
            shown = repr(ann)
            (secret if "SecretStr" in shown or "ApiKey" in shown else public).add(f"{ENV_PREFIX}{prefix}{name}".upper())

    walk(Settings, "")
    return frozenset(public), frozenset(secret)


def secret_setting_vars() -> frozenset[str]:
    """The ``AGENTSTACK_*`` names of settings that hold secrets (keys, salts, passwords)."""
    return _settings_vars()[1]


def passes(name: str) -> bool:
    """Does the variable ``name`` of the parent's environment reach a child?"""
    upper = name.upper()
    if upper in PASS_NAMES or upper.startswith(PASS_PREFIXES):
        return True
    return upper.startswith("AGENTSTACK_") and upper in _settings_vars()[0]


def child_environment(overrides: Mapping[str, str] | None = None, *, secrets: Mapping[str, str] | None = None,
                      parent: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process: the allowlisted part of ``parent`` (default: this
    process's), then ``overrides`` (non-secret settings such as thread limits), then ``secrets``:
    the secrets this child needs, passed by name and on purpose."""
    source = os.environ if parent is None else parent
    env = {k: v for k, v in source.items() if passes(k)}
    env.update(overrides or {})
    env.update(secrets or {})
    return env
