"""Stale JIT build locks (a killed DeepSpeed op build) are removed; a build in progress keeps its lock."""

from __future__ import annotations

import os
import shutil
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


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_another_users_lock_is_left_alone(tmp_path):
    lock = tmp_path / "op" / "lock"
    lock.parent.mkdir()
    lock.touch()
    os.chown(lock, 12345, 12345)
    assert clear_stale_build_locks(tmp_path, settle_s=0.05) == [] and lock.exists()


PID1 = """
import os, subprocess, sys
from functools import partial
from agentstack.alignment.train import die_with_parent
assert os.getpid() == 1
print(subprocess.call([sys.executable, "-c", "print('child ran')"], preexec_fn=partial(die_with_parent, os.getpid())))
"""


def test_a_parent_that_is_pid_1_can_start_children_that_die_with_it():
    """A follower is often a container's command (PID 1); its launcher must still start."""
    unshare = shutil.which("unshare")
    probe = subprocess.run([unshare, "--pid", "--fork", "true"], capture_output=True) if unshare else None
    if probe is None or probe.returncode:
        pytest.skip("unshare --pid is not available here")
    out = subprocess.run([unshare, "--pid", "--fork", sys.executable, "-c", PID1], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.split() == ["child", "ran", "0"], out.stderr[-2000:]
