"""``REPORT.md`` of ``peace benchmark``: the tables and figures of Sec. 5 from ``results.json``.

The report holds, in this order: what was run; the data statistics (Table 1); the normal setting
(Table 2); the zero-shot settings (Table 3); the ablation (Figure 4); t-SNE pictures of the entity
vectors coloured by prototype, with a coherence number (Figure 5); where PEACE wins and loses;
the hyper-parameter search; and how to reproduce the run. Figures are PNG files under
``figures/`` linked relatively. The output depends on the inputs only (fixed seeds, sorted
orders, no clock), so the same inputs give the same ``REPORT.md``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from peace.eval.results import METRICS, SETTINGS
from peace.eval.significance import PairedTest, paired_test
from peace.models import FINE_TUNED, ZERO_SHOT
from peace.utils import atomic_write_text

# Known names first, in the order of the paper; any other name follows, sorted.
MODEL_ORDER = (
    "PEACE",
    "PEACE w/o GL",
    "PEACE w/o CPL",
    "PEACE w/o PEA",
    "Popularity",
    "DeepFM",
    "Random",
    "Entity prior",
    "Entity overlap",
    *FINE_TUNED,
    *ZERO_SHOT,
)
ABLATION_VARIANTS = ("PEACE", "PEACE w/o GL", "PEACE w/o CPL", "PEACE w/o PEA")
PEACE = "PEACE"
HEADLINE = "ndcg@10"

SETTING_TITLES = {
    "normal": "normal setting",
    "zero-shot": "zero-shot, all rows of the domain (`zero-shot`)",
    "zero-shot-test": "zero-shot, normal test split only (`zero-shot-test`)",
}
SECTION_TITLES = (
    "What was run",
    "Data statistics",
    "Normal setting",
    "Zero-shot setting",
    "Ablation",
    "Entity embeddings and prototypes",
    "Where PEACE wins and loses",
    "Hyper-parameter search",
    "Reproduce",
)

MAX_VALUE_COLUMNS = 8  # wider metric tables are split by metric family, then by metric
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


# --------------------------------------------------------------------------------------------
# small formatting helpers


def slug(name: str) -> str:
    """A file-name-safe form of a model name: ``"PEACE w/o CPL"`` -> ``"peace-w-o-cpl"``."""
    s = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return s or "model"


def metric_label(metric: str) -> str:
    """``"ndcg@10"`` -> ``"NDCG@10"``, ``"hit@5"`` -> ``"Hit@5"``; other names unchanged."""
    name, _, k = metric.partition("@")
    pretty = {"ndcg": "NDCG", "hit": "Hit", "recall": "Recall", "mrr": "MRR"}.get(name, name)
    return f"{pretty}@{k}" if k else pretty


def format_duration(seconds: float) -> str:
    """``5400`` -> ``"1 h 30 min"``, ``125`` -> ``"2 min 05 s"``, ``7.25`` -> ``"7.2 s"``."""
    seconds = float(seconds)
    if seconds >= 3600:
        minutes = int(round(seconds / 60))
        return f"{minutes // 60} h {minutes % 60:02d} min"
    if seconds >= 60:
        whole = int(round(seconds))
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{seconds:.1f} s"


def _cell(mean: float, std: float) -> str:
    """``mean ± std`` over seeds; the mean alone for one seed (std is then NaN)."""
    if std != std:
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {std:.4f}"


def _value(v: Any) -> str:
    """A search value or config value, compact and stable."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}={_value(x)}" for k, x in v.items()) + "}"
    return str(v)


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], align: str | None = None) -> str:
    """A GitHub markdown table; ``align`` has ``l``, ``r`` or ``c`` per column (default ``lrr…``)."""
    header = [_md_escape(h) for h in header]
    if align is None:
        align = "l" + "r" * (len(header) - 1)
    rule = [{"r": "---:", "c": ":---:"}.get(a, ":---") for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(_md_escape(c) for c in row) + " |")
    return "\n".join(lines)


def _ordered(names: Iterable[str], known: Sequence[str]) -> list[str]:
    names = set(names)
    return [n for n in known if n in names] + sorted(names - set(known))


# --------------------------------------------------------------------------------------------
# the results rows


