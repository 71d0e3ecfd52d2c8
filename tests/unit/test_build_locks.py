"""Stale JIT build locks (a killed DeepSpeed op build) are removed; a build in progress keeps its lock."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agentstack.alignment.build_locks import clear_stale_build_locks, extensions_root

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

HOLD = """
import sys, time
from torch.utils.file_baton import FileBaton
baton = FileBaton(sys.argv[1])
assert baton.try_acquire()
print("holding", flush=True)
time.sleep(120)
"""


def _hold(path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_a_lock_no_process_holds_is_removed_in_both_layouts(tmp_path):
    # torch's default root has a build folder (py311_cpu/<op>); TORCH_EXTENSIONS_DIR has <op> directly.
    nested, flat = tmp_path / "py311_cpu" / "deepspeed_shm_comm" / "lock", tmp_path / "other_op" / "lock"
    for lock in (nested, flat):
        lock.parent.mkdir(parents=True)
        lock.touch()
    (nested.parent / "build.ninja").touch()
    assert sorted(clear_stale_build_locks(tmp_path, settle_s=0.05)) == sorted([nested, flat])
    assert not nested.exists() and not flat.exists() and (nested.parent / "build.ninja").exists()
    assert clear_stale_build_locks(tmp_path, settle_s=0.05) == []


def test_a_held_lock_is_kept_until_its_holder_is_killed(tmp_path):
    from torch.utils.file_baton import FileBaton

    lock = tmp_path / "py311_cpu" / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir(parents=True)
    holder = _hold(lock)
    try:
        assert clear_stale_build_locks(tmp_path, settle_s=0.05) == []
        assert lock.exists()
    finally:
        holder.kill()
        holder.wait()
    # What a killed build leaves: the lock, which torch's waiters poll for ever.
    assert lock.exists() and not FileBaton(str(lock)).try_acquire()
    assert clear_stale_build_locks(tmp_path, settle_s=0.05) == [lock]
    baton = FileBaton(str(lock))
    assert baton.try_acquire()
    baton.release()


def test_the_root_follows_torch_extensions_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert extensions_root() == tmp_path
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR")
    assert extensions_root().name == "torch_extensions"
    assert clear_stale_build_locks(tmp_path / "missing") == []
