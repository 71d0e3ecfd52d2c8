"""Span-level matching for extraction tasks such as PII detection.

A span is ``(start, end, label)`` with character offsets, ``end`` exclusive (Presidio's
``start_position``/``end_position``). Two modes:

* ``exact``: same start and end;
* ``overlap``: the character ranges share at least ``min_overlap`` of the *shorter* span (any shared
  character by default).

With ``match_label=True`` the labels must agree too; with ``False`` only the location counts (the
"did we find the PII at all" view, and a scrubber that mislabels a name still hides it).
Matching is one-to-one: each gold span can be claimed by one prediction, so three predictions
covering one name give one true positive and two false positives. Pairs are taken greedily by
largest overlap first, which is optimal for the non-nested spans that occur in practice.

This module knows nothing about text or entity types beyond their names.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from agentstack.evaluation.metrics.classification import ClassificationReport, Counts, report_from_counts

Mode = Literal["exact", "overlap"]


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    label: str = ""

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"span end {self.end} is before its start {self.start}")

    @property
    def length(self) -> int:
        return self.end - self.start


def as_span(x: Span | tuple | dict) -> Span:
    if isinstance(x, Span):
        return x
    if isinstance(x, dict):
        start = x.get("start", x.get("start_position"))
        end = x.get("end", x.get("end_position"))
        label = x.get("label", x.get("entity_type", ""))
        return Span(int(start), int(end), str(label or ""))
    start, end, *rest = x
    return Span(int(start), int(end), str(rest[0]) if rest else "")


def overlap(a: Span, b: Span) -> int:
    return max(0, min(a.end, b.end) - max(a.start, b.start))


def _matches(g: Span, p: Span, mode: Mode, match_label: bool, min_overlap: float) -> int:
    """0 for no match, else a positive weight (shared characters) used to order greedy pairing."""
    if match_label and g.label != p.label:
        return 0
    if mode == "exact":
        return max(1, g.length) if (g.start, g.end) == (p.start, p.end) else 0
    shared = overlap(g, p)
    shorter = min(g.length, p.length)
    if shared <= 0 or shorter <= 0:
        return 0
    return shared if shared / shorter >= min_overlap else 0


def match_spans(gold: Sequence, predicted: Sequence, mode: Mode = "exact", match_label: bool = True,
                min_overlap: float = 0.0) -> list[tuple[int, int]]:
    """One-to-one matched (gold index, predicted index) pairs."""
    if mode not in ("exact", "overlap"):
        raise ValueError(f"mode must be 'exact' or 'overlap', got {mode!r}")
    g = [as_span(x) for x in gold]
    p = [as_span(x) for x in predicted]
    candidates = []
    for i, gs in enumerate(g):
        for j, ps in enumerate(p):
            w = _matches(gs, ps, mode, match_label, min_overlap)
            if w:
                candidates.append((-w, i, j))
    candidates.sort()
    used_g: set[int] = set()
    used_p: set[int] = set()
    pairs = []
    for _, i, j in candidates:
        if i not in used_g and j not in used_p:
            used_g.add(i)
            used_p.add(j)
            pairs.append((i, j))
    return sorted(pairs)


def span_counts(gold: Sequence, predicted: Sequence, mode: Mode = "exact", match_label: bool = True,
                min_overlap: float = 0.0) -> dict[str, Counts]:
    """Per-label counts for one document. A false positive is charged to the predicted span's
    label, a false negative to the gold span's label. With ``match_label=False`` everything is
    pooled under the label ``"*"``."""
    g = [as_span(x) for x in gold]
    p = [as_span(x) for x in predicted]
    pairs = match_spans(g, p, mode, match_label, min_overlap)
    hit_g = {i for i, _ in pairs}
    hit_p = {j for _, j in pairs}
    tp: dict[str, int] = defaultdict(int)
    fp: dict[str, int] = defaultdict(int)
    fn: dict[str, int] = defaultdict(int)

    def key(s: Span) -> str:
        return s.label if match_label else "*"

    for i, j in pairs:
        tp[key(g[i])] += 1
    for j, s in enumerate(p):
        if j not in hit_p:
            fp[key(s)] += 1
    for i, s in enumerate(g):
        if i not in hit_g:
            fn[key(s)] += 1
    labels = set(tp) | set(fp) | set(fn)
    return {lab: Counts(tp[lab], fp[lab], fn[lab]) for lab in labels}


def span_report(documents: Iterable[tuple[Sequence, Sequence]], mode: Mode = "exact", match_label: bool = True,
                min_overlap: float = 0.0, beta: float = 1.0) -> ClassificationReport:
    """Per-label, micro and macro P/R/F-beta over many ``(gold spans, predicted spans)`` documents."""
    totals: dict[str, Counts] = defaultdict(Counts)
    for gold, predicted in documents:
        for label, c in span_counts(gold, predicted, mode, match_label, min_overlap).items():
            totals[label] = totals[label] + c
    return report_from_counts(dict(totals), beta)