class Results:
    """Lookup over the rows ``{model, setting, domain, metric, mean, std}`` of ``results.json``."""

    def __init__(
        self,
        rows: Sequence[Mapping[str, Any]],
        domain_order: Sequence[str] = (),
        seeds: int | None = None,
    ):
        """``seeds = 1`` (or rows with ``n = 1``): no spread to show, std becomes NaN."""
        self.cells: dict[tuple[str, str, str, str], tuple[float, float]] = {}
        for r in rows:
            key = (str(r["model"]), str(r["setting"]), str(r["domain"]), str(r["metric"]))
            std = float(r.get("std", 0.0) or 0.0)
            single = r.get("n", seeds) == 1
            self.cells[key] = (float(r["mean"]), float("nan") if single else std)
        self.models = _ordered((k[0] for k in self.cells), MODEL_ORDER)
        self.settings = _ordered((k[1] for k in self.cells), SETTINGS)
        self.domains = _ordered((k[2] for k in self.cells), list(domain_order))
        self.metrics = _ordered((k[3] for k in self.cells), METRICS)

    def get(self, model: str, setting: str, domain: str, metric: str) -> tuple[float, float] | None:
        return self.cells.get((model, setting, domain, metric))

    def models_in(self, setting: str) -> list[str]:
        return [m for m in self.models if any(k[0] == m and k[1] == setting for k in self.cells)]

    def domains_in(self, setting: str) -> list[str]:
        return [d for d in self.domains if any(k[2] == d and k[1] == setting for k in self.cells)]

    def metrics_in(self, setting: str) -> list[str]:
        return [m for m in self.metrics if any(k[3] == m and k[1] == setting for k in self.cells)]

    def headline(self) -> str:
        """NDCG@10 where present, else the last NDCG metric, else the last metric."""
        if HEADLINE in self.metrics:
            return HEADLINE
        ndcg = [m for m in self.metrics if m.startswith("ndcg")]
        return (ndcg or self.metrics or [HEADLINE])[-1]


def _metric_groups(metrics: list[str], n_domains: int) -> list[list[str]]:
    """All metrics in one table if narrow enough, else one table per family, else per metric."""
    if len(metrics) * n_domains <= MAX_VALUE_COLUMNS:
        return [metrics]
    families: dict[str, list[str]] = {}
    for m in metrics:
        families.setdefault(m.partition("@")[0], []).append(m)
    groups = list(families.values())
    if all(len(g) * n_domains <= MAX_VALUE_COLUMNS for g in groups):
        return groups
    return [[m] for m in metrics]


def metric_table(
    res: Results,
    setting: str,
    models: Sequence[str],
    domains: Sequence[str],
    metrics: Sequence[str],
    references: Sequence[tuple[str, str, str]] = (),
) -> str:
    """Rows = models, columns = domain × metric, ``mean ± std``, best mean per column in bold.

    Means are compared at the shown precision (4 decimals), so ties are all bold. Each
    ``(label, model, setting)`` of ``references`` adds a last row of another setting's values,
    shown for comparison and never bold.
    """
    columns = [(d, m) for d in domains for m in metrics]
    best: dict[tuple[str, str], float] = {}
    for d, m in columns:
        means = [round(v[0], 4) for x in models if (v := res.get(x, setting, d, m)) is not None]
        if len(means) >= 2:  # a column of one row has nothing to be best against
            best[(d, m)] = max(means)
    if len(metrics) == 1:
        header = ["Model"] + [f"{d}" for d in domains]
    else:
        header = ["Model"] + [f"{d} {metric_label(m)}" for d, m in columns]
    rows = []
    for model in models:
        row = [model]
        for d, m in columns:
            v = res.get(model, setting, d, m)
            if v is None:
                row.append("-")
                continue
            text = _cell(*v)
            row.append(f"**{text}**" if round(v[0], 4) == best.get((d, m)) else text)
        rows.append(row)
    for label, model, other in references:
        cells = [res.get(model, other, d, m) for d, m in columns]
        if any(v is not None for v in cells):
            rows.append([label] + ["-" if v is None else _cell(*v) for v in cells])
    return _table(header, rows)


