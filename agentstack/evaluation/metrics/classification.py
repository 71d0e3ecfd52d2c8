"""Precision, recall, F1 and F-beta: per label, micro- and macro-averaged.

Works from labelled pairs (``y_true``/``y_pred``) or from per-label counts (true positives, false
positives, false negatives), which is what span matching produces. Conventions, stated because
libraries differ on them:

* a ratio whose denominator is 0 is 0.0 (no prediction of a label = precision 0 for it);
* macro averages the per-label figures over the labels that occur in the gold *or* the predictions;
* micro pools the counts over those labels first.

This module knows nothing about text, spans or models.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)


@dataclass(frozen=True)
class PRF:
    precision: float
    recall: float
    f: float
    support: int  # gold items (tp + fn)
    beta: float = 1.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def f_beta(precision: float, recall: float, beta: float = 1.0) -> float:
    """F-beta = (1 + b²)·P·R / (b²·P + R); beta > 1 weighs recall more."""
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    b2 = beta * beta
    return _ratio((1 + b2) * precision * recall, b2 * precision + recall)


def prf_from_counts(counts: Counts, beta: float = 1.0) -> PRF:
    p = _ratio(counts.tp, counts.tp + counts.fp)
    r = _ratio(counts.tp, counts.tp + counts.fn)
    return PRF(p, r, f_beta(p, r, beta), counts.tp + counts.fn, beta)


def counts_from_labels(y_true: Sequence[Hashable], y_pred: Sequence[Hashable]) -> dict[Hashable, Counts]:
    """Per-label counts for single-label classification: a wrong prediction is one false positive
    for the predicted label and one false negative for the true one."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} items but y_pred has {len(y_pred)}")
    tp: Counter = Counter()
    fp: Counter = Counter()
    fn: Counter = Counter()
    for t, p in zip(y_true, y_pred):
        if t == p:
            tp[t] += 1
        else:
            fp[p] += 1
            fn[t] += 1
    labels = set(tp) | set(fp) | set(fn)
    return {label: Counts(tp[label], fp[label], fn[label]) for label in labels}


@dataclass(frozen=True)
class ClassificationReport:
    per_label: dict[Hashable, PRF]
    micro: PRF
    macro: PRF

    def as_dict(self) -> dict:
        return {"per_label": {str(k): v.as_dict() for k, v in self.per_label.items()},
                "micro": self.micro.as_dict(), "macro": self.macro.as_dict()}


def report_from_counts(counts: Mapping[Hashable, Counts], beta: float = 1.0,
                       labels: Iterable[Hashable] | None = None) -> ClassificationReport:
    """Per-label, micro and macro figures. ``labels`` restricts (or extends) the label set; a label
    absent from ``counts`` counts as all zeros."""
    chosen = list(labels) if labels is not None else sorted(counts, key=str)
    per_label = {label: prf_from_counts(counts.get(label, Counts()), beta) for label in chosen}
    total = sum((counts.get(label, Counts()) for label in chosen), Counts())
    micro = prf_from_counts(total, beta)
    if per_label:
        k = len(per_label)
        mp = sum(x.precision for x in per_label.values()) / k
        mr = sum(x.recall for x in per_label.values()) / k
        mf = sum(x.f for x in per_label.values()) / k
    else:
        mp = mr = mf = 0.0
    macro = PRF(mp, mr, mf, total.tp + total.fn, beta)
    return ClassificationReport(per_label, micro, macro)


def classification_report(y_true: Sequence[Hashable], y_pred: Sequence[Hashable], beta: float = 1.0,
                          labels: Iterable[Hashable] | None = None) -> ClassificationReport:
    """Precision/recall/F-beta per label, micro and macro, for single-label predictions.

    Macro F is the mean of the per-label F values (not the F of the mean P and R)."""
    return report_from_counts(counts_from_labels(y_true, y_pred), beta, labels)


def binary_prf(y_true: Sequence[bool], y_pred: Sequence[bool], beta: float = 1.0) -> PRF:
    """P/R/F of the positive class (``True``)."""
    counts = counts_from_labels([bool(t) for t in y_true], [bool(p) for p in y_pred])
    return prf_from_counts(counts.get(True, Counts()), beta)
