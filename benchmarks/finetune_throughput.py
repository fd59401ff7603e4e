"""Fine-tuning flow (Sec. 4.5) speed: seconds per epoch of Eq. 11-12 on one target domain.

Pre-trains PEACE briefly with the benchmark preset's sizes (``peace benchmark``: d = 64, M = 8,
n = 64, K = 4, H = 50) on a synthetic platform (``--size``) or on an imported dataset
(``--data``), then fine-tunes one target domain's normal ranker for ``--epochs`` epochs (frozen
encoders, the preset's head without ``finetune.tune_user_mlp``, which would turn the memo off) in
two ways, alternated ``--repeats`` times:

* ``memo``: the validation pairs' user vectors (Eq. 8-9, Eq. 2), zero-shot scores and DeepFM
  codes computed at the first validation and kept (:class:`peace.flows.finetune.PairMemo`);
* ``afresh``: every validation scores every (user, item) pair through the encoders again.

Both must give the same epochs (loss and metrics, exactly); the script checks it. Reports the
median seconds per epoch of each and their ratio; writes
``benchmarks/results/finetune_throughput.json``.

Usage::

    python benchmarks/finetune_throughput.py
    python benchmarks/finetune_throughput.py --data data/ml-1m --domain "Children's"
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from serve_latency import machine

from peace.config import PeaceConfig
from peace.data.dataset import load_dataset
from peace.data.splits import split_targets
from peace.data.synthetic import generate
from peace.flows import finetune
from peace.flows.finetune import fit_ranker, ranking_task
from peace.flows.pretrain import pretrain
from peace.flows.rankers import PeaceRanker, TargetDomain, zero_shot_prior

ROOT = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=["small", "medium", "large"], default="small")
    parser.add_argument("--data", type=Path, help="an imported dataset instead of synthetic data")
    parser.add_argument("--domain", help="target domain (default: the first)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pretrain-steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "peace-finetune-throughput"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "finetune_throughput.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = args.data
    if data is None:
        data = args.work / f"data-{args.size}"
        if not (data / "interactions.parquet").exists():
            generate(data, seed=args.seed, size=args.size)
    ds = load_dataset(data)
    cfg = PeaceConfig.preset("benchmark").override(
        [
            f"pretrain.max_steps={args.pretrain_steps}",
            f"finetune.epochs={args.epochs}",
            "finetune.min_steps=0",  # the preset's step floor would add epochs to a small domain
            "finetune.patience=1000",  # every epoch runs: the same work in both ways
            # The memo keeps the head's inputs only while nothing before the head trains; the
            # preset's head also tunes Eq. 9's MLP and Eq. 2, and then both ways are the same.
            "finetune.tune_user_mlp=false",
            f"seed={args.seed}",
        ]
    )
    run = args.work / "run"
    shutil.rmtree(run, ignore_errors=True)
    pre = pretrain(ds, cfg, out=run, show_progress=False)
    names = {ds.domains[d]: d for d in ds.target_domains}
    name = args.domain or next(iter(names))
    if name not in names:
        sys.exit(f"--domain {name!r}: not a target domain of {data}; choose from {list(names)}.")
    d = names[name]
    split = split_targets(ds, cfg.eval.split)[d]
    target = TargetDomain(ds, d)
    valid = ranking_task(split.valid, split.train)
    usable = finetune.PairMemo.usable

    def fit(memo: bool) -> tuple[float, list[dict]]:
        finetune.PairMemo.usable = usable if memo else (lambda *a: False)
        try:
            ranker = PeaceRanker(pre, target, cfg, zero_shot_prior(ds, pre, cfg))
            t = time.perf_counter()
            log = fit_ranker(
                ranker, target, split.train, valid, cfg.finetune, args.seed, show_progress=False
            )
            return (time.perf_counter() - t) / len(log), log
        finally:
            finetune.PairMemo.usable = usable

    times: dict[str, list[float]] = {"memo": [], "afresh": []}
    logs = {}
    for r in range(args.repeats):
        for way in ("afresh", "memo") if r % 2 else ("memo", "afresh"):
            seconds, logs[way] = fit(way == "memo")
            times[way].append(seconds)
            print(f"repeat {r} {way}: {seconds:.3f} s/epoch", flush=True)
    if logs["memo"] != logs["afresh"]:
        sys.exit("the memo changed the fine-tuning epochs: a bug, not a speed-up.")
    med = {way: statistics.median(v) for way, v in times.items()}
    result = {
        "machine": {**machine(), "threads": args.threads},
        "data": str(args.data) if args.data else f"synthetic {args.size}",
        "domain": name,
        "train_rows": len(split.train),
        "valid_users": len(valid),
        "catalogue": len(target.catalogue),
        "epochs": args.epochs,
        "repeats": args.repeats,
        "seconds_per_epoch": {way: [round(x, 4) for x in v] for way, v in times.items()},
        "median_seconds_per_epoch": {way: round(v, 4) for way, v in med.items()},
        "speedup": round(med["afresh"] / med["memo"], 2),
        "same_epochs": True,
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
