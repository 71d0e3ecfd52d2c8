"""Win rate of system A against system B, with a 95% confidence interval.

Each comparison is a win for A, a loss, or a tie; a tie counts as half a win (the convention of
Chatbot Arena and AlpacaEval), so ``rate = (wins + ties / 2) / n``. The interval is the Wilson score
interval on that rate, which behaves at 0 and 1 and on small n where the normal approximation does
not. Outcomes can come from a pairwise judge, from per-example scores of both systems (a reward
model, a 1-5 judge, ROUGE), or from human labels.

This module knows nothing about how the outcomes were obtained.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from agentstack.evaluation.metrics.stats import wilson_interval

_OUTCOMES = {"a": 1.0, "win": 1.0, "b": 0.0, "loss": 0.0, "tie": 0.5}


@dataclass(frozen=True)
class WinRate:
    wins: int
    losses: int
    ties: int
    rate: float | None
    ci95: tuple[float, float] | None

    @property
    def n(self) -> int:
        return self.wins + self.losses + self.ties

    def significant(self) -> bool:
        """True when the interval excludes 0.5 (A and B differ at the 5% level)."""
        return self.ci95 is not None and (self.ci95[0] > 0.5 or self.ci95[1] < 0.5)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["n"] = self.n
        d["ci95"] = list(self.ci95) if self.ci95 is not None else None
        return d


def win_rate(outcomes: Iterable[str | float | None]) -> WinRate:
    """Outcomes: ``"a"``/``"win"``/1, ``"b"``/``"loss"``/0, ``"tie"``/0.5; ``None`` (no verdict, e.g.
    a judge parse failure) is skipped."""
    wins = losses = ties = 0
    for o in outcomes:
        if o is None:
            continue
        value = _OUTCOMES.get(o.lower()) if isinstance(o, str) else float(o)
        if value is None:
            raise ValueError(f"unknown outcome {o!r}; use 'a', 'b', 'tie' or 1, 0, 0.5")
        if value == 1.0:
            wins += 1
        elif value == 0.0:
            losses += 1
        elif value == 0.5:
            ties += 1
        else:
            raise ValueError(f"numeric outcomes must be 1, 0 or 0.5, got {o!r}")
    n = wins + losses + ties
    if n == 0:
        return WinRate(0, 0, 0, None, None)
    successes = wins + ties / 2
    return WinRate(wins, losses, ties, successes / n, wilson_interval(successes, n))


def outcomes_from_scores(scores_a: Sequence[float | None], scores_b: Sequence[float | None],
                         margin: float = 0.0) -> list[str | None]:
    """Paired scores → outcomes; a difference within ``margin`` is a tie; a missing score → None."""
    if len(scores_a) != len(scores_b):
        raise ValueError(f"{len(scores_a)} scores for A but {len(scores_b)} for B")
    out: list[str | None] = []
    for a, b in zip(scores_a, scores_b):
        if a is None or b is None:
            out.append(None)
        elif a - b > margin:
            out.append("a")
        elif b - a > margin:
            out.append("b")
        else:
            out.append("tie")
    return out


def win_rate_from_scores(scores_a: Sequence[float | None], scores_b: Sequence[float | None],
                         margin: float = 0.0) -> WinRate:
    """Win rate of A over B from paired per-example scores (reward model, judge, metric)."""
    return win_rate(outcomes_from_scores(scores_a, scores_b, margin))
