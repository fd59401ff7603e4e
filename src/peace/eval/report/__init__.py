"""``REPORT.md`` of ``peace benchmark``: the tables and figures of Sec. 5 from ``results.json``.

The report holds, in this order: what was run; the data statistics (Table 1); the normal setting
(Table 2); the zero-shot settings (Table 3); the ablation (Figure 4); t-SNE pictures of the entity
vectors coloured by prototype, with a coherence number (Figure 5); where PEACE wins and loses;
the hyper-parameter search; and how to reproduce the run. Figures are PNG files under
``figures/`` linked relatively. The output depends on the inputs only (fixed seeds, sorted
orders, no clock), so the same inputs give the same ``REPORT.md``.

The parts: :mod:`~peace.eval.report.tables` (result tables), :mod:`~peace.eval.report.figures`
(ablation bars, t-SNE), :mod:`~peace.eval.report.sections` (the result sections),
:mod:`~peace.eval.report.wins` (wins and losses), :mod:`~peace.eval.report.provenance` (search
and reproduction); this module puts them together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from peace.eval.report.common import (
    ABLATION_VARIANTS,
    HEADLINE,
    MODEL_ORDER,
    PEACE,
    SECTION_TITLES,
    SETTING_TITLES,
    format_duration,
    metric_label,
    slug,
)
from peace.eval.report.figures import ablation_chart, coherence, top_prototypes, tsne_chart
from peace.eval.report.provenance import _section_reproduce, _section_search, timing_rows
from peace.eval.report.sections import (
    _section_ablation,
    _section_embeddings,
    _section_intro,
    _section_normal,
    _section_statistics,
    _section_zero_shot,
)
from peace.eval.report.tables import Results, metric_table, setting_tables
from peace.eval.report.wins import _section_wins, win_loss
from peace.utils import atomic_write_text

__all__ = [
    "ABLATION_VARIANTS",
    "HEADLINE",
    "MODEL_ORDER",
    "PEACE",
    "SECTION_TITLES",
    "SETTING_TITLES",
    "Results",
    "ablation_chart",
    "coherence",
    "format_duration",
    "metric_label",
    "metric_table",
    "render_report",
    "setting_tables",
    "slug",
    "timing_rows",
    "top_prototypes",
    "tsne_chart",
    "win_loss",
    "write_report",
]


def render_report(
    out: Path,
    doc: Mapping[str, Any],
    statistics: pd.DataFrame | None,
    embeddings: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    seed: int = 0,
    history: Mapping[str, Sequence[int]] | None = None,
) -> tuple[str, list[Path]]:
    """The text of ``REPORT.md`` and the figures written under ``out / "figures"``.

    ``history`` maps a target domain to each test user's positive training rows there (in the
    order of the per-user values, :func:`peace.eval.protocol.target_history`); with it, the
    wins-and-losses section splits each margin by that count.
    """
    figures = Path(out) / "figures"
    domain_order: list[str] = []
    if statistics is not None and len(statistics) and "domain" in statistics.columns:
        roles = statistics["role"] if "role" in statistics.columns else ["target"] * len(statistics)
        domain_order = [
            str(d) for d, r in zip(statistics["domain"], roles, strict=True) if str(r) != "source"
        ]
    res = Results(doc.get("rows") or [], domain_order, len(doc.get("seeds") or []) or None)
    ablation, abl_figs = _section_ablation(res, figures, doc.get("per_user"), seed)
    emb, emb_figs = _section_embeddings(embeddings, figures, seed)
    graph = doc.get("graph")
    bodies = [
        _section_intro(doc, res),
        _section_statistics(statistics, graph if isinstance(graph, Mapping) else None),
        _section_normal(res),
        _section_zero_shot(res, _prior_weight(doc), _prior_counts(doc), _profile_weight(doc)),
        ablation,
        emb,
        _section_wins(res, doc.get("per_user"), history),
        _section_search(doc),
        _section_reproduce(doc),
    ]
    lines = [f"# PEACE benchmark on {doc.get('dataset', 'unknown')}"]
    for i, (title, body) in enumerate(zip(SECTION_TITLES, bodies, strict=True), start=1):
        lines.append(f"## {i}. {title}\n\n{body}")
    text = "\n\n".join(lines).rstrip() + "\n"
    return text, abl_figs + emb_figs


def _eval_section(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    config = doc.get("config")
    section = config.get("eval") if isinstance(config, Mapping) else None
    return section if isinstance(section, Mapping) else {}


def _prior_weight(doc: Mapping[str, Any]) -> float:
    """``eval.zero_shot_prior`` of the document's configuration (0 where it predates it)."""
    return float(_eval_section(doc).get("zero_shot_prior", 0.0) or 0.0)


def _profile_weight(doc: Mapping[str, Any]) -> float:
    """``eval.zero_shot_profile_prior`` of the document's configuration (0 where it predates
    it)."""
    return float(_eval_section(doc).get("zero_shot_profile_prior", 0.0) or 0.0)


def _prior_counts(doc: Mapping[str, Any]) -> str:
    """``eval.zero_shot_prior_counts`` of the document's configuration (rows where it predates
    it)."""
    return str(_eval_section(doc).get("zero_shot_prior_counts", "rows"))


def write_report(
    out: Path,
    doc: dict,
    statistics: pd.DataFrame,
    embeddings: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    seed: int = 0,
    history: Mapping[str, Sequence[int]] | None = None,
) -> Path:
    """Write ``out/REPORT.md`` and its figures under ``out/figures``; return the report's path.

    ``doc`` is the ``results.json`` document (``dataset``, ``seeds``, ``rows`` and optionally
    ``graph``, ``search``, ``chosen``, ``wall_seconds``, ``timings``, ``environment``,
    ``commands``, ``config``); ``statistics`` the per-domain counts of Table 1; ``embeddings``
    maps a variant name to its entity vectors ``[E, d]`` and prototypes ``[n, d]``; ``history``
    as in :func:`render_report`.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text, _ = render_report(out, doc, statistics, embeddings, seed, history)
    path = out / "REPORT.md"
    atomic_write_text(path, text)
    return path
