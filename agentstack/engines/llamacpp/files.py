"""Writing the llama.cpp engine's cached files so that a killed process never leaves half a file.

:func:`build_once` builds a directory in a temporary sibling under a file lock and renames it into
place with its ``manifest.json`` written last (a directory with a manifest is complete);
:func:`write_gguf` finishes a ``gguf.GGUFWriter`` into a temporary file and renames it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

MANIFEST = "manifest.json"


def build_once(target: Path, build: Callable[[Path], dict[str, Any]], *, timeout: float = 900) -> Path:
    """``target``, built by ``build(tmp_dir)`` (which returns the manifest) unless already complete."""
    if (target / MANIFEST).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock", timeout=timeout):
        if (target / MANIFEST).is_file():  # another process finished while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            manifest = build(tmp)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
            if target.exists():  # an incomplete leftover without a manifest
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def write_gguf(writer: Any, tmp: Path, out: Path) -> None:
    """Write ``writer`` (opened on ``tmp``) and move the file to ``out``."""
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
