"""Wall time of `peace report` in a fresh checkout: the t-SNE vectors pre-trained, or loaded.

A fresh checkout has no ``embeddings.npz`` (it is not committed), so `peace report` pre-trains
PEACE and PEACE w/o CPL again for the t-SNE section; with ``--pretrain-cache DIR``, the folder of
kept pre-trainings that `peace benchmark --pretrain-cache DIR` filled while making the report's
rows, it loads them instead. Two runs, each in a fresh process on a copy of the report folder
without ``embeddings.npz``: without the cache, then with it. Prints each wall time and the ratio,
checks that both wrote the report folder's own REPORT.md and figures, and writes
``benchmarks/results/report_cache_NAME.json`` (NAME: the report folder's name).

    python benchmarks/report_cache.py --data data/ml-1m --report reports/ml-1m --pretrain-cache DIR
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def outputs(folder: Path) -> dict[str, bytes]:
    """REPORT.md and every figure, by name."""
    files = [folder / "REPORT.md", *sorted((folder / "figures").glob("*"))]
    return {f.relative_to(folder).as_posix(): f.read_bytes() for f in files}


def timed_report(data: Path, folder: Path, extra: list[str]) -> float:
    cmd = [sys.executable, "-m", "peace", "report", "--data", str(data), "--out", str(folder)]
    t0 = time.perf_counter()
    subprocess.run([*cmd, *extra], check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the report's dataset folder")
    parser.add_argument("--report", type=Path, required=True, help="a report folder")
    parser.add_argument("--pretrain-cache", type=Path, required=True, help="kept pre-trainings")
    args = parser.parse_args()
    expected = outputs(args.report)
    cases = {
        "pre-trained again": [],
        "kept pre-trainings": ["--pretrain-cache", str(args.pretrain_cache)],
    }
    seconds, same = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, (key, extra) in enumerate(cases.items()):
            folder = Path(tmp) / f"report-{k}"
            shutil.copytree(args.report, folder, ignore=shutil.ignore_patterns("embeddings.npz"))
            seconds[key] = round(timed_report(args.data, folder, extra), 1)
            same[key] = outputs(folder) == expected
            print(f"{key:20s} {seconds[key]:7.1f} s  same report: {same[key]}", flush=True)
    ratio = round(seconds["pre-trained again"] / seconds["kept pre-trainings"], 1)
    print(f"pre-trained again / kept pre-trainings: {ratio}x")
    doc = {
        "workload": f"peace report --data {args.data} --out (a copy of {args.report} without "
        "embeddings.npz)",
        "seconds": seconds,
        "ratio": ratio,
        "same_report": same,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    path = RESULTS / f"report_cache_{args.report.resolve().name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {path}")
    if not all(same.values()):
        raise SystemExit("a report differs from the report folder's own")


if __name__ == "__main__":
    main()
