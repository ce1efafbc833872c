"""The few statistics a report states: 95% intervals of pass rates and mean +/- std over seeds."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: a two-sided 95% interval


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion successes / n.

    Unlike the normal (Wald) interval it stays inside [0, 1] and does not collapse to a point at 0 or n
    successes, which matters for the small per-category counts of a report.
    """
    if n <= 0:
        raise ValueError(f"n must be >= 1, got {n}")
    p = successes / n
    z2 = z * z
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def mean_of_rates_interval(successes: Sequence[float], counts: Sequence[int], z: float = Z95) -> tuple[float, float]:
    """95% interval of the unweighted mean of independent pass rates successes_c / n_c (GenEval's overall
    score is the mean over categories).

    With equal counts the mean of the rates is the pooled rate, and its Wilson interval is exact in the
    same sense as for one rate. Otherwise a normal interval on Agresti-Coull adjusted rates
    (k + z^2/2) / (n + z^2), whose variances stay positive at 0 or n successes (a plain normal interval
    would shrink to a point there).
    """
    if not counts or len(successes) != len(counts) or min(counts) < 1:
        raise ValueError("need one count >= 1 per rate")
    if len(set(counts)) == 1:
        return wilson_interval(sum(successes), sum(counts), z)
    z2 = z * z
    adjusted = [(k + z2 / 2) / (n + z2) for k, n in zip(successes, counts)]
    center = sum(adjusted) / len(adjusted)
    half = z * math.sqrt(sum(p * (1 - p) / (n + z2) for p, n in zip(adjusted, counts))) / len(adjusted)
    return max(0.0, center - half), min(1.0, center + half)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    if not values:
        raise ValueError("no values")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0