def setting_tables(
    res: Results,
    setting: str,
    models: Sequence[str] | None = None,
    references: Sequence[tuple[str, str, str]] = (),
) -> str:
    """The tables of one setting, split by metric family when too wide."""
    models = list(res.models_in(setting) if models is None else models)
    domains = res.domains_in(setting)
    metrics = res.metrics_in(setting)
    if not models or not domains:
        return f"No `{setting}` results in this run."
    parts = []
    for group in _metric_groups(metrics, len(domains)):
        if len(group) == 1:
            parts.append(f"*{metric_label(group[0])}*")
        elif len(group) < len(metrics):
            parts.append("*" + " / ".join(metric_label(m) for m in group) + "*")
        parts.append(metric_table(res, setting, models, domains, group, references))
    return "\n\n".join(parts)


# --------------------------------------------------------------------------------------------
# figures


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


# --------------------------------------------------------------------------------------------
# sections


def _section_intro(doc: Mapping[str, Any], res: Results) -> str:
    seeds = doc.get("seeds") or []
    seeds_text = ", ".join(str(s) for s in seeds) if seeds else "not recorded"
    models = ", ".join(res.models) if res.models else "none"
    domains = ", ".join(res.domains) if res.domains else "none"
    return (
        f"Dataset **{doc.get('dataset', 'unknown')}**, {len(seeds)} seed(s) ({seeds_text}); "
        f"models: {models}; target domains: {domains}. "
        "Every target domain is split chronologically into the first 70% of its interactions "
        "(fine-tuning), the next 15% (validation, for early stopping and model choice) and the "
        "last 15% (test). Each test user is scored against the full item catalogue of the domain "
        "(items seen in earlier splits excluded), and Hit@5/10 and NDCG@5/10 are averaged over "
        "users. In the zero-shot setting the pre-trained model sees no row of the target domain: "
        "`zero-shot` tests on all rows of the domain, `zero-shot-test` on the normal test split "
        "only, so that it is comparable with the normal setting. Cells are the mean ± the "
        "(population) standard deviation over seeds; the best mean of each column is in bold."
    )


def _section_statistics(statistics: pd.DataFrame | None, graph: Mapping[str, Any] | None) -> str:
    parts = []
    if statistics is not None and len(statistics):
        frame = statistics.copy()
        if "role" in frame.columns:
            rank = {"source": 0, "target": 1}
            frame["_rank"] = [rank.get(str(r), 2) for r in frame["role"]]
            frame = frame.sort_values("_rank", kind="stable").drop(columns="_rank")
        names = {
            "domain": "Domain",
            "role": "Role",
            "users": "# Users",
            "items": "# Items",
            "interactions": "# Interactions",
            "entities": "# Entities",
        }
        header = [names.get(str(c), str(c)) for c in frame.columns]
        rows = []
        for rec in frame.itertuples(index=False):
            rows.append([_count(v) for v in rec])
        align = "".join(
            "r" if pd.api.types.is_numeric_dtype(frame[c]) else "l" for c in frame.columns
        )
        parts.append(_table(header, rows, align))
    else:
        parts.append("No per-domain statistics were given.")
    if graph:
        keys = list(graph)
        parts.append(
            "Entity graph:\n\n"
            + _table(
                [f"# {str(k).capitalize()}" for k in keys],
                [[_count(graph[k]) for k in keys]],
                "r" * len(keys),
            )
        )
    return "\n\n".join(parts)


def _count(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v)).lower()
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f"{int(f):,}" if f.is_integer() else f"{f:,.4g}"
    return str(v)


def _section_normal(res: Results) -> str:
    models = [m for m in res.models_in("normal") if m not in ABLATION_VARIANTS[1:]]
    return (
        "Analogue of Table 2: every model fine-tuned (or fitted) on the target domain's first "
        "70%, tested on its last 15%. The pre-trained competitors are pre-trained on the source "
        "domains like PEACE and fine-tuned with the same DeepFM head; PEACE's ablation variants "
        "are in Section 5.\n\n" + setting_tables(res, "normal", models)
    )


