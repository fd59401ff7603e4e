"""Wall time of `peace benchmark` for the four PEACE variants, in one process or with `--jobs 2`.

The update after a change that PEACE alone reads (`peace benchmark --models "PEACE,PEACE w/o
GL,PEACE w/o CPL,PEACE w/o PEA" --update`) runs the four variants and nothing else. Three ways,
each in a fresh process on the same data:

* ``--jobs 1``: one process, threads chosen by peace;
* ``--jobs 1``, one thread (``PEACE_THREADS=1``): the four variants one after another on one
  thread, which is how ``--jobs 2`` ran them while they formed a single group;
* ``--jobs 2``: two groups of two variants, one thread each (PEACE searched once beforehand,
  each stage's candidates side by side).

Prints the wall time of each and writes ``benchmarks/results/benchmark_jobs.json``. The default
workload is the dev preset (``--dev``: one seed, three target domains, the first search
candidate of each value) on the synthetic ``small`` platform; ``--data`` takes another dataset
folder. ``--search full`` searches every candidate instead (one seed, the same three domains),
as the record does, and writes ``benchmark_jobs_search.json``. ``--compare-src DIR`` times
``--jobs 2`` alone, here and from another checkout's ``src`` folder, one after the other in each
repeat.

    python benchmarks/benchmark_jobs.py [--data DIR] [--repeats 1] [--search full]
        [--compare-src /tmp/old/src]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from peace.data.dataset import load_dataset
from peace.data.synthetic import generate
from peace.utils import usable_cpus

RESULTS = Path(__file__).parent / "results"
VARIANTS = "PEACE,PEACE w/o GL,PEACE w/o CPL,PEACE w/o PEA"
CASES = {
    "jobs 1, threads: peace": (1, None),
    "jobs 1, one thread (the variants as one group)": (1, 1),
    "jobs 2 (two groups, one thread each)": (2, None),
}


def workload_args(data: Path, search: str) -> list[str]:
    """The benchmark's arguments for a workload: the dev preset, or its seed and domains with
    every search candidate."""
    if search == "dev":
        return ["--dev"]
    ds = load_dataset(data)
    domains = json.dumps([ds.domains[d] for d in ds.target_domains[:3]])
    return ["--seeds", "1", "--set", f"eval.domains={domains}"]


def run_benchmark(
    data: Path, out: Path, jobs: int, threads: int | None, extra: list[str], src: Path | None
) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("PEACE_THREADS", "OMP_NUM_THREADS")}
    if threads is not None:
        env["PEACE_THREADS"] = str(threads)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    cmd = [sys.executable, "-m", "peace", "benchmark", "--data", str(data), "--out", str(out)]
    cmd += ["--models", VARIANTS, "--quiet", "--jobs", str(jobs), *extra]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=None, help="dataset folder (default: synthetic)"
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--search", choices=("dev", "full"), default="dev")
    parser.add_argument("--compare-src", type=Path, help="another checkout's src folder")
    args = parser.parse_args()
    cpus = usable_cpus()
    if len(cpus) < 2:
        raise SystemExit("benchmarks/benchmark_jobs.py needs at least 2 usable CPUs.")
    here = Path(__file__).resolve().parents[1] / "src"
    if args.compare_src is None:
        cases = {key: (jobs, threads, None) for key, (jobs, threads) in CASES.items()}
    else:
        cases = {
            "jobs 2, this checkout": (2, None, here),
            f"jobs 2, {args.compare_src}": (2, None, args.compare_src.resolve()),
        }
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "data"
            generate(data, seed=0, size="small")
        extra = workload_args(data, args.search)
        seconds: dict[str, list[float]] = {key: [] for key in cases}
        for r in range(args.repeats):  # the cases alternate within each repeat
            for k, (key, (jobs, threads, src)) in enumerate(cases.items()):
                out = Path(tmp) / f"run-{k}-{r}"
                seconds[key].append(run_benchmark(data, out, jobs, threads, extra, src))
                print(f"{key:48s} repeat {r}: {seconds[key][-1]:7.1f} s", flush=True)
    med = {k: round(statistics.median(v), 1) for k, v in seconds.items()}
    keys = list(cases)
    if args.compare_src is None:
        ratios = {
            "one group on one thread / jobs 2": round(med[keys[1]] / med[keys[2]], 2),
            "jobs 1 / jobs 2": round(med[keys[0]] / med[keys[2]], 2),
        }
    else:
        ratios = {"compared / this checkout": round(med[keys[1]] / med[keys[0]], 2)}
    for key, value in med.items():
        print(f"{key:48s} median {value:7.1f} s")
    for name, ratio in ratios.items():
        print(f"{name}: {ratio}x")
    workload = f"peace benchmark --models '{VARIANTS}' {' '.join(extra)}"
    doc = {
        "workload": f"{workload} on {'synthetic small' if args.data is None else data}",
        "usable_cpus": len(cpus),
        "repeats": args.repeats,
        "seconds": seconds,
        "median_seconds": med,
        "ratios": ratios,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    path = RESULTS / (
        "benchmark_jobs.json" if args.search == "dev" else "benchmark_jobs_search.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
