"""Names, orders and the markdown helpers every part of ``REPORT.md`` uses."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from peace.models import FINE_TUNED, ZERO_SHOT

ABLATION_VARIANTS = ("PEACE", "PEACE w/o GL", "PEACE w/o CPL", "PEACE w/o PEA")
REFERENCES = (
    "Popularity",
    "DeepFM",
    "Random",
    "Entity prior",
    "Profile prior",
    "Entity overlap",
    "Entity mean",
)
# Known names first, in the order of the paper; any other name follows, sorted.
MODEL_ORDER = (*ABLATION_VARIANTS, *REFERENCES, *FINE_TUNED, *ZERO_SHOT)
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
    """A search value or config value, compact and stable ("-" for none)."""
    if v is None:
        return "-"
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


def _count(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v)).lower()
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f"{int(f):,}" if f.is_integer() else f"{f:,.4g}"
    return str(v)


def _numeric(text: str) -> bool:
    if text == "-":
        return True
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True