def _section_zero_shot(res: Results) -> str:
    parts = [
        "Analogue of Table 3: models applied to the target domains without any target "
        "interaction for training or choice. Only models with rows in these settings appear."
    ]
    found = False
    for setting in ("zero-shot", "zero-shot-test"):
        if setting not in res.settings:
            continue
        found = True
        title = SETTING_TITLES[setting]
        references = []
        if setting == "zero-shot-test" and "Popularity" in res.models_in("normal"):
            references = [("Popularity †", "Popularity", "normal")]
        text = f"### {title[0].upper()}{title[1:]}\n\n" + setting_tables(
            res, setting, None, references
        )
        if references:
            text += (
                "\n\n† Reference, not zero-shot: Popularity counts each item's rows in the "
                "target train split and is tested on the same test split; it is never bold."
            )
        parts.append(text)
    if not found:
        parts.append("No zero-shot results in this run.")
    return "\n\n".join(parts)


def _section_ablation(res: Results, figures: Path) -> tuple[str, list[Path]]:
    variants = [v for v in ABLATION_VARIANTS if v in res.models_in("normal")]
    if len(variants) < 2 or PEACE not in variants:
        return "The ablation variants were not part of this run.", []
    domains = res.domains_in("normal")
    ndcg = [m for m in res.metrics_in("normal") if m.startswith("ndcg")] or res.metrics_in("normal")
    parts = [
        "PEACE against its variants without Graph Learning (GL), Contrastive Prototype Learning "
        "(CPL) and Prototype Enhanced Attention (PEA), normal setting.",
        setting_tables_for(res, "normal", variants, domains, ndcg),
    ]
    head = res.headline()
    drops = []
    for v in variants[1:]:
        deltas = []
        for d in domains:
            a, b = res.get(PEACE, "normal", d, head), res.get(v, "normal", d, head)
            if a is not None and b is not None:
                deltas.append(f"{d} {b[0] - a[0]:+.4f}")
        if deltas:
            drops.append(f"- {v} − PEACE, {metric_label(head)}: " + ", ".join(deltas))
    if drops:
        parts.append("\n".join(drops))
    written = []
    for metric in dict.fromkeys((head, "hit@10")):
        if metric not in res.metrics_in("normal"):
            continue
        name = f"ablation_{slug(metric.partition('@')[0])}.png"
        ablation_chart(res, variants, metric, figures / name)
        written.append(figures / name)
        parts.append(f"![Ablation, {metric_label(metric)}](figures/{name})")
    return "\n\n".join(parts), written


def setting_tables_for(
    res: Results,
    setting: str,
    models: Sequence[str],
    domains: Sequence[str],
    metrics: Sequence[str],
) -> str:
    """Like :func:`setting_tables` for a chosen set of models, domains and metrics."""
    parts = []
    for group in _metric_groups(list(metrics), len(domains)):
        if len(group) == 1 and len(metrics) > 1:
            parts.append(f"*{metric_label(group[0])}*")
        parts.append(metric_table(res, setting, models, domains, group))
    return "\n\n".join(parts)


