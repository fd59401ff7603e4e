"""Wall time of `peace benchmark` for the four PEACE variants with and without `--pretrain-cache`.

A change that only the heads read (here ``finetune.tune_user_mlp=false``) repeats every
pre-training; with ``--pretrain-cache DIR`` the benchmark loads them from DIR instead. Four runs,
each in a fresh process with ``--jobs 2`` on the same data, in this order:

* without a cache;
* with an empty cache (the same rows; every pre-training is written to the cache);
* the head change, without a cache;
* the head change, with the cache the second run filled.

Prints each wall time and the ratios, checks that the runs with and without the cache wrote the
same rows, and writes ``benchmarks/results/pretrain_cache.json`` (``pretrain_cache_NAME.json``
for a dataset folder NAME given by ``--data``). The default workload is the dev preset (one seed,
three target domains, the first search candidate) on the synthetic ``small`` platform; ``--search
full`` searches every candidate.

    python benchmarks/pretrain_cache.py [--data DIR] [--search full]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

from benchmark_jobs import VARIANTS, run_benchmark, workload_args

from peace.data.synthetic import generate
from peace.utils import usable_cpus

RESULTS = Path(__file__).parent / "results"
HEAD_CHANGE = ["--set", "finetune.tune_user_mlp=false"]


def rows(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())["rows"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=None, help="dataset folder (default: synthetic)"
    )
    parser.add_argument("--search", choices=("dev", "full"), default="dev")
    args = parser.parse_args()
    if len(usable_cpus()) < 2:
        raise SystemExit("benchmarks/pretrain_cache.py needs at least 2 usable CPUs.")
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "data"
            generate(data, seed=0, size="small")
        extra = workload_args(data, args.search)
        cache = ["--pretrain-cache", str(Path(tmp) / "cache")]
        cases = {
            "no cache": extra,
            "empty cache": extra + cache,
            "head change, no cache": extra + HEAD_CHANGE,
            "head change, kept pre-trainings": extra + HEAD_CHANGE + cache,
        }
        seconds, outs = {}, {}
        for k, (key, arguments) in enumerate(cases.items()):
            outs[key] = Path(tmp) / f"run-{k}"
            seconds[key] = round(run_benchmark(data, outs[key], 2, None, arguments, None), 1)
            print(f"{key:36s} {seconds[key]:7.1f} s", flush=True)
        same = {
            "no cache = empty cache": rows(outs["no cache"]) == rows(outs["empty cache"]),
            "head change: no cache = kept": rows(outs["head change, no cache"])
            == rows(outs["head change, kept pre-trainings"]),
        }
    keys = list(cases)
    ratios = {
        "empty cache / no cache": round(seconds[keys[1]] / seconds[keys[0]], 2),
        "head change: no cache / kept pre-trainings": round(seconds[keys[2]] / seconds[keys[3]], 2),
    }
    for name, ratio in ratios.items():
        print(f"{name}: {ratio}x")
    for name, equal in same.items():
        print(f"same rows, {name}: {equal}")
    workload = f"peace benchmark --models '{VARIANTS}' --jobs 2 {' '.join(extra)}"
    doc = {
        "workload": f"{workload} on {'synthetic small' if args.data is None else data}",
        "head_change": " ".join(HEAD_CHANGE),
        "usable_cpus": len(usable_cpus()),
        "seconds": seconds,
        "ratios": ratios,
        "same_rows": same,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    suffix = "" if args.data is None else f"_{args.data.resolve().name}"
    path = RESULTS / f"pretrain_cache{suffix}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {path}")
    if not all(same.values()):
        raise SystemExit("the kept pre-trainings changed the rows")


if __name__ == "__main__":
    main()
