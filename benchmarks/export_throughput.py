"""Offline inference flow (Sec. 4.5) throughput: users per second of a store export.

For each synthetic platform of ``--size`` (default ``medium``, 20,000 users, and ``large``,
500,000 users), generates it, pre-trains PEACE briefly with the paper's model sizes (as
``serve_latency.py``: d = 64, M = 10, n = 900, K = 160; H = 50), then exports a store version
``--repeats`` times and reports, per repeat and as medians:

* the whole export (:func:`peace.flows.offline_inference.export`: the entity table, every user's
  interests and universal vector, item vectors, the Arrow files, the manifest);
* the user part alone (Eq. 1 over each user's source histories, then Eq. 2, on an entity table
  computed beforehand), which grows with the number of users while the rest is per catalogue.

A small platform shows the fixed cost of a store version (loading the run, the entity table,
publishing); a large one what the export costs per user where the users dominate.

Writes ``benchmarks/results/export_throughput.json``.

Usage::

    python benchmarks/export_throughput.py
    python benchmarks/export_throughput.py --size small --repeats 2
    python benchmarks/export_throughput.py --size medium   # one platform only
    python benchmarks/export_throughput.py --reuse         # the runs pre-trained before
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

import numpy as np
import torch
from serve_latency import MODEL, machine

from peace.config import PeaceConfig
from peace.data.dataset import load_dataset
from peace.data.synthetic import generate
from peace.flows.offline_inference import export
from peace.flows.pretrain import pretrain
from peace.flows.pretrained import load_pretrained

ROOT = Path(__file__).resolve().parent


def measure(args: argparse.Namespace, size: str) -> dict:
    """Generate (once per work folder), pre-train briefly and export ``args.repeats`` times."""
    data, run = args.work / f"data-{size}", args.work / f"run-{size}"
    t = time.perf_counter()
    if not (data / "interactions.parquet").exists():
        generate(data, seed=args.seed, size=size)
    ds = load_dataset(data)
    overrides = [*MODEL, f"pretrain.max_steps={args.pretrain_steps}", f"seed={args.seed}"]
    cfg = PeaceConfig().override(overrides)
    if not (args.reuse and (run / "model.safetensors").exists()):
        shutil.rmtree(run, ignore_errors=True)
        pretrain(ds, cfg, out=run, show_progress=False)
    print(f"{size}: setup {time.perf_counter() - t:.1f} s ({ds.num_users:,} users)", flush=True)

    pre = load_pretrained(run, ds)
    users = np.arange(ds.num_users)
    times = np.full(ds.num_users, np.inf)
    with torch.no_grad():
        table = pre.entity_table()  # per catalogue, not per user: outside the user part
    whole, user_part = [], []
    for r in range(args.repeats):
        store = args.work / f"store-{size}-{r}"
        shutil.rmtree(store, ignore_errors=True)
        t = time.perf_counter()
        export(run, ds, store)
        whole.append(time.perf_counter() - t)
        shutil.rmtree(store, ignore_errors=True)
        with torch.no_grad():
            t = time.perf_counter()
            pre.user_vectors(users, times, table)  # Eq. 1, then Eq. 2
            user_part.append(time.perf_counter() - t)
        print(
            f"  repeat {r}: export {whole[-1]:.2f} s ({ds.num_users / whole[-1]:,.0f} users/s), "
            f"users' vectors {user_part[-1]:.2f} s ({ds.num_users / user_part[-1]:,.0f} users/s)",
            flush=True,
        )
    med_whole, med_user = statistics.median(whole), statistics.median(user_part)
    return {
        "synthetic": size,
        "seed": args.seed,
        "users": int(ds.num_users),
        "interactions": int(len(ds.interactions)),
        "entities": int(ds.num_entities),
        "export_s": whole,
        "users_vectors_s": user_part,
        "median_export_s": med_whole,
        "median_users_vectors_s": med_user,
        "export_users_per_s": ds.num_users / med_whole,
        "users_vectors_users_per_s": ds.num_users / med_user,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size", nargs="+", choices=["small", "medium", "large"], default=["medium", "large"]
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pretrain-steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "peace-export-throughput"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "export_throughput.json")
    parser.add_argument("--reuse", action="store_true", help="reuse pre-trained runs in --work")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine()
    runs = [measure(args, size) for size in args.size]
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": info,
        "torch_threads": args.threads,
        "model": {
            "overrides": [*MODEL, f"pretrain.max_steps={args.pretrain_steps}", f"seed={args.seed}"],
            "note": "paper sizes (A.3), briefly trained",
        },
        "aim_users_per_s": 50_000,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for r in runs:
        print(
            f"{r['synthetic']} ({r['users']:,} users): export {r['median_export_s']:.2f} s = "
            f"{r['export_users_per_s']:,.0f} users/s; users' vectors (Eq. 1-2) "
            f"{r['median_users_vectors_s']:.2f} s = {r['users_vectors_users_per_s']:,.0f} users/s"
        )
    print(f"aim 50,000 users/s\nwrote {args.out}")


if __name__ == "__main__":
    main()
