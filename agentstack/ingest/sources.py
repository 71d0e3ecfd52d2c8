"""Where documents come from: files and directories, walked recursively with include/exclude globs.

Globs are matched against the path relative to the source directory, with ``/`` separators:
``*`` and ``?`` stay within one path segment, ``**`` spans segments, and a pattern without ``/``
matches a name at any depth (``*.md``, ``.*``, ``node_modules``). A directory matching an
exclude pattern is not descended into.

This module knows nothing about file formats; :mod:`agentstack.ingest.loaders` reads the files.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_INCLUDE = ("*.txt", "*.text", "*.md", "*.markdown", "*.html", "*.htm", "*.pdf", "*.jsonl")
DEFAULT_EXCLUDE = (".*", "__pycache__", "node_modules")


@dataclass(frozen=True)
class Source:
    """A file or directory to ingest, with the metadata to attach to each of its documents."""

    path: Path
    include: tuple[str, ...] = DEFAULT_INCLUDE
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    metadata: dict[str, Any] = field(default_factory=dict)
    encoding: str = "utf-8"
    optional: bool = False  # a missing optional source is skipped, not reported


@functools.lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a path glob (see the module docstring) to a regular expression."""
    pattern = pattern.strip()
    while pattern.startswith("./"):
        pattern = pattern[2:]
    if "/" not in pattern.rstrip("/"):
        pattern = "**/" + pattern
    pattern = pattern.rstrip("/")
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == len(pattern):
            out.append("(?:/.*)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape("["))
                i += 1
            else:
                body = pattern[i + 1:end]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def matches(relpath: str, patterns: tuple[str, ...] | list[str]) -> bool:
    return any(glob_regex(p).match(relpath) for p in patterns)


def selected(relpath: str, source: Source) -> bool:
    """Whether a file at ``relpath`` (relative to the source directory) passes its globs."""
    return matches(relpath, source.include) and not matches(relpath, source.exclude)


def covers(source: Source, file: Path) -> bool:
    """Whether ``walk`` (or a file source) would yield ``file`` if it existed: the source's own
    file, or a file under its directory that passes its globs and lies in no excluded directory."""
    root = Path(os.path.abspath(source.path))
    if not root.is_dir():
        return file == root
    try:
        rel = file.relative_to(root).as_posix()
    except ValueError:
        return False
    parts = rel.split("/")
    if any(matches("/".join(parts[:i]), source.exclude) for i in range(1, len(parts))):
        return False  # walk() never descends into an excluded directory
    return selected(rel, source)


def walk(source: Source) -> Iterator[Path]:
    """Files under a directory source that pass its globs, in a stable (sorted) order."""
    root = source.path
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
        dirnames[:] = sorted(d for d in dirnames
                             if not matches(f"{rel_dir}/{d}".lstrip("/"), source.exclude))
        for name in sorted(filenames):
            rel = f"{rel_dir}/{name}".lstrip("/")
            if selected(rel, source):
                yield Path(dirpath) / name
