"""Evaluation examples, the adapter registry and the generic JSONL adapter.

Every dataset becomes a list of :class:`Example` records: an ``id`` (unique, used to resume a run),
the ``input`` the system sees, optional ``reference`` text(s) and retrieved-style ``contexts``, and
every other named field in ``fields`` (labels, categories, spans …), which prompt templates and
metrics can use. An adapter is a function ``(path, **options) -> Iterable[Example]`` registered
under a name; suite files pick one with ``dataset: {adapter: NAME, path: ..., options: {...}}``.

This module knows nothing about models or metrics.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agentstack.errors import InvalidRequestError, NotFoundError


@dataclass
class Example:
    id: str
    input: str
    reference: str | list[str] | None = None
    contexts: list[str] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def references(self) -> list[str]:
        if self.reference is None:
            return []
        refs = [self.reference] if isinstance(self.reference, str) else list(self.reference)
        return [r for r in refs if r]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Example:
        return cls(id=str(d["id"]), input=d["input"], reference=d.get("reference"),
                   contexts=list(d.get("contexts") or []), fields=dict(d.get("fields") or {}))


Adapter = Callable[..., Iterable[Example]]
ADAPTERS: dict[str, Adapter] = {}


def register_adapter(name: str) -> Callable[[Adapter], Adapter]:
    """Decorator: make an adapter available to suite files under ``name``."""
    def deco(fn: Adapter) -> Adapter:
        ADAPTERS[name] = fn
        return fn
    return deco


def require_path(path: Path | str, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise NotFoundError(f"{what} not found at {p}", param="dataset.path",
                            fix="point dataset.path (or AGENTSTACK_EVALUATION__DATASETS_DIR) at the data")
    return p


def load_examples(adapter: str, path: Path | str, limit: int | None = None, **options: Any) -> list[Example]:
    """Run an adapter; checks that ids are unique (a resumed run relies on them)."""
    from agentstack.evaluation import datasets  # noqa: F401  (registers the built-in adapters)

    if adapter not in ADAPTERS:
        raise InvalidRequestError(f"unknown dataset adapter {adapter!r}; known: {', '.join(sorted(ADAPTERS))}",
                                  param="dataset.adapter", fix="use one of the listed adapters")
    try:
        examples = []
        for ex in ADAPTERS[adapter](Path(path), **options):
            examples.append(ex)
            if limit is not None and len(examples) >= limit:
                break
    except TypeError as exc:  # an unknown option
        raise InvalidRequestError(f"dataset adapter {adapter!r}: {exc}", param="dataset.options",
                                  fix="remove the option or check its name") from exc
    seen: set[str] = set()
    for ex in examples:
        if ex.id in seen:
            raise InvalidRequestError(f"dataset {path}: example id {ex.id!r} occurs twice", param="dataset",
                                      fix="give every example a unique id (fields: {id: ...})")
        seen.add(ex.id)
    return examples


def get_field(record: Any, dotted: str) -> Any:
    """``record["a"]["b"][0]`` for ``"a.b.0"``; ``None`` when any step is missing."""
    cur = record
    for part in dotted.split("."):
        if isinstance(cur, dict):
            cur = cur.get(part)
        elif isinstance(cur, list) and part.lstrip("-").isdigit() and -len(cur) <= int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return None
        if cur is None:
            return None
    return cur


def _as_text_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    out = []
    for v in value:
        out.append(v.get("text", json.dumps(v)) if isinstance(v, dict) else str(v))
    return out


@register_adapter("jsonl")
def jsonl(path: Path, fields: dict[str, str] | None = None, keep: list[str] | None = None) -> Iterable[Example]:
    """A JSONL file, one example per line. ``fields`` maps the example's slots to (dotted) keys of
    each record: ``{id: qid, input: question, reference: answers, contexts: passages}``; slots left
    out default to keys of the same name (the id to the line number). ``keep`` lists the record keys
    copied into ``Example.fields`` (default: all)."""
    path = require_path(path, "JSONL dataset")
    mapping = {"id": "id", "input": "input", "reference": "reference", "contexts": "contexts", **(fields or {})}
    unknown = set(mapping) - {"id", "input", "reference", "contexts"}
    if unknown:
        raise InvalidRequestError(f"jsonl fields: unknown slot(s) {sorted(unknown)}", param="dataset.options.fields",
                                  fix="map only id, input, reference and contexts")
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise InvalidRequestError(f"{path}:{lineno} is not valid JSON ({exc})", param="dataset.path") from None
            text = get_field(record, mapping["input"])
            if text is None:
                raise InvalidRequestError(f"{path}:{lineno} has no field {mapping['input']!r} for the input",
                                          param="dataset.options.fields",
                                          fix="map `input` to the record's field, e.g. fields: {input: question}")
            ident = get_field(record, mapping["id"])
            ref = get_field(record, mapping["reference"])
            extra = {k: v for k, v in record.items() if keep is None or k in keep}
            yield Example(id=str(ident if ident is not None else lineno), input=str(text),
                          reference=ref if isinstance(ref, str) or ref is None else _as_text_list(ref),
                          contexts=_as_text_list(get_field(record, mapping["contexts"])), fields=extra)
