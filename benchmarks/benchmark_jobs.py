"""Wall time of `peace benchmark` for the four PEACE variants, in one process or with `--jobs 2`.

The update after a change that PEACE alone reads (`peace benchmark --models "PEACE,PEACE w/o
GL,PEACE w/o CPL,PEACE w/o PEA" --update`) runs the four variants and nothing else. Three ways,
each in a fresh process on the same data:

* ``--jobs 1``: one process, threads chosen by peace;
* ``--jobs 1``, one thread (``PEACE_THREADS=1``): the four variants one after another on one
  thread, which is how ``--jobs 2`` ran them while they formed a single group;
* ``--jobs 2``: two groups of two variants, one thread each (each group searches PEACE).

Prints the wall time of each and writes ``benchmarks/results/benchmark_jobs.json``. The default
workload is the dev preset (``--dev``) on the synthetic ``small`` platform; ``--data`` takes
another dataset folder.

    python benchmarks/benchmark_jobs.py [--data DIR] [--repeats 1]
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

from peace.data.synthetic import generate
from peace.utils import usable_cpus

RESULTS = Path(__file__).parent / "results" / "benchmark_jobs.json"
VARIANTS = "PEACE,PEACE w/o GL,PEACE w/o CPL,PEACE w/o PEA"
CASES = {
    "jobs 1, threads: peace": (1, None),
    "jobs 1, one thread (the variants as one group)": (1, 1),
    "jobs 2 (two groups, one thread each)": (2, None),
}


def run_benchmark(data: Path, out: Path, jobs: int, threads: int | None) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("PEACE_THREADS", "OMP_NUM_THREADS")}
    if threads is not None:
        env["PEACE_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "peace", "benchmark", "--data", str(data), "--out", str(out)]
    cmd += ["--models", VARIANTS, "--dev", "--quiet", "--jobs", str(jobs)]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=None, help="dataset folder (default: synthetic)"
    )
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    cpus = usable_cpus()
    if len(cpus) < 2:
        raise SystemExit("benchmarks/benchmark_jobs.py needs at least 2 usable CPUs.")
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "data"
            generate(data, seed=0, size="small")
        seconds: dict[str, list[float]] = {}
        for key, (jobs, threads) in CASES.items():
            seconds[key] = [
                run_benchmark(data, Path(tmp) / f"run-{jobs}-{threads}-{r}", jobs, threads)
                for r in range(args.repeats)
            ]
            print(f"{key:48s} median {statistics.median(seconds[key]):7.1f} s", flush=True)
    med = {k: round(statistics.median(v), 1) for k, v in seconds.items()}
    keys = list(CASES)
    ratios = {
        "one group on one thread / jobs 2": round(med[keys[1]] / med[keys[2]], 2),
        "jobs 1 / jobs 2": round(med[keys[0]] / med[keys[2]], 2),
    }
    for name, ratio in ratios.items():
        print(f"{name}: {ratio}x")
    workload = f"peace benchmark --models '{VARIANTS}' --dev"
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
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
