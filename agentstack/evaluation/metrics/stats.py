"""Summary statistics with uncertainty: means with bootstrap intervals, Wilson intervals for rates.

Every aggregate in an agentstack report carries its ``n``; a figure without it cannot be compared.
Bootstrap resampling uses a fixed seed, so the same scores always give the same interval.
This module knows nothing about what the numbers measure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

Z95 = 1.959963984540054


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion (successes may be fractional, e.g. ties as halves).
    For 8 of 10 it gives (0.490, 0.943)."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= n:
        raise ValueError(f"successes ({successes}) must lie in [0, n={n}]")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    ci95: tuple[float, float] | None

    def as_dict(self) -> dict:
        d = asdict(self)
        d["ci95"] = list(self.ci95) if self.ci95 is not None else None
        return d


def bootstrap_ci(values: Sequence[float], n_resamples: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean; ``None`` for fewer than two values."""
    if len(values) < 2:
        return None
    import numpy as np

    rng = np.random.default_rng(seed)
    arr = np.asarray(values, dtype=float)
    idx = rng.integers(0, len(arr), size=(n_resamples, len(arr)))
    means = arr[idx].mean(axis=1)
    alpha = (1 - level) / 2
    return (float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha)))


def summarize(values: Sequence[float | None]) -> Summary:
    """n, mean, sample std, range and a bootstrap 95% interval of the mean; ``None`` values (a
    failed judge, a missing reference) are left out and not counted in ``n``."""
    xs = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not xs:
        return Summary(0, None, None, None, None, None)
    n = len(xs)
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return Summary(n, mean, std, min(xs), max(xs), bootstrap_ci(xs))
