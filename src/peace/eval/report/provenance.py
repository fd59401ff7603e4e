"""How a report's numbers were obtained: the hyper-parameter search with the pre-training curves,
and how to reproduce the run (commands, environment, runs, timings, configuration)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from peace.eval.report.common import (
    MODEL_ORDER,
    _numeric,
    _ordered,
    _table,
    _value,
    format_duration,
)


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
    ("loss_uni", "Eq. 4 on z_u"),
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


def _machine(env: Mapping[str, Any]) -> tuple[str, str, str]:
    """What makes two runs' floats comparable: the host build (the platform without its
    processor and C library), the CPU and torch's CPU kernels, each "" when not recorded."""
    platform = str(env.get("platform", ""))
    processor = str(env.get("processor", ""))
    if processor and f"-{processor}" in platform:
        platform = platform.split(f"-{processor}")[0]
    return platform, str(env.get("cpu", "")), str(env.get("cpu_capability", ""))


def machine_label(env: Mapping[str, Any]) -> str:
    """A run's machine as one table cell, e.g. "Linux-6.1, AMD EPYC, AVX2 kernels, 1 thread"."""
    platform, cpu, kernels = _machine(env)
    parts = [platform or "host not recorded", cpu or "CPU not recorded"]
    parts.append(f"{kernels} kernels" if kernels else "kernels not recorded")
    threads = env.get("threads")
    if threads:
        parts.append(f"{threads} thread" + ("" if threads == 1 else "s"))
    return ", ".join(parts)


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
            [
                str(i),
                ", ".join(r.get("models") or [])
                + ("" if r.get("settings", "all") == "all" else " (zero-shot rows only)"),
                machine_label(r.get("environment") or {}),
                f"{float(r.get('wall_seconds') or 0):,.0f}",
            ]
            for i, r in enumerate(runs, start=1)
        ]
        parts.append(
            "The rows come from several runs on the same data, seeds and configuration "
            "(`peace benchmark --update` keeps the rows of the models it does not run; with "
            "`--zero-shot-only` it replaces only the zero-shot rows of the PEACE variants it "
            "runs, whose normal rows do not read the zero-shot score's keys):\n\n"
            + _table(["Run", "Models", "Machine", "Wall (s)"], rows, "lllr")
        )
        # hosts by build and CPU: a run that did not record its kernels may share them
        hosts = {_machine(r.get("environment") or {})[:2] for r in runs}
        if len(hosts) > 1:
            parts.append(
                f"These runs were made on {len(hosts)} kinds of host (their build or CPU "
                "differ). The same code and seed can give other floats on another host, and "
                "a trained model's rows move with them (docs/experiments.md, section 105): a "
                "margin between rows of different hosts includes that difference."
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
