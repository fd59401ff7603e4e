"""Approximate maximum-inner-product search: the index that picks candidates from large
catalogues for ``recommend`` (faiss ``IndexIVFFlat`` when faiss is installed, else an inverted
file in numpy with a seeded k-means)."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np


def faiss_available() -> bool:
    """Whether ``import faiss`` works (the ``faiss-cpu`` wheel)."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


class InnerProductIndex:
    """Approximate maximum-inner-product search over ``[N, d]`` vectors (an inverted file).

    k-means (L2) cuts the vectors into ``n_lists`` lists, each vector goes to the list whose
    centroid has the largest inner product with it; a query probes the ``n_probe`` lists with the
    largest inner products with their centroids and ranks their members exactly.

    Args:
        vectors: ``[N, d]`` float32.
        n_lists: lists of the inverted file (default ``round(4 sqrt(N))``).
        n_probe: lists probed per query (default ``max(16, n_lists // 4)``).
        seed: k-means seed.
        backend: ``"faiss"`` (``IndexIVFFlat``), ``"numpy"`` or ``"auto"`` (faiss if installed).
    """

    def __init__(
        self,
        vectors: np.ndarray,
        n_lists: int | None = None,
        n_probe: int | None = None,
        seed: int = 0,
        backend: Literal["auto", "faiss", "numpy"] = "auto",
    ) -> None:
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        self.size, self.dim = x.shape
        self.n_lists = int(n_lists or max(1, min(self.size, round(4 * math.sqrt(self.size)))))
        self.n_probe = int(n_probe or max(16, self.n_lists // 4))
        self.n_probe = max(1, min(self.n_probe, self.n_lists))
        if backend == "auto":
            backend = "faiss" if faiss_available() else "numpy"
        self.backend = backend
        if backend == "faiss":
            import faiss

            quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(
                quantizer, self.dim, self.n_lists, faiss.METRIC_INNER_PRODUCT
            )
            index.cp.seed = seed
            index.cp.min_points_per_centroid = 1
            index.train(x)
            index.add(x)
            index.nprobe = self.n_probe
            self._faiss = index
            self._quantizer = quantizer
        elif backend == "numpy":
            self._vectors = x
            centroids = _kmeans(x, self.n_lists, seed)
            assign = np.concatenate(
                [np.argmax(x[s : s + 8192] @ centroids.T, axis=1) for s in range(0, len(x), 8192)]
            )
            order = np.argsort(assign, kind="stable")
            self._centroids = centroids
            self._members = order
            self._offsets = np.concatenate(
                [[0], np.cumsum(np.bincount(assign, minlength=self.n_lists))]
            )
        else:
            raise ValueError(f"backend {backend!r}: expected auto, faiss or numpy.")

    def search(self, query: np.ndarray, n: int) -> np.ndarray:
        """Rows of (approximately) the ``n`` largest inner products with ``query`` ``[d]``."""
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        n = int(min(n, self.size))
        if self.backend == "faiss":
            _, rows = self._faiss.search(q, n)
            rows = rows[0]
            return rows[rows >= 0].astype(np.int64)
        lists = np.argsort(-(self._centroids @ q[0]), kind="stable")[: self.n_probe]
        cand = np.concatenate(
            [self._members[self._offsets[c] : self._offsets[c + 1]] for c in lists]
        )
        if len(cand) == 0:
            return cand.astype(np.int64)
        scores = self._vectors[cand] @ q[0]
        if len(cand) > n:
            part = np.argpartition(-scores, n - 1)[:n]
            cand, scores = cand[part], scores[part]
        return cand[np.argsort(-scores, kind="stable")].astype(np.int64)


def _kmeans(
    x: np.ndarray, k: int, seed: int, iterations: int = 20, chunk: int = 8192
) -> np.ndarray:
    """Lloyd's k-means with a seeded random initialisation; empty clusters keep their centroid.

    Trained on at most ``256 k`` sampled points (as faiss does); distances in row chunks.
    """
    rng = np.random.default_rng(seed)
    if len(x) > 256 * k:
        x = x[rng.choice(len(x), size=256 * k, replace=False)]
    centroids = x[rng.choice(len(x), size=k, replace=False)].copy()
    for _ in range(iterations):
        c_sq = (centroids * centroids).sum(1)
        assign = np.concatenate(
            [
                np.argmin(c_sq[None, :] - 2 * x[s : s + chunk] @ centroids.T, axis=1)
                for s in range(0, len(x), chunk)
            ]
        )
        sums = np.zeros_like(centroids)
        np.add.at(sums, assign, x)
        counts = np.bincount(assign, minlength=k)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids
