"""Evaluation's bookkeeping: what every evaluated task pays besides the model's own products.

On a dataset folder (``--data``, e.g. ``data/ml-1m``; default: the synthetic ``small``
platform) with the default target splits, times, each ``--repeats`` times in one process:

* ``ranking tasks``: :func:`peace.flows.finetune.ranking_task` of every target domain's three
  tasks (all rows, test with earlier rows excluded, validation with training rows excluded);
* ``metrics``: :func:`peace.metrics.ranking_metrics` (Hit / NDCG at 5 and 10, seen items
  excluded) of seeded random scores for the largest test task against its whole catalogue;
* ``paired test``: :func:`peace.eval.significance.paired_test` over that task's users;
* ``source-entity counts``: :func:`peace.flows.rankers.source_entity_counts` at the pre-training
  cut-off (the zero-shot prior counted in users).

Prints the medians and writes ``benchmarks/results/evaluation.json``; ``--compare-src DIR`` also
times another checkout's ``src`` folder (e.g. the previous commit) in a fresh process, in
alternation with this one, and checks that both give the same numbers.

    python benchmarks/evaluation.py [--data data/ml-1m] [--repeats 5] [--compare-src /tmp/old/src]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
STEPS = ("ranking tasks", "metrics", "paired test", "source-entity counts")


def _digest(*arrays) -> str:
    """A fingerprint of the numbers a step produced, to compare two checkouts."""
    import numpy as np

    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(np.asarray(a, dtype=np.float64)).tobytes())
    return h.hexdigest()[:16]


def measure(data: str | None, repeats: int) -> dict:
    """Seconds of each step per repeat and a fingerprint of its result, in this process."""
    import numpy as np
    import pandas as pd
    import scipy.stats  # noqa: F401 - the paired test's first call imports it: not timed
    import torch

    from peace.data.dataset import load_dataset
    from peace.data.splits import pretrain_cutoff, split_targets
    from peace.eval.significance import paired_test
    from peace.flows.finetune import ranking_task
    from peace.flows.rankers import source_entity_counts
    from peace.metrics import ranking_metrics

    torch.set_num_threads(1)
    if data is None:
        from peace.data.synthetic import generate

        folder = Path(tempfile.mkdtemp()) / "small"
        generate(folder, seed=0, size="small")
        data = str(folder)
    ds = load_dataset(data)
    splits = split_targets(ds)
    cutoff = pretrain_cutoff(splits)

    def tasks() -> list:
        out = []
        for s in splits.values():
            out.append(ranking_task(s.all))
            out.append(ranking_task(s.test, pd.concat([s.train, s.valid])))
            out.append(ranking_task(s.valid, s.train))
        return out

    built = tasks()
    tests = [(d, built[3 * i + 1]) for i, d in enumerate(splits)]
    d, test = max(tests, key=lambda pair: len(pair[1].users))
    catalogue = np.flatnonzero(ds.item_domain == d)
    scores = torch.rand(len(test.users), len(catalogue), generator=torch.Generator().manual_seed(0))
    per_user = np.random.default_rng(0).random((2, len(test.users)))

    steps = {
        "ranking tasks": lambda: [
            np.concatenate([t.users, *t.relevant, *(np.sort(e) for e in t.exclude or [])])
            for t in tasks()
        ],
        "metrics": lambda: list(
            ranking_metrics(scores, catalogue, test.relevant, test.exclude).values()
        ),
        "paired test": lambda: [list(paired_test(*per_user).__dict__.values())],
        "source-entity counts": lambda: list(source_entity_counts(ds, cutoff)[:2]),
    }
    seconds: dict[str, list[float]] = {s: [] for s in STEPS}
    digests = {}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            result = step()
            seconds[name].append(time.perf_counter() - start)
            digests[name] = _digest(*result)
    return {
        "data": data,
        "largest test task": {"users": len(test.users), "catalogue": len(catalogue)},
        "ranking tasks": len(built),
        "seconds": seconds,
        "digests": digests,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="dataset folder (default: synthetic small)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compare-src", type=Path, help="another checkout's src folder")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "evaluation.json")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:  # one measurement in this process, for the parent to read
        args.child.write_text(json.dumps(measure(args.data, args.repeats)))
        return
    load = [round(x, 2) for x in os.getloadavg()]
    versions: dict[str, Path | None] = {"this checkout": ROOT.parent / "src"}
    if args.compare_src is not None:
        versions["compared"] = args.compare_src.resolve()
    runs: dict[str, list[dict]] = {v: [] for v in versions}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(1 if args.compare_src is None else 2):  # alternated
            for version, src in versions.items():
                out = Path(tmp) / "child.json"
                cmd = [
                    sys.executable,
                    __file__,
                    "--repeats",
                    str(args.repeats),
                    "--child",
                    str(out),
                ]
                if args.data:
                    cmd += ["--data", args.data]
                env = {**os.environ, "PYTHONPATH": str(src)}
                subprocess.run(cmd, env=env, check=True)
                runs[version].append(json.loads(out.read_text()))
    medians = {
        v: {s: round(statistics.median(x for r in rs for x in r["seconds"][s]), 4) for s in STEPS}
        for v, rs in runs.items()
    }
    first = runs["this checkout"][0]
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "python": sys.version.split()[0],
        "usable_cpus": len(os.sched_getaffinity(0)),
        "load_average_at_start": load,
        "data": args.data or "synthetic small",
        "largest test task": first["largest test task"],
        "ranking tasks": first["ranking tasks"],
        "repeats": args.repeats,
        "median_seconds": medians,
        "seconds": {v: [r["seconds"] for r in rs] for v, rs in runs.items()},
    }
    if args.compare_src is not None:
        result["ratios (compared / this checkout)"] = {
            s: round(medians["compared"][s] / medians["this checkout"][s], 2) for s in STEPS
        }
        result["same numbers"] = {
            s: first["digests"][s] == runs["compared"][0]["digests"][s] for s in STEPS
        }
    task = first["largest test task"]
    print(
        f"{result['data']}: {first['ranking tasks']} ranking tasks; largest test task "
        f"{task['users']} users x {task['catalogue']} items"
    )
    for version, steps in medians.items():
        for step, value in steps.items():
            print(f"{version:>14}  {step:<21} median {value:.4f} s")
    for step, same in result.get("same numbers", {}).items():
        print(f"{step:<21} same numbers in both: {same}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
