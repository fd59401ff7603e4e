"""Pre-training throughput: user-entity pairs per second on the synthetic ``medium`` platform.

Runs the pre-training step of :mod:`peace.flows.pretrain` (batch construction, entity encoder,
Eq. 1-10 with the configuration's terms beyond the paper, :func:`peace.flows.pretrain.objective`,
backward, Adam) with the default configuration (the paper's A.3 values) and with the
benchmark preset, each in float32 and with ``pretrain.precision = "bf16"`` (side by side, on the
same batches, with the losses of both), and measures in the same run the machine's dense fp32
matmul rate as the ceiling (and its bf16 rate). Writes
``benchmarks/results/pretrain_throughput.json``.

    python benchmarks/pretrain_throughput.py [--steps 30] [--warmup 5] [--data DIR]
        [--configs a3,benchmark] [--precisions fp32,bf16] [--profile 5] [--device cuda]

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

from peace.config import PeaceConfig, PretrainConfig
from peace.data.dataset import Dataset, load_dataset
from peace.data.history import HistoryIndex
from peace.data.splits import pretrain_cutoff, split_targets
from peace.data.synthetic import generate
from peace.flows.pretrain import objective
from peace.flows.records import (
    NegativeSampler,
    batch_entity_table,
    make_batch,
    make_records,
    source_catalogue,
)
from peace.models import build_model
from peace.nn.peace import PretrainBatch, SourceCatalogue, decoder_width
from peace.utils import adam, autocast, resolve_device

RESULTS = Path(__file__).parent / "results" / "pretrain_throughput.json"


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a GPU runs asynchronously to the host)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(
    n: int = 2048,
    repeats: int = 10,
    device: torch.device = torch.device("cpu"),
    dtype: torch.dtype = torch.float32,
) -> float:
    """Median dense matmul rate (GFLOP/s) of an n x n by n x n product on ``device``."""
    if device.type == "cuda":
        n = 8192  # a GPU needs a larger product to run at its rate
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32, as training uses
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
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
    served: tuple[int, int] = (0, 0),
) -> float:
    """Forward + backward FLOPs of one step (backward counted as twice the forward).
    ``served``: L_served's softmax, (records with a positive, catalogue items); (0, 0): off."""
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
    width = decoder_width(d, m.decoder_interactions)  # z_u || h_e (and their products)
    eq3 = 2 * pairs * (width * h1 + h1 * h2 + h2)
    cpl = 4 * distinct * n * d + 2 * distinct * distinct * d
    forward = gat + eq1 + (pea if m.use_pea else 0) + eq2 + eq3 + (cpl if m.use_cpl else 0)
    positives, items = served
    if items:  # z_u (Eq. 2 on the plain interests) against every catalogue item
        forward += 2 * batch * M * (d * a + a) + 2 * positives * items * d
    if m.use_pea and cfg.pretrain.universal_weight > 0:  # Eq. 3 again, on z_u || h_e
        forward += eq3
    return 3.0 * forward


def served_shape(
    batch: PretrainBatch, catalogue: SourceCatalogue | None, pc: PretrainConfig
) -> tuple[int, int]:
    """(records with a positive, catalogue items) of a step's L_served softmax; (0, 0) without
    it (the ``bce`` form scores a few items per record: not counted)."""
    if pc.served_loss != "softmax" or catalogue is None or batch.item_valid is None:
        return 0, 0
    sample = pc.served_sample
    positives = int((batch.item_valid[:, 0] & (batch.item_labels[:, 0] > 0)).sum())
    items = len(catalogue.entities)
    return positives, min(sample, items) if sample > 0 else items


CONFIGS = {
    "a3": ("defaults (paper A.3)", ""),
    "benchmark": (
        "benchmark preset",
        ", L_served softmax over the source catalogue, Eq. 4 also on z_u",
    ),
}
"""Each configuration's label and what it adds beyond its sizes (:func:`describe`)."""


