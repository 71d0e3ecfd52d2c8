"""Adapters for the red-team and PII sets.

* ``advbench``: AdvBench ``harmful_behaviors.csv`` (goal, target) or ``harmful_strings.csv``;
  every prompt is harmful (``fields.label = "unsafe"``): a safe model refuses.
* ``xstest``: XSTest v2 ``xstest_prompts.csv``; ``label: safe`` keeps the 250 prompts that only
  sound unsafe (a model should comply), ``unsafe`` their 200 contrasts.
* ``bipia``: BIPIA email QA with an injected instruction placed in the email (the retrieved
  context): start, middle or end. BIPIA's own insertion code was not copied; this follows its
  description. ``attacks_per_context`` attacks per email, taken round-robin from the attack list.
* ``presidio``: presidio-research ``synth_dataset_v2.json``; ``fields.spans`` holds the gold PII
  spans (start, end exclusive, label), ready for :func:`~agentstack.evaluation.metrics.span_report`.

This module knows nothing about models or metrics.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from agentstack.evaluation.datasets.base import Example, register_adapter, require_path
from agentstack.evaluation.datasets.text_sets import _choice, _file


@register_adapter("advbench")
def advbench(path: Path, file: str = "behaviors") -> Iterator[Example]:
    _choice("file", file, ("behaviors", "strings"))
    csv_path = _file(path, f"harmful_{file}.csv", "AdvBench")
    with csv_path.open(encoding="utf-8", newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            text = row.get("goal") or row.get("target") or ""
            yield Example(id=f"advbench-{file}-{i}", input=text,
                          fields={"target": row.get("target"), "label": "unsafe"})


@register_adapter("xstest")
def xstest(path: Path, label: str = "all") -> Iterator[Example]:
    _choice("label", label, ("safe", "unsafe", "all"))
    csv_path = _file(path, "xstest*.csv", "XSTest")
    with csv_path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if label != "all" and row.get("label") != label:
                continue
            yield Example(id=f"xstest-{row['id']}", input=row["prompt"],
                          fields={k: row.get(k) for k in ("type", "label", "focus", "note")})


def _inject(context: str, attack: str, position: str) -> str:
    if position == "start":
        return f"{attack}\n\n{context}"
    if position == "end":
        return f"{context}\n\n{attack}"
    lines = context.split("\n")
    mid = len(lines) // 2
    return "\n".join(lines[:mid] + [attack] + lines[mid:])


@register_adapter("bipia")
def bipia(path: Path, split: str = "test", position: str = "end", attacks_per_context: int = 1) -> Iterator[Example]:
    """``position``: start | middle | end | none (no injection: the clean baseline)."""
    _choice("split", split, ("test", "train"))
    _choice("position", position, ("start", "middle", "end", "none"))
    root = require_path(path, "BIPIA data")
    emails = _file(root, f"email_{split}.jsonl", "BIPIA email")
    attacks_file = _file(root, f"text_attack_{split}.json", "BIPIA attacks")
    catalogue = json.loads(attacks_file.read_text("utf-8"))
    attacks = [(cat, text) for cat, texts in catalogue.items() for text in texts]
    per = 1 if position == "none" else max(1, int(attacks_per_context))
    with emails.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    for i, row in enumerate(rows):
        for j in range(per):
            category, attack = attacks[(i * per + j) % len(attacks)] if attacks else ("", "")
            injected = row["context"] if position == "none" else _inject(row["context"], attack, position)
            yield Example(id=f"bipia-{split}-{i}-{j}", input=row["question"], reference=row.get("ideal"),
                          contexts=[injected],
                          fields={"attack": None if position == "none" else attack,
                                  "attack_category": None if position == "none" else category,
                                  "position": position, "clean_context": row["context"]})


@register_adapter("presidio")
def presidio(path: Path) -> Iterator[Example]:
    file = _file(path, "synth_dataset*.json", "Presidio synthetic PII")
    records = json.loads(file.read_text("utf-8"))
    for i, rec in enumerate(records):
        spans = [{"start": s["start_position"], "end": s["end_position"], "label": s["entity_type"],
                  "value": s.get("entity_value")} for s in rec.get("spans", [])]
        yield Example(id=f"presidio-{i}", input=rec["full_text"], reference=rec.get("masked"),
                      fields={"spans": spans, "template_id": rec.get("template_id")})
