"""Start-up time of a ``peace`` process: importing the package and ``peace --help``.

Every command (``pretrain``, ``export``, ``serve``, each benchmark and test subprocess) pays it
once. Runs each case ``--repeats`` times in a fresh interpreter and writes
``benchmarks/results/startup.json``; ``--compare-src DIR`` also times another checkout's
``src`` folder (e.g. the previous commit) in alternation, on the same interpreter.

    python benchmarks/startup.py [--repeats 7] [--compare-src /tmp/old/src]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CASES = {
    "import torch": "import torch",
    "import peace.cli": "import peace.cli",
    "peace --help": "import sys; sys.argv = ['peace', '--help']; import peace.cli as c; c.main()",
}


def timed(code: str, src: Path | None) -> float:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=False, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--compare-src", type=Path, help="another checkout's src folder")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "startup.json")
    args = parser.parse_args()
    load = [round(x, 2) for x in os.getloadavg()]
    versions: dict[str, Path | None] = {"this checkout": None}
    if args.compare_src is not None:
        versions["compared"] = args.compare_src.resolve()
    seconds: dict[str, dict[str, list[float]]] = {v: {c: [] for c in CASES} for v in versions}
    for _ in range(args.repeats):
        for case, code in CASES.items():
            for version, src in versions.items():
                seconds[version][case].append(timed(code, src))
    medians = {
        v: {c: round(statistics.median(t), 3) for c, t in d.items()} for v, d in seconds.items()
    }
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "python": sys.version.split()[0],
        "usable_cpus": len(os.sched_getaffinity(0)),
        "load_average_at_start": load,
        "repeats": args.repeats,
        "seconds": seconds,
        "median_seconds": medians,
    }
    for version, cases in medians.items():
        for case, value in cases.items():
            print(f"{version:>14}  {case:<18} median {value:.2f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