def describe(name: str, cfg: PeaceConfig) -> str:
    """The configuration's label with the sizes read from ``cfg``, so it follows the preset."""
    label, extra = CONFIGS[name]
    m = cfg.model
    return (
        f"{label}: batch {cfg.pretrain.batch_size}, d {m.dim}, H {m.history_length}, "
        f"M {m.n_interests}, n {m.n_prototypes}, K {m.top_k_prototypes}, "
        f"neg_ratio {cfg.pretrain.neg_ratio}{extra}"
        + (", Eq. 3 also on z_u * h_e" if m.decoder_interactions else "")
    )


def measure(
    ds: Dataset,
    name: str,
    steps: int,
    warmup: int,
    profile_steps: int,
    device: torch.device = torch.device("cpu"),
    precisions: tuple[str, ...] = ("fp32",),
) -> dict[str, dict]:
    """Median step time, pairs/s and estimated FLOP rate of one configuration in each of
    ``precisions`` (``pretrain.precision``). The precisions train side by side, one step of each
    in turn with the order rotating, from the same initial weights on the same batches, so a
    drift of the machine's speed falls on all alike and their losses can be compared step by
    step."""
    base = PeaceConfig() if name == "a3" else PeaceConfig.preset(name)
    history = HistoryIndex(ds, base.model.history_length)
    cutoff = pretrain_cutoff(split_targets(ds, base.eval.split))
    records = make_records(ds, history, cutoff)
    negatives = NegativeSampler(ds)
    item_entities = torch.as_tensor(ds.item_entities, dtype=torch.long)
    order = torch.randperm(len(records), generator=torch.Generator().manual_seed(base.seed))
    order = order.numpy()
    bs = base.pretrain.batch_size
    edges: list[int] = []
    catalogue = source_catalogue(ds) if base.pretrain.served_loss != "none" else None
    source_position = torch.full((len(ds.domains),), -1, dtype=torch.long)
    source_position[ds.source_domains] = torch.arange(len(ds.source_domains))

    def trainer(precision: str) -> Callable[[int], tuple[PretrainBatch, int, float]]:
        cfg = base.override([f'pretrain.precision="{precision}"'])
        pc = cfg.pretrain
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        model, graph = build_model(ds, cfg)
        model.to(device)
        graph = graph.to(device)
        edges.append(graph.edge_index.shape[1])
        optimizer = adam(model.parameters(), pc.lr, pc.weight_decay, pc.fused_adam)

        def train_step(step: int) -> tuple[PretrainBatch, int, float]:
            idx = order[step * bs : (step + 1) * bs]
            batch = make_batch(
                item_entities, history, records, idx, negatives, pc.neg_ratio, gen, source_position
            )
            table, batch, cat = batch_entity_table(
                model, graph, batch, None, gen, catalogue, pc.served_sample
            )
            with autocast(device, pc.precision):  # as the pre-training flow does
                losses = objective(model, table, batch, cat, pc)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimizer.step()
            synchronize(device)
            return batch, len(idx), float(losses["total"].detach())

        return train_step

    steppers = {p: trainer(p) for p in precisions}
    step_times: dict[str, list[float]] = {p: [] for p in precisions}
    losses: dict[str, list[float]] = {p: [] for p in precisions}
    pair_counts: dict[str, list[int]] = {p: [] for p in precisions}
    flops: dict[str, list[float]] = {p: [] for p in precisions}
    for step in range(warmup + steps):
        turn = list(precisions[step % len(precisions) :] + precisions[: step % len(precisions)])
        for precision in turn:
            t0 = time.perf_counter()
            batch, size, loss = steppers[precision](step)
            elapsed = time.perf_counter() - t0
            losses[precision].append(loss)
            if step < warmup:
                continue
            pairs = int(batch.valid.sum())
            step_times[precision].append(elapsed)
            pair_counts[precision].append(pairs)
            distinct = int(torch.unique(batch.targets[batch.valid]).numel())
            flops[precision].append(
                flops_per_step(
                    base,
                    ds.num_entities,
                    edges[0],
                    size,
                    pairs,
                    batch.tokens.shape[1],
                    distinct,
                    served_shape(batch, catalogue, base.pretrain),
                )
            )
    results = {}
    for precision in precisions:
        median_step = statistics.median(step_times[precision])
        pairs_per_step = statistics.median(pair_counts[precision])
        ratio = np.array(flops[precision]) / np.array(pair_counts[precision])
        flops_per_pair = float(np.median(ratio))
        result = {
            "config": describe(name, base),
            "precision": precision,
            "pretrain_records": len(records),
            "median_step_seconds": round(median_step, 4),
            "pairs_per_step_median": pairs_per_step,
            "pairs_per_second": round(pairs_per_step / median_step, 1),
            "estimated_flops_per_pair": round(flops_per_pair),
            "achieved_gflops": round(flops_per_pair * pairs_per_step / median_step / 1e9, 2),
            "losses": [round(v, 6) for v in losses[precision]],
        }
        if precision != precisions[0]:
            ref = np.array(losses[precisions[0]])
            rel = np.abs(np.array(losses[precision]) - ref) / np.abs(ref)
            result[f"loss_vs_{precisions[0]}_max_relative_difference"] = float(f"{rel.max():.3g}")
        if profile_steps:
            start = warmup + steps
            result["profile_top_ops"] = profile(
                lambda s, p=precision: steppers[p](s), start, profile_steps, device
            )
        results[precision] = result
    return results


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
    parser.add_argument(
        "--precisions", default="fp32,bf16", help="pretrain.precision values, side by side"
    )
    args = parser.parse_args()
    precisions = tuple(args.precisions.split(","))
    device = resolve_device(args.device)
    if args.out is None:
        args.out = RESULTS if device.type == "cpu" else RESULTS.with_stem(RESULTS.stem + "_cuda")

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "medium"
            generate(data, seed=0, size="medium")
        ds = load_dataset(data)
        runs = {}
        for name in args.configs.split(","):
            measured = measure(ds, name, args.steps, args.warmup, args.profile, device, precisions)
            for precision, run in measured.items():
                runs[name if precision == "fp32" else f"{name}-{precision}"] = run
    gflops = matmul_gflops(device=device)
    bf16_gflops = matmul_gflops(device=device, dtype=torch.bfloat16) if "bf16" in precisions else 0
    for run in runs.values():
        # the aim is stated against the fp32 rate; bf16 runs also give their share of bf16's
        run["fraction_of_ceiling"] = round(run["achieved_gflops"] / gflops, 4)
        if run["precision"] == "bf16":
            run["fraction_of_bf16_ceiling"] = round(run["achieved_gflops"] / bf16_gflops, 4)
    result = {
        "dataset": "synthetic medium, seed 0" if args.data is None else str(args.data),
        "entities": ds.num_entities,
        "steps_measured": args.steps,
        "matmul_gflops_fp32": round(gflops, 2),
        **({"matmul_gflops_bf16": round(bf16_gflops, 2)} if bf16_gflops else {}),
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
    if bf16_gflops:
        print(f"dense bf16 matmul: {bf16_gflops:.1f} GFLOP/s")
    for name, run in runs.items():
        loss = run.get("loss_vs_fp32_max_relative_difference")
        print(
            f"{name:>15}: {run['pairs_per_second']:>9,.0f} pairs/s, "
            f"{run['achieved_gflops']:6.1f} GFLOP/s = {run['fraction_of_ceiling']:.1%} of the "
            "fp32 ceiling"
            + ("" if loss is None else f"; losses within {loss:.2g} (relative) of fp32's")
        )
        for row in run.get("profile_top_ops", []):
            print(
                f"{row['self_cpu_share']:>16.1%} {row['self_cpu_ms_per_step']:8.2f} ms  {row['op']}"
            )


if __name__ == "__main__":
    main()
