"""Pre-training throughput: user-entity pairs per second on the synthetic ``medium`` platform.

Runs the pre-training step of :mod:`peace.flows.pretrain` (batch construction, entity encoder,
Eq. 1-10, backward, Adam) with the default configuration (the paper's A.3 values) and with the
benchmark preset, and measures in the same run the machine's dense fp32 matmul rate as the
ceiling. Writes
``benchmarks/results/pretrain_throughput.json``.

    python benchmarks/pretrain_throughput.py [--steps 30] [--warmup 5] [--data DIR]
        [--configs a3,benchmark] [--profile 5] [--device cuda]

``--profile N`` also runs N steps under :mod:`torch.profiler` and records the operators that take
the most time (self CPU time), as in the table of docs/performance.md. ``--device cuda`` trains on
the GPU as ``peace pretrain --device cuda`` does (batches drawn on the CPU, then moved) and
measures the ceiling there: the GPU's dense fp32 matmul rate.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from peace.config import PeaceConfig
from peace.data.dataset import Dataset, load_dataset
from peace.data.history import HistoryIndex
from peace.data.splits import pretrain_cutoff, split_targets
from peace.data.synthetic import generate
from peace.flows.records import NegativeSampler, batch_entity_table, make_batch, make_records
from peace.models import build_model
from peace.nn.peace import PretrainBatch
from peace.utils import adam, resolve_device

RESULTS = Path(__file__).parent / "results" / "pretrain_throughput.json"


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a GPU runs asynchronously to the host)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(
    n: int = 2048, repeats: int = 10, device: torch.device = torch.device("cpu")
) -> float:
    """Median dense fp32 matmul rate (GFLOP/s) of an n x n by n x n product on ``device``."""
    if device.type == "cuda":
        n = 8192  # a GPU needs a larger product to run at its rate
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32, as training uses
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        a @ b
        synchronize(device)
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
    # per layer: x W, the attention and the weighted messages per edge (the relation term of
    # the attention is computed once per relation type: negligible)
    gat = m.gnn_layers * (2 * n_entities * d * d + 6 * edges * d)
    eq1 = 2 * n_entities * (d * a + a * M) + 2 * batch * M * seq_len * d
    pea = (
        2 * batch * M * n * d + 2 * pairs * M * n * d + 2 * pairs * M * (d * h1 + h1 * h2 + h2 * d)
    )
    eq2 = 2 * pairs * M * (d * a + a)
    eq3 = 2 * pairs * (2 * d * h1 + h1 * h2 + h2)
    cpl = 4 * distinct * n * d + 2 * distinct * distinct * d
    forward = gat + eq1 + (pea if m.use_pea else 0) + eq2 + eq3 + (cpl if m.use_cpl else 0)
    return 3.0 * forward


CONFIGS = {
    "a3": "defaults (paper A.3): batch 512, d 64, H 200, M 10, n 900, K 160, neg_ratio 1",
    "benchmark": "benchmark preset: batch 512, d 64, H 50, M 8, n 64, K 16, neg_ratio 1",
}


def measure(
    ds: Dataset,
    name: str,
    steps: int,
    warmup: int,
    profile_steps: int,
    device: torch.device = torch.device("cpu"),
) -> dict:
    """Median step time, pairs/s and estimated FLOP rate of one configuration."""
    cfg = PeaceConfig() if name == "a3" else PeaceConfig.preset(name)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model, graph = build_model(ds, cfg)
    model.to(device)
    graph = graph.to(device)
    history = HistoryIndex(ds, cfg.model.history_length)
    cutoff = pretrain_cutoff(split_targets(ds, cfg.eval.split))
    records = make_records(ds, history, cutoff)
    negatives = NegativeSampler(ds)
    item_entities = torch.as_tensor(ds.item_entities, dtype=torch.long)
    pc = cfg.pretrain
    optimizer = adam(model.parameters(), pc.lr, pc.weight_decay, pc.fused_adam)
    order = torch.randperm(len(records), generator=gen).numpy()
    bs = cfg.pretrain.batch_size

    def train_step(step: int) -> tuple[PretrainBatch, int]:
        idx = order[step * bs : (step + 1) * bs]
        batch = make_batch(
            item_entities, history, records, idx, negatives, cfg.pretrain.neg_ratio, gen
        )
        table, batch, _ = batch_entity_table(model, graph, batch, None, gen)
        losses = model.pretrain_losses(table, batch, cfg.pretrain.tau, cfg.pretrain.gamma)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        synchronize(device)
        return batch, len(idx)

    step_times, pair_counts, flops = [], [], []
    for step in range(warmup + steps):
        t0 = time.perf_counter()
        batch, size = train_step(step)
        elapsed = time.perf_counter() - t0
        if step >= warmup:
            pairs = int(batch.valid.sum())
            step_times.append(elapsed)
            pair_counts.append(pairs)
            distinct = int(torch.unique(batch.targets[batch.valid]).numel())
            flops.append(
                flops_per_step(
                    cfg,
                    ds.num_entities,
                    graph.edge_index.shape[1],
                    size,
                    pairs,
                    batch.tokens.shape[1],
                    distinct,
                )
            )
    median_step = statistics.median(step_times)
    pairs_per_step = statistics.median(pair_counts)
    flops_per_pair = float(np.median(np.array(flops) / np.array(pair_counts)))
    result = {
        "config": CONFIGS[name],
        "pretrain_records": len(records),
        "median_step_seconds": round(median_step, 4),
        "pairs_per_step_median": pairs_per_step,
        "pairs_per_second": round(pairs_per_step / median_step, 1),
        "estimated_flops_per_pair": round(flops_per_pair),
        "achieved_gflops": round(flops_per_pair * pairs_per_step / median_step / 1e9, 2),
    }
    if profile_steps:
        result["profile_top_ops"] = profile(train_step, warmup + steps, profile_steps, device)
    return result


def profile(
    train_step: Callable[[int], object],
    start: int,
    steps: int,
    device: torch.device = torch.device("cpu"),
) -> list[dict]:
    """The operators with the most self CPU time over ``steps`` steps (torch.profiler)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profiler(activities=activities) as prof:
        for step in range(start, start + steps):
            train_step(step)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return [
        {
            "op": e.key,
            "self_cpu_share": round(e.self_cpu_time_total / total, 4),
            "self_cpu_ms_per_step": round(e.self_cpu_time_total / 1e3 / steps, 2),
            "calls_per_step": round(e.count / steps, 1),
        }
        for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:15]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--data", type=Path, default=None, help="default: synthetic medium")
    parser.add_argument(
        "--out", type=Path, default=None, help="default: results/pretrain_throughput[_cuda].json"
    )
    parser.add_argument("--configs", default=",".join(CONFIGS), help="a3, benchmark or both")
    parser.add_argument("--profile", type=int, default=0, help="steps to profile (0: none)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.out is None:
        args.out = RESULTS if device.type == "cpu" else RESULTS.with_stem(RESULTS.stem + "_cuda")

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "medium"
            generate(data, seed=0, size="medium")
        ds = load_dataset(data)
        runs = {
            name: measure(ds, name, args.steps, args.warmup, args.profile, device)
            for name in args.configs.split(",")
        }
    gflops = matmul_gflops(device=device)
    for run in runs.values():
        run["fraction_of_ceiling"] = round(run["achieved_gflops"] / gflops, 4)
    result = {
        "dataset": "synthetic medium, seed 0" if args.data is None else str(args.data),
        "entities": ds.num_entities,
        "steps_measured": args.steps,
        "matmul_gflops_fp32": round(gflops, 2),
        "configs": runs,
        "torch": torch.__version__,
        "device": str(device),
        **({"gpu": torch.cuda.get_device_name(device)} if device.type == "cuda" else {}),
        "threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"dense fp32 matmul: {gflops:.1f} GFLOP/s, {torch.get_num_threads()} threads")
    for name, run in runs.items():
        print(
            f"{name:>10}: {run['pairs_per_second']:>9,.0f} pairs/s, "
            f"{run['achieved_gflops']:6.1f} GFLOP/s = {run['fraction_of_ceiling']:.1%} of the ceiling"
        )
        for row in run.get("profile_top_ops", []):
            print(
                f"{row['self_cpu_share']:>16.1%} {row['self_cpu_ms_per_step']:8.2f} ms  {row['op']}"
            )


if __name__ == "__main__":
    main()
