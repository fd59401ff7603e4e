"""The result tables of ``REPORT.md``: rows of ``results.json`` as models x (domain, metric).

:class:`Results` looks the rows up; :func:`metric_table` renders one table (``mean ± std`` over
seeds, the best mean of each column in bold), and :func:`setting_tables` the tables of a setting,
split by metric family when they would be too wide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from peace.eval.report.common import (
    HEADLINE,
    MODEL_ORDER,
    _cell,
    _ordered,
    _table,
    metric_label,
)
from peace.eval.results import METRICS, SETTINGS

MAX_VALUE_COLUMNS = 8  # wider metric tables are split by metric family, then by metric


class Results:
    """Lookup over the rows ``{model, setting, domain, metric, mean, std[, values]}`` of
    ``results.json`` (``values``: one per seed)."""

    def __init__(
        self,
        rows: Sequence[Mapping[str, Any]],
        domain_order: Sequence[str] = (),
        seeds: int | None = None,
    ):
        """``seeds = 1`` (or rows with ``n = 1``): no spread to show, std becomes NaN."""
        self.cells: dict[tuple[str, str, str, str], tuple[float, float]] = {}
        self.values: dict[tuple[str, str, str, str], tuple[float, ...]] = {}
        for r in rows:
            key = (str(r["model"]), str(r["setting"]), str(r["domain"]), str(r["metric"]))
            if r.get("values"):
                self.values[key] = tuple(float(v) for v in r["values"])
            std = float(r.get("std", 0.0) or 0.0)
            single = r.get("n", seeds) == 1
            self.cells[key] = (float(r["mean"]), float("nan") if single else std)
        self.models = _ordered((k[0] for k in self.cells), MODEL_ORDER)
        self.settings = _ordered((k[1] for k in self.cells), SETTINGS)
        self.domains = _ordered((k[2] for k in self.cells), list(domain_order))
        self.metrics = _ordered((k[3] for k in self.cells), METRICS)

    def get(self, model: str, setting: str, domain: str, metric: str) -> tuple[float, float] | None:
        return self.cells.get((model, setting, domain, metric))

    def seed_values(
        self, model: str, setting: str, domain: str, metric: str
    ) -> tuple[float, ...] | None:
        """The value of each seed, in the seeds' order; None where the row kept none."""
        return self.values.get((model, setting, domain, metric))

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
