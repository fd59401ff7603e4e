"""Offline inference flow (Sec. 4.5) throughput: users per second of a store export.

Generates a synthetic platform (``--size``, default ``medium``: 20,000 users), pre-trains PEACE
briefly with the paper's model sizes (as ``serve_latency.py``: d = 64, M = 10, n = 900, K = 160;
H = 50), then exports a store version ``--repeats`` times and reports, per repeat and as medians:

* the whole export (:func:`peace.flows.offline_inference.export`: the entity table, every user's
  interests and universal vector, item vectors, the Arrow files, the manifest);
* the user part alone (Eq. 1 over each user's source histories, then Eq. 2, on an entity table
  computed beforehand), which grows with the number of users while the rest is per catalogue.

Writes ``benchmarks/results/export_throughput.json``.

Usage::

    python benchmarks/export_throughput.py
    python benchmarks/export_throughput.py --size small --repeats 2
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=["small", "medium", "large"], default="medium")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pretrain-steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "peace-export-throughput"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "export_throughput.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine()
    data, run = args.work / f"data-{args.size}", args.work / f"run-{args.size}"
    t = time.perf_counter()
    if not (data / "interactions.parquet").exists():
        generate(data, seed=args.seed, size=args.size)
    ds = load_dataset(data)
    overrides = [*MODEL, f"pretrain.max_steps={args.pretrain_steps}", f"seed={args.seed}"]
    cfg = PeaceConfig().override(overrides)
    shutil.rmtree(run, ignore_errors=True)
    pretrain(ds, cfg, out=run, show_progress=False)
    print(f"setup {time.perf_counter() - t:.1f} s ({ds.num_users:,} users)", flush=True)

    pre = load_pretrained(run, ds)
    users = np.arange(ds.num_users)
    times = np.full(ds.num_users, np.inf)
    with torch.no_grad():
        table = pre.entity_table()  # per catalogue, not per user: outside the user part
    whole, user_part = [], []
    for r in range(args.repeats):
        store = args.work / f"store-{r}"
        shutil.rmtree(store, ignore_errors=True)
        t = time.perf_counter()
        export(run, ds, store)
        whole.append(time.perf_counter() - t)
        with torch.no_grad():
            t = time.perf_counter()
            pre.user_vectors(users, times, table)  # Eq. 1, then Eq. 2
            user_part.append(time.perf_counter() - t)
        shutil.rmtree(store, ignore_errors=True)
        print(
            f"  repeat {r}: export {whole[-1]:.2f} s ({ds.num_users / whole[-1]:,.0f} users/s), "
            f"users' vectors {user_part[-1]:.2f} s ({ds.num_users / user_part[-1]:,.0f} users/s)",
            flush=True,
        )
    med_whole, med_user = statistics.median(whole), statistics.median(user_part)
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": info,
        "torch_threads": args.threads,
        "data": {"synthetic": args.size, "seed": args.seed, "users": int(ds.num_users)},
        "model": {"overrides": overrides, "note": "paper sizes (A.3), briefly trained"},
        "export_s": whole,
        "users_vectors_s": user_part,
        "median_export_s": med_whole,
        "median_users_vectors_s": med_user,
        "export_users_per_s": ds.num_users / med_whole,
        "users_vectors_users_per_s": ds.num_users / med_user,
        "aim_users_per_s": 50_000,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"median: export {med_whole:.2f} s = {result['export_users_per_s']:,.0f} users/s; users' "
        f"vectors (Eq. 1-2) {med_user:.2f} s = {result['users_vectors_users_per_s']:,.0f} "
        f"users/s (aim 50,000)\nwrote {args.out}"
    )


if __name__ == "__main__":
    main()
