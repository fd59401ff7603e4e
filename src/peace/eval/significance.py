"""Paired per-user comparison of two rankers on the same test users.

Differences of a few thousandths of NDCG between models near popularity are noise until a paired
test says otherwise. :func:`paired_test` takes two models' per-user NDCG@10 on the same ranking
task (users in the same order) and returns the mean difference, a two-sided Wilcoxon signed-rank
p-value (:func:`scipy.stats.wilcoxon`) and a seeded paired-bootstrap 95% interval of the mean
difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOOTSTRAP_SAMPLES = 2000


@dataclass(frozen=True)
class PairedTest:
    """``a - b`` over users: mean, Wilcoxon p-value, bootstrap 95% interval, users."""

    mean: float
    p_value: float
    low: float
    high: float
    users: int

    @property
    def significant(self) -> bool:
        """The 95% interval excludes 0 and p < 0.05."""
        return self.p_value < 0.05 and (self.low > 0 or self.high < 0)


def paired_test(a: np.ndarray, b: np.ndarray, seed: int = 0) -> PairedTest:
    """Compare per-user values ``a`` and ``b`` (same users, same order)."""
    from scipy.stats import wilcoxon

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired test: {a.shape} and {b.shape} users; pass the same users.")
    diff = a - b
    if len(diff) == 0:
        return PairedTest(float("nan"), float("nan"), float("nan"), float("nan"), 0)
    if np.all(diff == 0):
        p = 1.0
    else:
        p = float(wilcoxon(diff, zero_method="zsplit", alternative="two-sided").pvalue)
    rng = np.random.default_rng(seed)
    means = np.empty(BOOTSTRAP_SAMPLES)
    for k in range(BOOTSTRAP_SAMPLES):
        means[k] = diff[rng.integers(0, len(diff), len(diff))].mean()
    low, high = np.quantile(means, [0.025, 0.975])
    return PairedTest(float(diff.mean()), p, float(low), float(high), int(len(diff)))
