"""Confidence intervals: Wilson score intervals for shares, paired bootstrap for differences.

- `wilson_interval(successes, n)`: the Wilson score interval for a binomial proportion, in closed
  form: centre (x + z²/2) / (n + z²), half-width z √(x(n − x)/n + z²/4) / (n + z²), with z the
  two-sided normal quantile (1.96 for 95 %). Unlike the normal (Wald) interval it stays inside
  [0, 1] and is not empty at 0 or n successes, which matters at the small counts a CPU run gives.
  n = 0 gives (nan, nan).
- `paired_bootstrap(a, b, ...)`: the percentile bootstrap interval of mean(a − b) where a[i] and
  b[i] belong to the same problem: problems are resampled with replacement (the pair stays
  together), so problem difficulty, shared by both methods, cancels out of the spread.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """(low, high) of the Wilson score interval for `successes` out of `n`."""
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, n]; got {successes} of {n}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    z2 = z * z
    centre = (successes + z2 / 2) / (n + z2)
    half = z * math.sqrt(successes * (n - successes) / n + z2 / 4) / (n + z2)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(mean difference, low, high): percentile bootstrap of mean(a - b), paired by position."""
    first = np.asarray(a, dtype=float)
    second = np.asarray(b, dtype=float)
    if first.shape != second.shape:
        raise ValueError(f"paired samples differ in length: {first.shape} vs {second.shape}")
    if first.size == 0:
        return math.nan, math.nan, math.nan
    differences = first - second
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, differences.size, size=(n_resamples, differences.size))
    means = differences[picks].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(differences.mean()), float(low), float(high)