def _section_embeddings(
    embeddings: Mapping[str, tuple[np.ndarray, np.ndarray]] | None, figures: Path, seed: int
) -> tuple[str, list[Path]]:
    if not embeddings:
        return "No entity embeddings were given to this report.", []
    names = _ordered(embeddings, ABLATION_VARIANTS)
    stats: dict[str, dict[str, Any]] = {}
    rows = []
    written = []
    for name in names:
        ent, protos = (np.asarray(a) for a in embeddings[name])
        if ent.ndim != 2 or protos.ndim != 2 or not len(ent) or not len(protos):
            rows.append([name, f"{len(ent):,}", f"{len(protos)}", "-", "n/a", "n/a"])
            continue
        c = coherence(ent, protos, seed)
        points = tsne_points(c["vectors"], seed)
        sil2d = None
        if points is not None:
            from sklearn.metrics import silhouette_score

            if 2 <= c["n_used"] < len(points):
                sil2d = float(silhouette_score(points, c["labels"]))
            path = figures / f"tsne_{slug(name)}.png"
            tsne_chart(name, points, c["labels"], c["top"], path)
            written.append(path)
        c["silhouette_2d"] = sil2d
        stats[name] = c
        rows.append(
            [
                name,
                f"{len(c['labels']):,} of {len(ent):,}",
                f"{c['n_used']} of {len(protos)}",
                f"{100 * c['top_share']:.1f}%",
                "n/a" if c["silhouette"] is None else f"{c['silhouette']:.3f}",
                "n/a" if sil2d is None else f"{sil2d:.3f}",
            ]
        )
    parts = [
        "Analogue of Figure 5: a seeded sample of at most "
        f"{TSNE_MAX_POINTS:,} entities per variant, each labelled by its most similar prototype "
        "(argmax of the inner products with the prototypes), mapped to 2-D with t-SNE (PCA "
        f"initialisation, seed {seed}). Colours are the {TOP_PROTOTYPES} most frequent prototypes "
        "of the sample; the rest is grey. Coherence is the silhouette score of the entities "
        "w.r.t. their top-prototype labels, on the original vectors (cosine distance) and on the "
        "2-D points (Euclidean); it lies in [-1, 1], higher is more coherent. The labels come "
        "from the same vectors, so the number is meant for comparing variants.",
        _table(
            [
                "Variant",
                "Entities",
                "Prototypes in use",
                "Top-10 share",
                "Silhouette (vectors)",
                "Silhouette (t-SNE 2-D)",
            ],
            rows,
        ),
    ]
    if PEACE in stats and "PEACE w/o CPL" in stats:
        a, b = stats[PEACE]["silhouette"], stats["PEACE w/o CPL"]["silhouette"]
        if a is None or b is None:
            parts.append(
                "The silhouette of the original vectors is undefined for at least one of PEACE "
                "and PEACE w/o CPL (fewer than two prototypes in use), so the claim that CPL "
                "makes the clusters more coherent cannot be checked on this run."
            )
        else:
            verdict = (
                "more coherent than"
                if a > b
                else "less coherent than"
                if a < b
                else "as coherent as"
            )
            holds = "supports" if a > b else "does not support"
            parts.append(
                f"On this run the entity vectors of PEACE are {verdict} those of PEACE w/o CPL "
                f"w.r.t. their prototypes (silhouette {a:.3f} vs {b:.3f}), which {holds} the "
                "paper's observation that CPL gives more coherent clusters."
            )
    if written:
        header = [n for n in names if (figures / f"tsne_{slug(n)}.png") in written]
        cells = [f"![t-SNE of {n}](figures/tsne_{slug(n)}.png)" for n in header]
        parts.append(_table(header, [cells], "c" * len(cells)))
    return "\n\n".join(parts), written


def win_loss(
    res: Results, per_user: Mapping[str, Any] | None = None, seed: int = 0
) -> list[dict[str, Any]]:
    """Per setting and domain: PEACE's headline metric against the best other model, with a
    paired per-user test of the margin where ``per_user`` NDCG@10 of both is at hand."""
    head = res.headline()
    out = []
    for setting in res.settings:
        for d in res.domains_in(setting):
            p = res.get(PEACE, setting, d, head)
            if p is None:
                continue
            others = [
                (m, v)
                for m in res.models
                if m not in ABLATION_VARIANTS and (v := res.get(m, setting, d, head)) is not None
            ]
            if not others:
                continue
            best_model, best = max(
                others, key=lambda mv: (round(mv[1][0], 4), -res.models.index(mv[0]))
            )
            pop = res.get("Popularity", setting, d, head)
            pop_note = ""
            if pop is None and setting == "zero-shot-test":
                pop = res.get("Popularity", "normal", d, head)
                pop_note = "†" if pop is not None else ""
            out.append(
                {
                    "setting": setting,
                    "domain": d,
                    "metric": head,
                    "peace": p,
                    "best_model": best_model,
                    "best": best,
                    "margin": p[0] - best[0],
                    "popularity": pop,
                    "popularity_note": pop_note,
                    "test": _paired(per_user, setting, d, best_model, seed),
                }
            )
    return out


def _paired(
    per_user: Mapping[str, Any] | None, setting: str, domain: str, other: str, seed: int
) -> PairedTest | None:
    """PEACE minus ``other`` over the same test users, when both have per-user values."""
    if not per_user:
        return None
    a = per_user.get(PEACE, {}).get(setting, {}).get(domain)
    b = per_user.get(other, {}).get(setting, {}).get(domain)
    if a is None or b is None or len(a) != len(b) or not len(a):
        return None
    return paired_test(np.asarray(a), np.asarray(b), seed)


