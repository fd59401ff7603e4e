"""Pre-training throughput: user-entity pairs per second on the synthetic ``medium`` platform.

Runs the pre-training step of :mod:`peace.flows.pretrain` (batch construction, entity encoder,
Eq. 1-10, backward, Adam) with the default configuration (the paper's A.3 values), and measures in
the same run the machine's dense fp32 matmul rate as the ceiling. Writes
``benchmarks/results/pretrain_throughput.json``.

    python benchmarks/pretrain_throughput.py [--steps 30] [--warmup 5] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from peace.config import PeaceConfig
from peace.data.dataset import load_dataset
from peace.data.history import HistoryIndex
from peace.data.splits import pretrain_cutoff, split_targets
from peace.data.synthetic import generate
from peace.flows.records import NegativeSampler, batch_entity_table, make_batch, make_records
from peace.models import build_model

RESULTS = Path(__file__).parent / "results" / "pretrain_throughput.json"


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Median dense fp32 matmul rate (GFLOP/s) of an n x n by n x n product."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def flops_per_step(
    cfg: PeaceConfig,
    n_entities: int,
    n_edges: int,
    batch: int,
    pairs: int,
    seq_len: int,
    distinct: int,
) -> float:
    """Forward + backward FLOPs of one step (backward counted as twice the forward)."""
    m = cfg.model
    d, a, M, n = m.dim, m.attention_dim, m.n_interests, m.n_prototypes
    h1, h2 = m.mlp_hidden
    edges = n_edges + n_entities  # with self loops
    gat = m.gnn_layers * (2 * n_entities * d * d + 2 * edges * d * d + 6 * edges * d)
    eq1 = 2 * n_entities * (d * a + a * M) + 2 * batch * M * seq_len * d
    pea = (
        2 * batch * M * n * d + 2 * pairs * M * n * d + 2 * pairs * M * (d * h1 + h1 * h2 + h2 * d)
    )
    eq2 = 2 * pairs * M * (d * a + a)
    eq3 = 2 * pairs * (2 * d * h1 + h1 * h2 + h2)
    cpl = 4 * distinct * n * d + 2 * distinct * distinct * d
    forward = gat + eq1 + (pea if m.use_pea else 0) + eq2 + eq3 + (cpl if m.use_cpl else 0)
    return 3.0 * forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--data", type=Path, default=None, help="default: synthetic medium")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    cfg = PeaceConfig()  # the paper's A.3 values
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "medium"
            generate(data, seed=0, size="medium")
        ds = load_dataset(data)
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        model, graph = build_model(ds, cfg)
        history = HistoryIndex(ds, cfg.model.history_length)
        cutoff = pretrain_cutoff(split_targets(ds, cfg.eval.split))
        records = make_records(ds, history, cutoff)
        negatives = NegativeSampler(ds)
        item_entities = torch.as_tensor(ds.item_entities, dtype=torch.long)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.pretrain.lr)
        order = torch.randperm(len(records), generator=gen).numpy()
        bs = cfg.pretrain.batch_size
        step_times, pair_counts, flops = [], [], []
        for step in range(args.warmup + args.steps):
            idx = order[step * bs : (step + 1) * bs]
            t0 = time.perf_counter()
            batch = make_batch(
                item_entities, history, records, idx, negatives, cfg.pretrain.neg_ratio, gen
            )
            table, batch, _ = batch_entity_table(model, graph, batch, None, gen)
            losses = model.pretrain_losses(table, batch, cfg.pretrain.tau, cfg.pretrain.gamma)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimizer.step()
            elapsed = time.perf_counter() - t0
            if step >= args.warmup:
                pairs = int(batch.valid.sum())
                step_times.append(elapsed)
                pair_counts.append(pairs)
                flops.append(
                    flops_per_step(
                        cfg,
                        ds.num_entities,
                        graph.edge_index.shape[1],
                        len(idx),
                        pairs,
                        batch.tokens.shape[1],
                        int(torch.unique(batch.targets[batch.valid]).numel()),
                    )
                )
    gflops = matmul_gflops()
    median_step = statistics.median(step_times)
    pairs_per_step = statistics.median(pair_counts)
    flops_per_pair = float(np.median(np.array(flops) / np.array(pair_counts)))
    achieved = flops_per_pair * pairs_per_step / median_step / 1e9
    result = {
        "dataset": "synthetic medium, seed 0" if args.data is None else str(args.data),
        "config": "defaults (paper A.3): batch 512, d 64, H 200, M 10, n 900, K 160, neg_ratio 1",
        "entities": ds.num_entities,
        "pretrain_records": len(records),
        "steps_measured": args.steps,
        "median_step_seconds": round(median_step, 4),
        "pairs_per_step_median": pairs_per_step,
        "pairs_per_second": round(pairs_per_step / median_step, 1),
        "estimated_flops_per_pair": round(flops_per_pair),
        "achieved_gflops": round(achieved, 2),
        "matmul_gflops_fp32": round(gflops, 2),
        "fraction_of_ceiling": round(achieved / gflops, 4),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        print(f"{key:>24}: {value}")


if __name__ == "__main__":
    main()
