"""Stale build locks of torch's JIT extensions.

DeepSpeed compiles its ops on first use through ``torch.utils.cpp_extension.load`` (on the CPU:
the shared-memory collective op, at ``deepspeed.init_distributed``). torch serialises the build
with a bare lock file (``<extensions root>/<build folder>/<op>/lock``, created ``O_EXCL``) and every
other process polls until the file goes away, with no deadline. A build killed half way (a cancelled
job, a test timeout, a session that ended) leaves the file behind and every later DeepSpeed
training on the machine waits forever.

The process that holds the lock keeps it open until it removes it, so on Linux a lock that no
process has open is stale. :func:`clear_stale_build_locks` removes such locks before a trainer starts
(every rank calls it, see ``train.py``); a build in progress is left alone. It only sees the
processes of this machine (and this container): an extensions directory shared between machines
(an NFS home) needs ``TORCH_EXTENSIONS_DIR`` set to a local path on each, which torch's own
unlocked builds need anyway. It only removes locks this user owns.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger("agentstack.alignment.build_locks")


def extensions_root() -> Path:
    """Where torch builds JIT extensions: ``TORCH_EXTENSIONS_DIR`` or torch's per-user cache."""
    configured = os.environ.get("TORCH_EXTENSIONS_DIR")
    if configured:
        return Path(configured)
    from torch.utils.cpp_extension import get_default_build_root

    return Path(get_default_build_root())


def _holders(path: Path) -> list[int]:
    """PIDs of the processes with ``path`` open (those whose /proc this user may read), matched by
    device and inode (so a holder that sees the file through another mount counts too)."""
    try:
        st = path.stat()
    except OSError:
        return []
    target = (st.st_dev, st.st_ino)
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:  # gone, or another user's process
            continue
        for fd in fds:
            try:
                fd_st = os.stat(fd)
            except OSError:  # closed while we looked
                continue
            if (fd_st.st_dev, fd_st.st_ino) == target:
                pids.append(int(proc.name))
                break
    return pids


def _own_inode(path: Path) -> int | None:
    """The lock's inode when this user owns it, else None."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino if st.st_uid == os.getuid() else None


def clear_stale_build_locks(root: Path | None = None, *, settle_s: float = 1.0) -> list[Path]:
    """Remove the build locks under ``root`` that no process holds; return the removed paths.

    A lock counts as stale when no process has it open at two looks ``settle_s`` apart and it is
    the same file both times (a holder closes its lock an instant before removing it). Does
    nothing where ``/proc`` cannot be read (not Linux)."""
    root = extensions_root() if root is None else Path(root)
    if not Path("/proc/self/fd").is_dir() or not root.is_dir():
        return []
    locks = [p for p in [*root.glob("*/lock"), *root.glob("*/*/lock")] if p.is_file()]
    candidates = {p: inode for p in locks if (inode := _own_inode(p)) is not None and not _holders(p)}
    if not candidates:
        return []
    time.sleep(settle_s)
    removed = []
    for path, inode in candidates.items():
        if inode is None or _own_inode(path) != inode or _holders(path):
            continue
        try:
            path.unlink()
        except FileNotFoundError:  # another rank removed it first
            continue
        except OSError as e:
            log.warning("could not remove %s, a build lock no process holds (%s); remove it by hand if a "
                        "DeepSpeed run waits on it", path, e)
            continue
        log.warning("removed %s: a build lock no process holds (a JIT build of torch/DeepSpeed was killed "
                    "half way); the op is rebuilt", path)
        removed.append(path)
    return removed