def _section_wins(res: Results, per_user: Mapping[str, Any] | None = None) -> str:
    items = win_loss(res, per_user)
    if not items:
        return "No setting has both PEACE and another model, so there is nothing to compare."
    head = metric_label(res.headline())
    rows = []
    sentences = []
    for it in items:
        p, b, margin = it["peace"], it["best"], it["margin"]
        rel = f"{100 * margin / b[0]:+.1f}%" if b[0] > 0 else "-"
        pop = it["popularity"]
        pop_text = "-" if pop is None else f"{p[0] - pop[0]:+.4f}{it['popularity_note']}"
        test = it["test"]
        rows.append(
            [
                it["setting"],
                it["domain"],
                _cell(*p),
                it["best_model"],
                _cell(*b),
                f"{margin:+.4f}",
                rel,
                "-" if test is None else f"{test.p_value:.2g}",
                "-" if test is None else f"[{test.low:+.4f}, {test.high:+.4f}]",
                pop_text,
            ]
        )
        where = f"{it['domain']} ({it['setting']})"
        noise = max(p[1], b[1])
        if test is not None:
            interval = f"95% interval [{test.low:+.4f}, {test.high:+.4f}]"
            verdict = "significant" if test.significant else "not significant"
            within = f" ({verdict}: p = {test.p_value:.2g}, {interval}, {test.users:,} users)"
        else:
            within = (
                " (within one seed standard deviation)"
                if abs(margin) <= noise and noise > 0
                else ""
            )
        if round(margin, 4) > 0:
            sentences.append(
                f"- PEACE wins on {where} by {margin:.4f} {head} over {it['best_model']} "
                f"({p[0]:.4f} vs {b[0]:.4f}){within}."
            )
        elif round(margin, 4) < 0:
            sentences.append(
                f"- PEACE loses on {where} by {-margin:.4f} {head} to {it['best_model']} "
                f"({p[0]:.4f} vs {b[0]:.4f}){within}."
            )
        else:
            sentences.append(f"- PEACE ties with {it['best_model']} on {where} ({p[0]:.4f}).")
    table = _table(
        [
            "Setting",
            "Domain",
            f"PEACE {head}",
            "Best other model",
            f"Its {head}",
            "Margin",
            "Relative",
            "p (Wilcoxon)",
            "95% interval",
            "PEACE − Popularity",
        ],
        rows,
        "llrlrrrrrr",
    )
    notes = [
        f"PEACE's {head} against the best other model (its own ablation variants excluded; the "
        "zero-shot references included) of the same setting and domain; a positive margin means "
        "PEACE is ahead. The margin is tested per test user (NDCG@10, mean over seeds): a "
        "two-sided Wilcoxon signed-rank p-value and a paired-bootstrap 95% interval of the mean "
        "difference; '-' where per-user values were not kept.",
        table,
        "\n".join(sentences),
    ]
    if any(it["popularity_note"] for it in items):
        notes.append(
            "† Popularity has no zero-shot rows; the gap shown for `zero-shot-test` is to "
            "Popularity in the normal setting, fitted on the first 70% and tested on the same "
            "test split."
        )
    losses = sum(1 for it in items if round(it["margin"], 4) < 0)
    notes.append(
        f"PEACE is ahead in {sum(1 for it in items if round(it['margin'], 4) > 0)} and behind in "
        f"{losses} of {len(items)} (setting, domain) pairs; the numbers above are the evidence."
    )
    return "\n\n".join(notes)


def _numeric(text: str) -> bool:
    if text == "-":
        return True
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


def _base_model(name: str) -> str:
    return name.split(" (")[0]


