"""Child process for the index crash tests (run as a script, not collected by pytest).

    python index_crash_child.py DATA_DIR INDEX RUN MODE

Ingests a fresh version of 24 uploaded documents into INDEX (every run changes all of them, so
each commit retires and purges rows), then deletes one. It prints, unbuffered:
``START`` once imports are done, ``PHASE <point>`` at every fault-injection point,
``INGESTED <gen> <doc_id>...`` after each published version, ``DELETING <source>`` before the
delete, ``DELETED <gen> <doc_id>`` after it, and ``DONE``.

MODE ``kill``: just run (the parent kills it with SIGKILL at a random moment).
MODE ``fault:<point>``: end the process with ``os._exit`` at ``<point>`` of the second commit,
exactly as a crash there would (no cleanup, no ``finally``, no rollback).
"""

from __future__ import annotations

import os
import sys


def out(line: str) -> None:
    os.write(1, (line + "\n").encode())


def documents(run: int) -> list[tuple[str, bytes]]:
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
    files = []
    for i in range(24):
        body = " ".join(f"{words[(i + j + run) % 10]}{j}" for j in range(30))
        files.append((f"doc{i:02d}.txt", f"document {i} version {run}. {body}\n".encode()))
    return files


def main() -> None:
    data_dir, name, run, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    from agentstack.config import load_settings
    from agentstack.index import faults
    from agentstack.index.manager import IndexManager
    from agentstack.index.testing import HashEmbedder

    manager = IndexManager(load_settings(data_dir=data_dir), embedder=HashEmbedder())
    commit, last = 0, ""

    def hook(point: str) -> None:
        nonlocal commit, last
        out(f"PHASE {point}")
        if point == "sqlite_write" and last != "sqlite_write":
            commit += 1  # the first document written by a new commit
        last = point
        if mode.startswith("fault:") and point == mode[6:] and commit >= 2:
            os._exit(137)

    def progress(event: str, **info) -> None:
        if event == "committed":
            out(f"INGESTED {info['generation']} " + " ".join(info["documents"]))

    faults.set_hook(hook)
    out("START")
    manager.add_bytes(name, documents(run), progress=progress)
    victim = f"upload:doc{run % 24:02d}.txt"
    out(f"DELETING {victim}")  # from here the victim may be gone before DELETED is printed
    report = manager.delete(name, victim)
    out(f"DELETED {report.generation} {report.deleted[0]}")
    out("DONE")


if __name__ == "__main__":
    main()
