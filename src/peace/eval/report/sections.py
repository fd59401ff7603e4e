"""The sections of ``REPORT.md`` that show results: what was run, the data statistics
(Table 1), the normal setting (Table 2), the zero-shot settings (Table 3), the ablation
(Figure 4, in both settings, with paired tests) and the entity embeddings with their
prototypes (Figure 5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from peace.eval.report.common import (
    ABLATION_VARIANTS,
    PEACE,
    SETTING_TITLES,
    _count,
    _ordered,
    _table,
    metric_label,
    slug,
)
from peace.eval.report.figures import (
    TOP_PROTOTYPES,
    TSNE_MAX_POINTS,
    ablation_chart,
    coherence,
    tsne_chart,
    tsne_points,
)
from peace.eval.report.tables import Results, metric_table, setting_tables, setting_tables_for
from peace.eval.significance import domain_mean_test, paired_test


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


ENTITY_MEAN = "Entity mean"
ENTITY_MEAN_NOTE = (
    " *Entity mean* is PEACE's own flow (objective, searched values, zero-shot score and head) "
    "with none of its encoders: no graph attention, no prototypes, and each user the plain mean "
    "of their source entity vectors; the simplest learned model of the task."
)


def _section_normal(res: Results) -> str:
    models = [m for m in res.models_in("normal") if m not in ABLATION_VARIANTS[1:]]
    note = ENTITY_MEAN_NOTE if ENTITY_MEAN in models else ""
    return (
        "Analogue of Table 2: every model fine-tuned (or fitted) on the target domain's first "
        "70%, tested on its last 15%. The pre-trained competitors are pre-trained on the source "
        "domains like PEACE and fine-tuned with the same DeepFM head; PEACE's ablation variants "
        "are in Section 5." + note + "\n\n" + setting_tables(res, "normal", models)
    )


def _section_zero_shot(
    res: Results, prior_weight: float = 0.0, prior_counts: str = "rows", profile_weight: float = 0.0
) -> str:
    intro = (
        "Analogue of Table 3: models applied to the target domains without any target "
        "interaction for training or choice. Only models with rows in these settings appear."
    )
    if prior_weight:
        prior = (
            "the mean over the item's entities of log(1 + distinct users with a positive source "
            "row of the entity before the cut-off): the *Entity prior* row's score with users "
            "counted instead of rows (`eval.zero_shot_prior` and `eval.zero_shot_prior_counts`"
            if prior_counts == "users"
            else "the *Entity prior* row's own score (`eval.zero_shot_prior`"
        )
        profile = f" + {profile_weight:g} * profile(i)" if profile_weight else ""
        profile_text = (
            ", and profile(i) the *Profile prior* row's score (the mean over the item's profile "
            "fields of the source items' take-up among those with the item's value, "
            "`eval.zero_shot_profile_prior`)"
            if profile_weight
            else ""
        )
        intro += (
            f" PEACE and its variants score z_u . z_i + {prior_weight:g} * prior(i){profile}, "
            f"prior(i) being {prior}){profile_text}, chosen on validation domains; the "
            "competitors' scores are their own."
        )
    if any(ENTITY_MEAN in res.models_in(s) for s in ("zero-shot", "zero-shot-test")):
        intro += ENTITY_MEAN_NOTE
    parts = [intro]
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


def _section_ablation(
    res: Results, figures: Path, per_user: Mapping[str, Any] | None = None, seed: int = 0
) -> tuple[str, list[Path]]:
    variants = [v for v in ABLATION_VARIANTS if v in res.models_in("normal")]
    if len(variants) < 2 or PEACE not in variants:
        return "The ablation variants were not part of this run.", []
    intro = (
        "PEACE against its variants without Graph Learning (GL), Contrastive Prototype Learning "
        "(CPL) and Prototype Enhanced Attention (PEA): the normal setting, then the zero-shot "
        "settings, then each difference with its test."
    )
    if ENTITY_MEAN in res.models_in("normal"):  # the floor: none of the encoders
        variants.append(ENTITY_MEAN)
        intro += (
            " The last row, *Entity mean*, is the same flow with none of PEACE's encoders (no "
            "graph attention, no prototypes, each user the mean of their source entity vectors): "
            "its difference is what the encoders add together."
        )
    domains = res.domains_in("normal")
    ndcg = [m for m in res.metrics_in("normal") if m.startswith("ndcg")] or res.metrics_in("normal")
    parts = [intro, setting_tables_for(res, "normal", variants, domains, ndcg)]
    head = res.headline()
    zero = [
        s
        for s in ("zero-shot-test", "zero-shot")
        if s in res.settings and PEACE in res.models_in(s) and head in res.metrics_in(s)
    ]
    for setting in zero:
        kept = [v for v in variants if v in res.models_in(setting)]
        parts.append(f"Zero-shot setting, `{setting}`, {metric_label(head)}:")
        parts.append(metric_table(res, setting, kept, res.domains_in(setting), [head]))
    parts.append(_ablation_summary(res, ["normal", *zero], variants, per_user, seed))
    written = []
    for metric in dict.fromkeys((head, "hit@10")):
        if metric not in res.metrics_in("normal"):
            continue
        name = f"ablation_{slug(metric.partition('@')[0])}.png"
        ablation_chart(res, variants, metric, figures / name)
        written.append(figures / name)
        parts.append(f"![Ablation, {metric_label(metric)}](figures/{name})")
    return "\n\n".join(parts), written


def _ablation_summary(
    res: Results,
    settings: Sequence[str],
    variants: Sequence[str],
    per_user: Mapping[str, Any] | None,
    seed: int,
) -> str:
    """Each variant minus PEACE per domain and on the mean over the domains, with paired
    per-user tests where per-user values were kept."""
    head = res.headline()
    domains = res.domains_in(settings[0])  # the columns, the same for every setting
    rows = []
    for setting in settings:
        full = {d: res.get(PEACE, setting, d, head) for d in domains}
        for v in variants[1:]:
            cells, pairs, means = [], [], []
            for d in domains:
                a, b = full[d], res.get(v, setting, d, head)
                if a is None or b is None:
                    cells.append("-")
                    continue
                means.append((a[0], b[0]))
                pa = (per_user or {}).get(PEACE, {}).get(setting, {}).get(d)
                pb = (per_user or {}).get(v, {}).get(setting, {}).get(d)
                test = None
                if pa is not None and pb is not None and len(pa) == len(pb) and len(pa):
                    pairs.append((np.asarray(pb), np.asarray(pa)))
                    test = paired_test(np.asarray(pb), np.asarray(pa), seed)
                cells.append(
                    f"{b[0] - a[0]:+.4f}" + ("" if test is None else f" (p {test.p_value:.2g})")
                )
            if not means:
                continue
            full_mean = float(np.mean([m[0] for m in means]))
            var_mean = float(np.mean([m[1] for m in means]))
            pooled = domain_mean_test(pairs, seed) if len(pairs) == len(means) else None
            rows.append(
                [
                    setting,
                    v,
                    f"{full_mean:.4f}",
                    f"{var_mean:.4f}",
                    f"{var_mean - full_mean:+.4f}",
                    "-" if pooled is None else f"{pooled.p_value:.2g}",
                    "-" if pooled is None else f"[{pooled.low:+.4f}, {pooled.high:+.4f}]",
                    *cells,
                ]
            )
    if not rows:
        return ""
    label = metric_label(head)
    intro = (
        f"Each variant minus PEACE, {label}: the mean over the domains (every domain weighs "
        "alike), and per domain. Where per-user values were kept (the mean over seeds of each "
        "test user), p of the mean over domains is a paired sign-flip randomisation test and its "
        "95% interval a paired bootstrap within each domain; p per domain is a two-sided Wilcoxon "
        "signed-rank test. A negative difference means the variant is behind the full model."
    )
    header = ["Setting", "Variant", "PEACE", "Variant", "difference", "p", "95% interval"]
    table = _table(header + list(domains), rows, "ll" + "r" * (len(header) - 2 + len(domains)))
    return intro + "\n\n" + table


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