def _section_search(doc: Mapping[str, Any]) -> str:
    trail = doc.get("search") or []
    chosen = doc.get("chosen") or {}
    if not trail and not chosen:
        return "No hyper-parameter search was recorded."
    parts = []
    if trail:
        params: list[str] = []
        extra: list[str] = []
        for t in trail:
            for k in t.get("candidate") or {}:
                if k not in params:
                    params.append(k)
            for k in t:
                if k not in ("model", "candidate") and k not in extra:
                    extra.append(k)
        rows = []
        for t in trail:
            cand = t.get("candidate") or {}
            pick = chosen.get(_base_model(str(t.get("model", ""))))
            is_chosen = (
                bool(cand)
                and isinstance(pick, Mapping)
                and all(k in pick and pick[k] == v for k, v in cand.items())
            )
            rows.append(
                [str(t.get("model", "-"))]
                + [_value(cand[k]) if k in cand else "-" for k in params]
                + [_value(t[k]) if k in t else "-" for k in extra]
                + ["✓" if is_chosen else ""]
            )
        align = "l" + "".join(
            "r" if all(_numeric(c) for c in col) else "l"
            for col in list(zip(*rows, strict=True))[1:-1]
        )
        parts.append(
            "Every candidate tried, in the order tried; ✓ marks the values kept.\n\n"
            + _table(["Model"] + params + extra + ["Chosen"], rows, align + "c")
        )
    if chosen:
        rows = [
            [str(m), ", ".join(f"{k}={_value(v)}" for k, v in dict(vals).items()) or "-"]
            if isinstance(vals, Mapping)
            else [str(m), _value(vals)]
            for m, vals in sorted(chosen.items())
        ]
        parts.append("Chosen values:\n\n" + _table(["Model", "Values"], rows, "ll"))
    curves = _section_curves(doc.get("curves") or {})
    if curves:
        parts.append(curves)
    return "\n\n".join(parts)


CURVE_COLUMNS = (
    ("loss", "train loss"),
    ("loss_et", "Eq. 4"),
    ("loss_ip", "served"),
    ("valid_loss", "held-out Eq. 4"),
    ("valid_ndcg", "held-out NDCG@10"),
)


def _section_curves(curves: Mapping[str, Any]) -> str:
    """Each pre-trained model's losses and held-out measures at every evaluation (first seed)."""
    if not curves:
        return ""
    parts = [
        "Pre-training curves of the first seed with the chosen values: the training losses "
        "since the previous evaluation, the held-out loss of Eq. 4 (pairs with fixed negatives) "
        "and the held-out NDCG@10 of the served score over each held-out record's source "
        "catalogue, which chooses the kept state (✓)."
    ]
    for model in _ordered(curves, MODEL_ORDER):
        points = curves[model]
        if not points:
            continue
        columns = [(k, label) for k, label in CURVE_COLUMNS if any(k in p for p in points)]
        keyed = "valid_ndcg" if any("valid_ndcg" in p for p in points) else "valid_loss"
        values = [p.get(keyed, float("nan")) for p in points]
        best = int(np.nanargmax(values)) if keyed == "valid_ndcg" else int(np.nanargmin(values))
        rows = [
            [str(int(p.get("step", 0)))]
            + [f"{p[k]:.4f}" if k in p else "-" for k, _ in columns]
            + ["✓" if i == best else ""]
            for i, p in enumerate(points)
        ]
        header = ["Step"] + [label for _, label in columns] + ["Kept"]
        parts.append(f"*{model}*\n\n" + _table(header, rows, "r" * (len(columns) + 1) + "c"))
    return "\n\n".join(parts)


