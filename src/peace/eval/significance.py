"""Paired per-user comparison of two rankers on the same test users.

Differences of a few thousandths of NDCG between models near popularity are noise until a paired
test says otherwise. :func:`paired_test` takes two models' per-user NDCG@10 on the same ranking
task (users in the same order) and returns the mean difference, a two-sided Wilcoxon signed-rank
p-value (:func:`scipy.stats.wilcoxon`) and a seeded paired-bootstrap 95% interval of the mean
difference. :func:`domain_mean_test` does the same for a mean over several domains' test users.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BOOTSTRAP_SAMPLES = 2000
BLOCK_ELEMENTS = 1 << 16  # resampled indices drawn per call: half a megabyte, in cache


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
    means = _bootstrap_means(diff, np.random.default_rng(seed))
    low, high = np.quantile(means, [0.025, 0.975])
    return PairedTest(float(diff.mean()), p, float(low), float(high), int(len(diff)))


def _bootstrap_means(diff: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The means of :data:`BOOTSTRAP_SAMPLES` resamples of ``diff`` (with replacement), drawn
    a block of resamples at a time: the same draws as one resample at a time, in fewer calls."""
    n = len(diff)
    block = max(1, BLOCK_ELEMENTS // n)
    means = np.empty(BOOTSTRAP_SAMPLES)
    for start in range(0, BOOTSTRAP_SAMPLES, block):
        stop = min(start + block, BOOTSTRAP_SAMPLES)
        means[start:stop] = diff[rng.integers(0, n, (stop - start, n))].mean(1)
    return means


def domain_mean_test(pairs: Sequence[tuple[np.ndarray, np.ndarray]], seed: int = 0) -> PairedTest:
    """Compare ``a`` and ``b`` on the mean over domains of their per-domain means.

    ``pairs`` holds, per domain, the per-user values of both (same users, same order). The
    statistic weighs every domain alike, as an average over a report's domains does: the mean over
    domains of each domain's mean difference. Its p-value is a seeded sign-flip randomisation
    test (under the null hypothesis a and b are exchangeable for each user, so each user's
    difference keeps or flips its sign at random), and its 95% interval a paired bootstrap that
    resamples users within each domain.
    """
    diffs = []
    for a, b in pairs:
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            raise ValueError(f"paired test: {a.shape} and {b.shape} users; pass the same users.")
        if len(a):
            diffs.append(a - b)
    if not diffs:
        return PairedTest(float("nan"), float("nan"), float("nan"), float("nan"), 0)
    observed = float(np.mean([d.mean() for d in diffs]))
    rng = np.random.default_rng(seed)
    flipped = np.zeros(BOOTSTRAP_SAMPLES)
    resampled = np.zeros(BOOTSTRAP_SAMPLES)
    for d in diffs:
        signs = rng.choice(np.array([-1.0, 1.0]), size=(BOOTSTRAP_SAMPLES, len(d)))
        flipped += (signs @ d) / len(d)
        idx = rng.integers(0, len(d), (BOOTSTRAP_SAMPLES, len(d)))
        resampled += d[idx].mean(1)
    flipped /= len(diffs)
    resampled /= len(diffs)
    # the observed statistic counts as one of the draws: p is never 0
    extreme = int(np.sum(np.abs(flipped) >= abs(observed) - 1e-12))
    p = (extreme + 1) / (BOOTSTRAP_SAMPLES + 1)
    low, high = np.quantile(resampled, [0.025, 0.975])
    return PairedTest(observed, float(p), float(low), float(high), int(sum(map(len, diffs))))
