"""Vectorised random draws of the synthetic generator (each from a given numpy generator)."""

from __future__ import annotations

import numpy as np


def shuffled_labels(prefix: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Public string ids ``prefix + k`` for n objects, in a shuffled order."""
    return np.array([f"{prefix}{k}" for k in rng.permutation(n)], dtype=object)


def zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf-like weights (rank ** -exponent) over n objects in a random order, summing to 1."""
    weights = (rng.permutation(n) + 1.0) ** -exponent
    return weights / weights.sum()


def uniform_in(start: np.ndarray, end: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One uniform integer in [start, end) per row (segments must be non-empty)."""
    return start + np.floor(rng.random(len(start)) * (end - start)).astype(np.int64)


def weighted_in(
    cum: np.ndarray, start: np.ndarray, end: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """One index per row, drawn in [start, end) with the weights whose running sum is ``cum``."""
    lo = np.where(start > 0, cum[np.maximum(start - 1, 0)], 0.0)
    hi = cum[end - 1]
    idx = np.searchsorted(cum, lo + rng.random(len(start)) * (hi - lo), side="right")
    return np.clip(idx, start, end - 1)


def top_k_gumbel(logits: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k distinct columns per row, drawn without replacement with probabilities softmax(logits)."""
    keys = logits + rng.gumbel(size=logits.shape)
    return np.argsort(-keys, axis=1)[:, :k]