def _flatten(prefix: tuple[str, ...], value: Any, out: list[tuple[tuple[str, ...], float]]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(prefix + (str(k),), v, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out.append((prefix, float(value)))


def timing_rows(timings: Mapping[str, Any], seeds: Sequence[Any] = ()) -> list[list[str]]:
    """Compact per-step timings: steps summed over seeds when keyed by seed first."""
    flat: list[tuple[tuple[str, ...], float]] = []
    _flatten((), timings, flat)
    seed_keys = {str(s) for s in seeds}
    by_seed = bool(flat) and all(
        len(p) >= 2 and (p[0] in seed_keys or p[0].isdigit()) for p, _ in flat
    )
    steps: dict[str, list[float]] = {}
    for path, seconds in flat:
        key = " / ".join(path[1:] if by_seed else path)
        steps.setdefault(key, []).append(seconds)
    rows = []
    for key, values in steps.items():
        if by_seed:
            rows.append(
                [
                    key,
                    str(len(values)),
                    format_duration(float(np.mean(values))),
                    format_duration(float(np.sum(values))),
                ]
            )
        else:
            rows.append([key, format_duration(values[0])])
    return rows


def _section_reproduce(doc: Mapping[str, Any]) -> str:
    parts = []
    commands = doc.get("commands") or []
    if commands:
        parts.append("```bash\n" + "\n".join(str(c) for c in commands) + "\n```")
    else:
        parts.append("The commands of this run were not recorded.")
    env = doc.get("environment") or {}
    if env:
        parts.append(
            "Environment:\n\n"
            + _table(["Item", "Value"], [[str(k), _value(v)] for k, v in env.items()], "ll")
        )
    runs = doc.get("runs") or []
    if len(runs) > 1:
        rows = [
            [str(i), ", ".join(r.get("models") or []), f"{float(r.get('wall_seconds') or 0):,.0f}"]
            for i, r in enumerate(runs, start=1)
        ]
        parts.append(
            "The rows come from several runs on the same data, seeds and configuration "
            "(`peace benchmark --update` keeps the rows of the models it does not run):\n\n"
            + _table(["Run", "Models", "Wall (s)"], rows, "llr")
        )
    jobs = doc.get("jobs")
    if isinstance(jobs, Mapping):
        parts.append(
            f"The last run used {jobs.get('processes')} worker processes with "
            f"{jobs.get('threads_per_process')} torch thread(s) each."
        )
    wall = doc.get("wall_seconds")
    if isinstance(wall, (int, float)) and not isinstance(wall, bool):
        what = "all runs together" if len(runs) > 1 else "the whole run"
        parts.append(f"Wall time of {what}: {format_duration(wall)} ({wall:,.0f} s).")
    timings = doc.get("timings") or {}
    if timings:
        rows = timing_rows(timings, doc.get("seeds") or [])
        if rows and len(rows[0]) == 4:
            table = _table(["Step", "Seeds", "Mean per seed", "Total"], rows, "lrrr")
        else:
            table = _table(["Step", "Time"], rows, "lr")
        parts.append("Per-step timings:\n\n" + table)
    config = doc.get("config")
    if config:
        parts.append(
            "<details><summary>Configuration</summary>\n\n```json\n"
            + json.dumps(config, indent=2, sort_keys=True, default=str)
            + "\n```\n\n</details>"
        )
    return "\n\n".join(parts)


# --------------------------------------------------------------------------------------------
# the report


def render_report(
    out: Path,
    doc: Mapping[str, Any],
    statistics: pd.DataFrame | None,
    embeddings: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    seed: int = 0,
) -> tuple[str, list[Path]]:
    """The text of ``REPORT.md`` and the figures written under ``out / "figures"``."""
    figures = Path(out) / "figures"
    domain_order: list[str] = []
    if statistics is not None and len(statistics) and "domain" in statistics.columns:
        roles = statistics["role"] if "role" in statistics.columns else ["target"] * len(statistics)
        domain_order = [
            str(d) for d, r in zip(statistics["domain"], roles, strict=True) if str(r) != "source"
        ]
    res = Results(doc.get("rows") or [], domain_order, len(doc.get("seeds") or []) or None)
    ablation, abl_figs = _section_ablation(res, figures)
    emb, emb_figs = _section_embeddings(embeddings, figures, seed)
    graph = doc.get("graph")
    bodies = [
        _section_intro(doc, res),
        _section_statistics(statistics, graph if isinstance(graph, Mapping) else None),
        _section_normal(res),
        _section_zero_shot(res),
        ablation,
        emb,
        _section_wins(res, doc.get("per_user")),
        _section_search(doc),
        _section_reproduce(doc),
    ]
    lines = [f"# PEACE benchmark on {doc.get('dataset', 'unknown')}"]
    for i, (title, body) in enumerate(zip(SECTION_TITLES, bodies, strict=True), start=1):
        lines.append(f"## {i}. {title}\n\n{body}")
    text = "\n\n".join(lines).rstrip() + "\n"
    return text, abl_figs + emb_figs


def write_report(
    out: Path,
    doc: dict,
    statistics: pd.DataFrame,
    embeddings: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    seed: int = 0,
) -> Path:
    """Write ``out/REPORT.md`` and its figures under ``out/figures``; return the report's path.

    ``doc`` is the ``results.json`` document (``dataset``, ``seeds``, ``rows`` and optionally
    ``graph``, ``search``, ``chosen``, ``wall_seconds``, ``timings``, ``environment``,
    ``commands``, ``config``); ``statistics`` the per-domain counts of Table 1; ``embeddings``
    maps a variant name to its entity vectors ``[E, d]`` and prototypes ``[n, d]``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text, _ = render_report(out, doc, statistics, embeddings, seed)
    path = out / "REPORT.md"
    atomic_write_text(path, text)
    return path
