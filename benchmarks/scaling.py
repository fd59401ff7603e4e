"""How pre-training cost grows with the platform: time per epoch, pairs/s and peak memory.

Generates synthetic platforms of about 1M, 3M and 10M interactions with 20k, 100k and 1M
entities (:mod:`peace.data.synthetic`, the ``large`` shape scaled), and for each, in a fresh
process: loads it, builds the pre-training records, and times pre-training steps of the benchmark
preset (Eq. 10 with the served-score softmax over each record's whole source catalogue and Eq. 4
also on z_u, :func:`peace.flows.pretrain.objective`) with the
full-graph GAT and with sampled subgraphs (``model.graph_sampling``), and with sampled subgraphs
and the softmax over a uniform draw of the catalogue (``pretrain.served_sample``), the last also
with the fused optimiser (``pretrain.fused_adam``). Seconds per
epoch are the median measured step times the number of steps of one epoch (``--steps`` steps are
measured, not the whole epoch), the ways of training stepping in turn so that each sees the same
machine. Peak RSS is the process's maximum resident memory, in all and per way of training (each
way alone for its warm-up steps, the high-water mark restarted before each, the lightest first);
loading has its own (``load_peak_rss_gb``: the interactions are read in blocks of Parquet row
groups and kept as integer codes, :func:`peace.data.contract.read_chunks`).
``--series fixed`` holds the entities, catalogues and graph at the 3M platform's (100k entities)
while the interactions grow from 1M to 10M, timing the sampled ways only: how cost grows with
interactions alone, apart from the graph's growth. Each series keeps the other's results.
Writes ``benchmarks/results/scaling.json`` and ``benchmarks/results/scaling.png`` (log-log).

    python benchmarks/scaling.py [--scales 1M,3M,10M] [--steps 5] [--warmup 2]
    python benchmarks/scaling.py --series fixed
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "scaling.json"
SERVED_SAMPLE = 4096
# mode: (model.graph_sampling, pretrain.served_sample, pretrain.fused_adam)
MODES = {
    "full": ("full", 0, False),
    "sampled": ("sampled", 0, False),
    "sampled_drawn": ("sampled", SERVED_SAMPLE, False),
    "sampled_drawn_fused": ("sampled", SERVED_SAMPLE, True),
}
LABELS = {
    "full": "full graph",
    "sampled": "sampled subgraph",
    "sampled_drawn": f"sampled subgraph, softmax over {SERVED_SAMPLE:,} drawn items",
    "sampled_drawn_fused": "the same with the fused Adam",
}
# name: (users, entities, source items per domain, target items per domain)
SCALES = {
    "1M": (62_000, 20_000, 8_000, 1_500),
    "3M": (190_000, 100_000, 20_000, 3_000),
    "10M": (620_000, 1_000_000, 40_000, 6_000),
}
# The same interactions with the entities, catalogues and their graph held at the 3M platform's:
# how cost grows with interactions alone (``--series fixed``).
FIXED = {
    "1M@100k": (62_000, 100_000, 20_000, 3_000),
    "3M@100k": SCALES["3M"],
    "10M@100k": (620_000, 100_000, 20_000, 3_000),
}
FIXED_MODES = ("sampled_drawn", "sampled_drawn_fused")


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def _reset_peak_rss() -> bool:
    """Free what can be freed and restart the process's RSS high-water mark (Linux: VmHWM,
    reset by writing 5 to /proc/self/clear_refs); False where that is not possible."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so RSS starts low
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _hwm_gb() -> float | None:
    """The RSS high-water mark since the last reset, GB (None where /proc is not at hand)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2  # kB
    except OSError:
        pass
    return None


def measure(name: str, steps: int, warmup: int, modes: tuple[str, ...] = tuple(MODES)) -> dict:
    """One scale, in this process: generate, load, and time pre-training steps of ``modes``."""
    import torch

    from peace.config import PeaceConfig
    from peace.data import synthetic
    from peace.data.dataset import load_dataset
    from peace.data.history import HistoryIndex
    from peace.data.splits import pretrain_cutoff, split_targets
    from peace.flows.pretrain import objective
    from peace.flows.records import (
        NegativeSampler,
        batch_entity_table,
        make_batch,
        make_records,
        source_catalogue,
    )
    from peace.models import build_model
    from peace.nn.entity_encoder import NeighbourSampler
    from peace.utils import adam

    users, entities, source_items, target_items = {**SCALES, **FIXED}[name]
    spec = dataclasses.replace(
        synthetic.SIZES["large"],
        name=f"scale-{name.replace('@', '-')}",
        n_users=users,
        n_entities=entities,
        source_items=source_items,
        target_items=target_items,
    )
    synthetic.SIZES[spec.name] = spec
    out: dict = {"scale": name, "users": users, "entities_asked": entities}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = synthetic.generate(Path(tmp) / "data", seed=0, size=spec.name)
        out["generate_seconds"] = round(time.perf_counter() - t0, 1)
        out["interactions"] = int(sum(summary["interactions"].values()))
        resettable = _reset_peak_rss()  # the load's own peak, not the generator's
        t0 = time.perf_counter()
        ds = load_dataset(Path(tmp) / "data")  # interactions read in blocks of row groups
        out["load_seconds"] = round(time.perf_counter() - t0, 1)
        hwm = _hwm_gb() if resettable else None
        out["load_peak_rss_gb"] = None if hwm is None else round(hwm, 2)
    out["entities"] = ds.num_entities
    out["triplets"] = len(ds.triplets)
    out["rss_after_load_gb"] = round(_peak_rss_gb(), 2)
    cfg = PeaceConfig.preset("benchmark")
    history = HistoryIndex(ds, cfg.model.history_length)
    records = make_records(ds, history, pretrain_cutoff(split_targets(ds, cfg.eval.split)))
    out["pretrain_records"] = len(records)
    bs = cfg.pretrain.batch_size
    steps_per_epoch = math.ceil(len(records) / bs)
    item_entities = torch.as_tensor(ds.item_entities, dtype=torch.long)
    negatives = NegativeSampler(ds)
    pc = cfg.pretrain
    catalogue = source_catalogue(ds) if pc.served_loss != "none" else None
    source_position = torch.full((len(ds.domains),), -1, dtype=torch.long)
    source_position[ds.source_domains] = torch.arange(len(ds.source_domains))

    def way(mode: str) -> Callable[[int], int]:
        """A fresh model and optimiser for ``mode``; returns its step function (-> pairs)."""
        graph_sampling, served_sample, fused = MODES[mode]
        mcfg = cfg.override(
            [
                f'model.graph_sampling="{graph_sampling}"',
                f"pretrain.fused_adam={str(fused).lower()}",
            ]
        )
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(0)
        model, graph = build_model(ds, mcfg)
        sampler = (
            NeighbourSampler(graph, mcfg.model.fanout) if graph_sampling == "sampled" else None
        )
        optimizer = adam(
            model.parameters(),
            mcfg.pretrain.lr,
            mcfg.pretrain.weight_decay,
            mcfg.pretrain.fused_adam,
        )
        order = torch.randperm(len(records), generator=gen).numpy()

        def step(i: int) -> int:
            idx = order[i * bs : (i + 1) * bs]
            batch = make_batch(
                item_entities, history, records, idx, negatives, pc.neg_ratio, gen, source_position
            )
            table, batch, cat = batch_entity_table(
                model, graph, batch, sampler, gen, catalogue, served_sample
            )
            losses = objective(model, table, batch, cat, pc)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimizer.step()
            return int(batch.valid.sum())

        return step

    # Memory: each way alone, lightest first (what a way leaves in the allocator cannot then
    # inflate a lighter one), for its warm-up steps.
    for mode in reversed(modes):
        resettable = _reset_peak_rss()
        step = way(mode)
        for i in range(warmup):
            step(i)
        hwm = _hwm_gb() if resettable else None
        out[mode] = {"peak_rss_gb": None if hwm is None else round(hwm, 2)}
        del step
    # The run's peak up to here: loading, then the heaviest way alone (the timing pass below
    # holds every way's model at once, which training never does).
    per_mode = [out[m]["peak_rss_gb"] for m in modes]
    if all(p is not None for p in per_mode):  # restarted marks: the run's peak is their maximum
        peak = max(out["rss_after_load_gb"], *per_mode)
    else:  # never restarted: the process's own maximum
        peak = round(_peak_rss_gb(), 2)
    # Time: all ways side by side, one step of each in turn (the order rotating), so a drift of
    # the machine's speed or a cost paid by whichever runs first falls on every way alike.
    steps_of = {mode: way(mode) for mode in modes}
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    pairs: dict[str, list[int]] = {mode: [] for mode in modes}
    turn = list(modes)
    for i in range(warmup + steps):
        for mode in turn[i % len(turn) :] + turn[: i % len(turn)]:
            t0 = time.perf_counter()
            n = steps_of[mode](i)
            if i >= warmup:
                times[mode].append(time.perf_counter() - t0)
                pairs[mode].append(n)
    del steps_of
    for mode in modes:
        step_s = statistics.median(times[mode])
        out[mode] = {
            "median_step_seconds": round(step_s, 4),
            "pairs_per_second": round(statistics.median(pairs[mode]) / step_s, 1),
            "epoch_seconds": round(step_s * steps_per_epoch, 1),
            **out[mode],
        }
    out["peak_rss_gb"] = peak
    out["threads"] = torch.get_num_threads()
    return out


def slope(xs: list[float], ys: list[float]) -> float:
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.add_subplot()
    series = [(doc.get("scales", []), "o-", "")]
    fixed = doc.get("fixed_entities", {}).get("scales", [])
    series.append((fixed, "s--", ", 100k entities"))
    for results, style, suffix in series:
        xs = [r["interactions"] for r in results]
        for mode, label in LABELS.items():
            if results and mode in results[0]:
                ys = [r[mode]["epoch_seconds"] for r in results]
                ax.loglog(xs, ys, style, label=label + suffix)
    ax.set_xlabel("interactions")
    ax.set_ylabel("seconds per epoch")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def slopes(results: list[dict], modes: tuple[str, ...]) -> dict[str, float]:
    """Log-log slope of seconds per epoch against interactions, per way of training."""
    xs = [r["interactions"] for r in results]
    return {m: round(slope(xs, [r[m]["epoch_seconds"] for r in results]), 3) for m in modes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--series",
        choices=("grown", "fixed"),
        default="grown",
        help="grown: interactions, entities and catalogues grow together (every way of "
        "training); fixed: interactions grow on 100k entities (the sampled ways). The other "
        "series of the results file is kept.",
    )
    parser.add_argument("--scales", help="comma-separated scales of the series (default: all)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--modes", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        modes = tuple(args.modes.split(",")) if args.modes else tuple(MODES)
        print(json.dumps(measure(args.worker, args.steps, args.warmup, modes)))
        return
    table, modes = (SCALES, tuple(MODES)) if args.series == "grown" else (FIXED, FIXED_MODES)
    results = []
    for name in args.scales.split(",") if args.scales else table:
        if name not in table:
            raise SystemExit(f"unknown scale {name!r} of the {args.series} series: {list(table)}")
        cmd = [sys.executable, __file__, "--worker", name, "--modes", ",".join(modes)]
        cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(
            f"{name:>8}: {r['interactions']:>10,} interactions, {r['entities']:>9,} entities, "
            + ", ".join(f"{LABELS[m]} {r[m]['epoch_seconds']:.0f} s" for m in modes)
            + " per epoch, peak RSS "
            + " / ".join(str(r[m]["peak_rss_gb"]) for m in modes)
            + f" GB (whole run {r['peak_rss_gb']} GB)",
            flush=True,
        )
    doc: dict = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    part: dict = {"scales": results, "config": "benchmark preset", "steps_measured": args.steps}
    if len(results) >= 2:
        part["slope_epoch_seconds_vs_interactions"] = slopes(results, modes)
        print("log-log slope of seconds per epoch:", part["slope_epoch_seconds_vs_interactions"])
    if args.series == "grown":
        doc = {**part, **{k: v for k, v in doc.items() if k == "fixed_entities"}}
    else:
        doc["fixed_entities"] = part
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    plot(doc, RESULTS.with_suffix(".png"))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
