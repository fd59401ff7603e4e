"""The results file shared by ``peace quickstart`` and ``peace benchmark``.

``{"dataset": str, "seeds": [int], "rows": [{"model", "setting", "domain", "metric", "mean",
"std", "values"}], ...}``; ``values`` (the value of each seed, in the order of ``seeds``) is
optional, as files written before it have none. Further top-level keys (configuration, timings,
versions) are allowed.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from peace.utils import atomic_write_text

ROW_KEYS = ("model", "setting", "domain", "metric", "mean", "std")
SEED_VALUES = "values"
"""Optional row key: the value of each seed, in the order of the file's ``seeds``."""
SETTINGS = ("normal", "zero-shot", "zero-shot-test")
METRICS = ("hit@5", "hit@10", "ndcg@5", "ndcg@10")


def cpu_model() -> str:
    """The CPU's model name. Float kernels differ between CPU families, so the same seed gives
    the same numbers on the same kind of CPU; a results file records which one it ran on."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    env = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu": cpu_model(),
        # the instruction set torch's CPU kernels use (e.g. AVX2, AVX512): the same seed gives
        # the same bits only where it and the CPU's kind are the same
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }
    device = os.environ.get("PEACE_DEVICE", "")
    if device and device != "cpu":  # where PEACE pre-trained (peace.flows.pretrain)
        env["device"] = device
        if device.startswith("cuda") and torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def write_results(
    path: str | Path, dataset: str, seeds: list[int], rows: list[dict], **extra: Any
) -> dict:
    doc = {
        "dataset": dataset,
        "seeds": list(seeds),
        "rows": [_row(r) for r in rows],
        **extra,
    }
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    return doc


def _row(r: dict) -> dict:
    row = {k: r[k] for k in ROW_KEYS}
    if r.get(SEED_VALUES) is not None:
        row[SEED_VALUES] = [float(v) for v in r[SEED_VALUES]]
    return row


def results_table(rows: list[dict], domain: str, seeds: int | None = None) -> list[list[str]]:
    """Rows ``[model, setting, hit@5, hit@10, ndcg@5, ndcg@10]`` of one domain, mean ± std
    (the mean alone for one seed: there is no spread to show)."""
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for r in rows:
        if r["domain"] != domain:
            continue
        single = r.get("n", seeds) == 1
        cells.setdefault((r["model"], r["setting"]), {})[r["metric"]] = (
            f"{r['mean']:.4f}" if single else f"{r['mean']:.4f} ± {r['std']:.4f}"
        )
    order = {s: i for i, s in enumerate(SETTINGS)}
    out = []
    for (model, setting), vals in sorted(cells.items(), key=lambda kv: (order[kv[0][1]], kv[0][0])):
        out.append([model, setting] + [vals.get(m, "-") for m in METRICS])
    return out
