"""The figures of ``REPORT.md``: the ablation bars (Figure 4) and t-SNE pictures of the entity
vectors coloured by their top prototype, with a coherence number (Figure 5).

Figures are drawn on matplotlib's Agg canvas without pyplot's global state and saved as PNG
without a timestamp, so the same inputs give the same files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from peace.eval.report.common import metric_label
from peace.eval.report.tables import Results

TSNE_MAX_POINTS = 2000
TOP_PROTOTYPES = 10
DPI = 110
BAR_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
# tab10 with its grey swapped for navy, so that grey means "other prototypes" only
PROTOTYPE_COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#393b79",
    "#bcbd22",
    "#17becf",
)
OTHER_COLOUR = "#b0b0b0"


def _pyplot_free_figure(figsize: tuple[float, float]) -> Any:
    """A matplotlib Figure on the Agg canvas (no global pyplot state)."""
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the report needs matplotlib and scikit-learn: pip install 'peace-rec[report]'"
        ) from exc
    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png", metadata={"Software": None})


def ablation_chart(res: Results, variants: Sequence[str], metric: str, path: Path) -> None:
    """Grouped bars like Figure 4: x = domains, one bar per variant, std as error bars."""
    domains = res.domains_in("normal")
    width = 0.8 / max(len(variants), 1)
    fig = _pyplot_free_figure((max(5.0, 1.4 * len(domains) + 2.5), 3.6))
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(domains), dtype=float)
    for i, variant in enumerate(variants):
        means, stds = [], []
        for d in domains:
            v = res.get(variant, "normal", d, metric)
            means.append(np.nan if v is None else v[0])
            stds.append(0.0 if v is None else v[1])
        ax.bar(
            x + (i - (len(variants) - 1) / 2) * width,
            means,
            width,
            yerr=stds,
            capsize=2,
            label=variant,
            color=BAR_COLOURS[i % len(BAR_COLOURS)],
            error_kw={"elinewidth": 0.8},
        )
    ax.set_xticks(x, domains)
    ax.set_ylabel(metric_label(metric))
    ax.set_title(f"Ablation, normal setting: {metric_label(metric)} (mean ± std over seeds)")
    ax.title.set_fontsize(9)
    ax.legend(
        fontsize=7,
        ncols=min(len(variants), 4),
        loc="upper center",
        bbox_to_anchor=(0.5, -0.12),
        frameon=False,
    )
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    fig.tight_layout()
    _save(fig, path)


def top_prototypes(entities: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    """Index of each entity's most similar prototype: ``argmax_j <p_j, h_e>``."""
    return np.asarray(np.argmax(entities @ prototypes.T, axis=1), dtype=np.int64)


def coherence(
    entities: np.ndarray, prototypes: np.ndarray, seed: int, max_points: int = TSNE_MAX_POINTS
) -> dict[str, Any]:
    """Sample entities, label them by top prototype, and measure how coherent the labels are.

    Returns the sample indices, the labels, the silhouette (cosine) of the original vectors
    w.r.t. the labels, the number of prototypes in use and the share of the 10 largest.
    """
    from sklearn.metrics import silhouette_score

    entities = np.asarray(entities, dtype=np.float64)
    prototypes = np.asarray(prototypes, dtype=np.float64)
    rng = np.random.default_rng(seed)
    n = len(entities)
    idx = np.sort(rng.choice(n, size=max_points, replace=False)) if n > max_points else np.arange(n)
    x = entities[idx]
    labels = top_prototypes(x, prototypes) if len(x) else np.zeros(0, dtype=np.int64)
    uniq, counts = np.unique(labels, return_counts=True)
    order = np.lexsort((uniq, -counts))  # most frequent first, ties by prototype index
    top = uniq[order][:TOP_PROTOTYPES]
    silhouette = None
    if 2 <= len(uniq) < len(x):
        norms = np.linalg.norm(x, axis=1)
        if np.all(norms > 0):
            silhouette = float(silhouette_score(x, labels, metric="cosine"))
    return {
        "index": idx,
        "vectors": x,
        "labels": labels,
        "top": top,
        "n_used": int(len(uniq)),
        "top_share": float(counts[order][:TOP_PROTOTYPES].sum() / max(len(x), 1)),
        "silhouette": silhouette,
    }


def tsne_points(x: np.ndarray, seed: int) -> np.ndarray | None:
    """2-D t-SNE (PCA initialisation, seeded, one thread); ``None`` for fewer than 5 points."""
    if len(x) < 5:
        return None
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3.0)))
    with threadpool_limits(limits=1):
        return TSNE(
            n_components=2, init="pca", random_state=seed, perplexity=perplexity, n_jobs=1
        ).fit_transform(x.astype(np.float64))


def tsne_chart(
    name: str, points: np.ndarray, labels: np.ndarray, top: np.ndarray, path: Path
) -> None:
    """Scatter of the 2-D points, coloured by top prototype (10 largest + grey "other")."""
    fig = _pyplot_free_figure((6.4, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    handles = []
    for i, proto in enumerate(top):
        mask = labels == proto
        handles.append(
            ax.scatter(
                points[mask, 0],
                points[mask, 1],
                s=3,
                color=PROTOTYPE_COLOURS[i % len(PROTOTYPE_COLOURS)],
                linewidths=0,
                label=f"prototype {int(proto)}",
                zorder=2,
            )
        )
    other = ~np.isin(labels, top)
    if other.any():
        handles.append(
            ax.scatter(
                points[other, 0],
                points[other, 1],
                s=3,
                color=OTHER_COLOUR,
                linewidths=0,
                label="other",
                zorder=1,
            )
        )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{name}: {len(points)} entities, colour = top prototype", fontsize=9)
    ax.legend(
        handles=handles,
        fontsize=7,
        markerscale=3,
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        frameon=False,
    )
    fig.tight_layout()
    _save(fig, path)
