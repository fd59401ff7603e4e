"""Compute threads that share the machine: pre-training time when another process holds a CPU.

Runs the same pre-training (``peace pretrain --preset quickstart`` on the synthetic ``small``
platform, a fixed number of steps) in a fresh process, four ways:

* idle machine, threads chosen by peace (:func:`peace.utils.compute_threads`);
* idle machine, one thread per usable CPU (``PEACE_THREADS`` = CPUs: what torch picks alone);
* one CPU held by a busy process, threads chosen by peace;
* one CPU held by a busy process, one thread per usable CPU.

and reports the wall time of each and the slowdown a busy CPU causes. Writes
``benchmarks/results/threads.json``. Needs at least 2 usable CPUs and an otherwise idle machine.

    python benchmarks/threads.py [--steps 40] [--repeats 3]
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

RESULTS = Path(__file__).parent / "results" / "threads.json"
SPIN = "import time\nt = time.time()\nwhile time.time() - t < 3600: pass\n"


def run_pretrain(data: Path, out: Path, steps: int, threads: int | None) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("PEACE_THREADS", "OMP_NUM_THREADS")}
    if threads is not None:
        env["PEACE_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "peace", "pretrain", "--data", str(data), "--out", str(out)]
    cmd += ["--preset", "quickstart", "--quiet", "--set", f"pretrain.max_steps={steps}"]
    cmd += ["--set", f"pretrain.eval_every={steps}"]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cpus = usable_cpus()
    if len(cpus) < 2:
        raise SystemExit("benchmarks/threads.py needs at least 2 usable CPUs.")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        generate(data, seed=0, size="small")
        cases: dict[str, list[float]] = {}
        for busy in (False, True):
            spinner = None
            if busy:  # a process that holds the first usable CPU
                spinner = subprocess.Popen([sys.executable, "-c", SPIN])
                os.sched_setaffinity(spinner.pid, {cpus[0]})
                time.sleep(0.5)
            try:
                for name, threads in (("peace", None), ("one per CPU", len(cpus))):
                    key = f"{'one CPU busy' if busy else 'idle'}, threads: {name}"
                    cases[key] = [
                        run_pretrain(data, Path(tmp) / f"run{r}", args.steps, threads)
                        for r in range(args.repeats)
                    ]
                    print(f"{key:40s} median {statistics.median(cases[key]):6.1f} s", flush=True)
            finally:
                if spinner is not None:
                    spinner.kill()
                    spinner.wait()
    med = {k: round(statistics.median(v), 2) for k, v in cases.items()}
    slowdown = {
        name: round(med[f"one CPU busy, threads: {name}"] / med[f"idle, threads: {name}"], 2)
        for name in ("peace", "one per CPU")
    }
    for name, ratio in slowdown.items():
        print(f"slowdown with one CPU busy, threads {name}: {ratio}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "workload": f"peace pretrain --preset quickstart, synthetic small, {args.steps} steps",
                "usable_cpus": len(cpus),
                "repeats": args.repeats,
                "seconds": cases,
                "median_seconds": med,
                "slowdown_one_cpu_busy": slowdown,
                "python": platform.python_version(),
                "machine": platform.machine(),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
