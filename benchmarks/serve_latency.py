"""Latency and throughput of the online ranking service, on loopback, on a synthetic platform.

What it does (every step bounded):

1. generates the ``small`` synthetic platform (``peace.data.synthetic``), pre-trains PEACE briefly
   with the paper's model sizes (d = 64, M = 10, n = 900, K = 160; H scaled to 50), exports a
   store version and fine-tunes + publishes the normal ranker of ``travel``;
2. adds run-time items to ``travel`` (normal ranker) and ``rental`` (zero-shot) so each has more
   than 200 items, and launches a large domain (``--ann-items``, default 20,000) for the
   approximate index;
3. measures in-process scoring (no HTTP) of 200 candidates for both rankers (for the normal
   ranker also with a 1 ms pause before each call, as a served request arrives), and the recall@10
   of ``recommend`` on the large domain against exact full scoring (tie-aware: a returned item is
   a hit when its exact score reaches the exact 10th best);
4. (``serve_http.py``) starts the service as a subprocess (``python -m peace.serve.app``, uvicorn,
   127.0.0.1), once per ``--servers`` shape (default: 1, then 2 processes of one torch thread;
   ``--servers 1x2``: one process of two torch threads), and sends
   ``--requests`` rank requests of ``--candidates`` random candidates with 1 and with 16
   concurrent clients (threads, one keep-alive ``httpx.Client`` each), for both rankers, plus
   ``recommend`` on the large domain; where the ``wrk`` program is on PATH, every case again
   with wrk (a C load generator, one thread, one connection per client, ``--wrk-seconds`` per
   case), whose own cost per request is small beside the Python clients';
5. writes ``benchmarks/results/serve_latency.json`` (p50, p90, p99, mean, throughput per case,
   the mean time the service itself spent per request, read from its latency histogram before
   and after each case, in-process timings, ANN recall, machine info, the command) and prints a
   table.

``--sizes preset`` measures the same cases with the model sizes of the benchmark preset
(``peace/configs/benchmark.toml``: M = 8, n = 64, K = 4, the normal head with interaction
features), the configuration of the public record, and writes
``benchmarks/results/serve_latency_preset.json``.

Usage::

    python benchmarks/serve_latency.py                 # the full run (a few minutes)
    python benchmarks/serve_latency.py --sizes preset  # the benchmark preset's sizes
    python benchmarks/serve_latency.py --requests 200 --ann-items 3000 --pretrain-steps 5
    python benchmarks/serve_latency.py --load wrk      # only the wrk cases (apt-get install wrk)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from serve_http import (
    ANN_DOMAIN,
    NORMAL_DOMAIN,
    ZERO_SHOT_DOMAIN,
    http_cases,
    percentiles,
    wrk_available,
)

from peace.config import PeaceConfig
from peace.data.dataset import Dataset, load_dataset
from peace.data.synthetic import generate
from peace.flows.offline_inference import export
from peace.flows.pretrain import pretrain
from peace.flows.publish import finetune_and_publish
from peace.serve.app import ItemSpec, Service
from peace.serve.rankers import UserVectors, faiss_available

ROOT = Path(__file__).resolve().parent
MODEL = [
    "model.history_length=50",
    "pretrain.batch_size=256",
    "pretrain.lr=0.001",
    "pretrain.epochs=1",
    "finetune.epochs=2",
]
"""The paper's sizes (A.3, the defaults of :class:`PeaceConfig`) with H scaled to 50."""

PRESET = [
    "pretrain.epochs=1",
    "finetune.epochs=2",
    "finetune.min_steps=0",
    "pretrain.eval_every=4",
    "pretrain.patience=100",
]
"""The benchmark preset's sizes; training kept brief (latency, not accuracy). Its zero-shot score
is the mean over the evaluated states (``eval.zero_shot_states``); an evaluation every 4 of the
30 steps keeps as many states as a preset run on ML-1M does (7-8), so the served inner product
has the preset's width."""


BRIEF = ["finetune.epochs=2", "finetune.min_steps=0"]
"""The published normal ranker's fine-tuning, kept brief."""


def model_config(args: argparse.Namespace) -> PeaceConfig:
    """The configuration the run is pre-trained with (``--sizes``)."""
    brief = [f"pretrain.max_steps={args.pretrain_steps}", f"seed={args.seed}"]
    if args.sizes == "preset":
        return PeaceConfig.preset("benchmark").override([*PRESET, *brief])
    return PeaceConfig().override([*MODEL, *brief])


def wrk_version() -> str | None:
    """The first line ``wrk -v`` prints (it exits with status 1), or None without wrk."""
    wrk = wrk_available()
    if wrk is None:
        return None
    out = subprocess.run([wrk, "-v"], capture_output=True, text=True)
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else wrk


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch": torch.__version__,
        "faiss": faiss_available(),
        # uvicorn's HTTP parser and event loop: the C ones when installed (the serve extra)
        "httptools": importlib.util.find_spec("httptools") is not None,
        "uvloop": importlib.util.find_spec("uvloop") is not None,
        "wrk": wrk_version(),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def unique_entity_sets(ds: Dataset, n: int, rng: np.random.Generator) -> list[list[str]]:
    """``n`` distinct entity sets of 1 to 3 entities (so no two new items share a vector)."""
    ents = [str(e) for e in ds.entities]
    seen: set[tuple[str, ...]] = set()
    out: list[list[str]] = []
    for _ in range(50 * n):
        if len(out) == n:
            break
        pick = tuple(
            sorted(
                ents[p] for p in rng.choice(len(ents), size=int(rng.integers(1, 4)), replace=False)
            )
        )
        if pick not in seen:
            seen.add(pick)
            out.append(list(pick))
    return out


def server_shape(text: str) -> tuple[int, int]:
    """``WxT`` -> (W server processes, T torch threads each), e.g. ``2x1``."""
    try:
        workers, threads = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected WxT, e.g. 2x1 (2 processes of 1 torch thread)"
        ) from None
    if workers < 1 or threads < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: both counts must be at least 1")
    return workers, threads


def build(args: argparse.Namespace, work: Path) -> tuple[Dataset, Path, dict[str, float]]:
    """Data, pre-trained run, store with a published normal ranker; returns timings."""
    timings: dict[str, float] = {}
    data, run, store = work / "data", work / "run", work / "store"
    if not (data / "interactions.parquet").exists():
        generate(data, seed=args.seed, size="small")
    ds = load_dataset(data)
    if not (args.reuse and (run / "model.safetensors").exists()):
        shutil.rmtree(run, ignore_errors=True)
        cfg = model_config(args)
        t = time.perf_counter()
        pretrain(ds, cfg, out=run, show_progress=False)
        timings["pretrain_s"] = time.perf_counter() - t
    shutil.rmtree(store, ignore_errors=True)
    t = time.perf_counter()
    export(run, ds, store)
    timings["export_s"] = time.perf_counter() - t
    t = time.perf_counter()
    finetune_and_publish(run, ds, store, NORMAL_DOMAIN, overrides=BRIEF)
    timings["finetune_s"] = time.perf_counter() - t
    return ds, store, timings


def grow_catalogues(
    service: Service, ds: Dataset, args: argparse.Namespace, rng: np.random.Generator
) -> tuple[dict[str, list[str]], float]:
    """Run-time items: +200 in the normal and zero-shot domains, and the large launched one."""
    sets = unique_entity_sets(ds, 400 + args.ann_items, rng)
    catalogues = {}
    for k, domain in enumerate((NORMAL_DOMAIN, ZERO_SHOT_DOMAIN)):
        for j in range(200):
            service.put_item(domain, f"{domain}-new-{j}", sets[k * 200 + j])
        catalogues[domain] = list(service.snapshot().domains[domain].items)
    specs = [ItemSpec(item=f"ann-{j}", entities=s) for j, s in enumerate(sets[400:])]
    t = time.perf_counter()
    service.launch(ANN_DOMAIN, specs)
    seconds = time.perf_counter() - t
    catalogues[ANN_DOMAIN] = list(service.snapshot().domains[ANN_DOMAIN].items)
    return catalogues, seconds


def in_process(
    service: Service,
    catalogues: dict[str, list[str]],
    users: list[str],
    args: argparse.Namespace,
    rng: np.random.Generator,
    cases: list[tuple[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """Calls of ``Service.rank`` back to back for both rankers, and for the normal ranker also
    with a pause of ``--inproc-pause-ms`` before each call: a served request arrives after the
    core has idled, which back-to-back calls never see (``cases``: (domain, pause) pairs)."""
    out = []
    if cases is None:
        cases = [
            (ZERO_SHOT_DOMAIN, 0.0),
            (NORMAL_DOMAIN, 0.0),
            (NORMAL_DOMAIN, args.inproc_pause_ms),
        ]
    for domain, pause_ms in cases:
        times, ranker = [], None
        for i in range(args.inproc_requests + 20):
            items = list(rng.choice(catalogues[domain], args.candidates, replace=False))
            if pause_ms:
                time.sleep(pause_ms / 1000)
            t = time.perf_counter()
            r = service.rank(domain, users[i % len(users)], items, max_candidates=10_000)
            if i >= 20:
                times.append((time.perf_counter() - t) * 1000)
            ranker = r["ranker"]
        out.append(
            {
                "case": f"rank {ranker}" + (f", {pause_ms:g} ms pause before" if pause_ms else ""),
                "domain": domain,
                "candidates": args.candidates,
                "calls": len(times),
                "pause_ms": pause_ms,
                **percentiles(times),
            }
        )
    return out


def kept_state_cases(ds: Dataset, args: argparse.Namespace, users: list[str]) -> dict[str, Any]:
    """In-process scoring and the index of the same run exported with ``kept_only`` (width d
    instead of S * d; the normal ranker's head reads the kept state's z_u . z_i), the catalogues
    grown with the same items: what serving the states' mean costs, measured beside it."""
    store = args.work / "store-kept"
    shutil.rmtree(store, ignore_errors=True)
    export(args.work / "run", ds, store, kept_only=True)
    finetune_and_publish(
        args.work / "run", ds, store, NORMAL_DOMAIN, overrides=[*BRIEF, 'finetune.affinity="inner"']
    )
    service = Service(store)
    catalogues, _ = grow_catalogues(service, ds, args, np.random.default_rng(args.seed))
    rng = np.random.default_rng(args.seed + 1)
    return {
        "note": "the same run exported with kept_only: the kept state's zero-shot score, width "
        "d, and a normal ranker whose head reads the kept state's z_u . z_i",
        "in_process": in_process(service, catalogues, users, args, rng),
        "ann": ann_recall(store, service, users[: args.ann_users], 10, [50, 100, 200, 400]),
    }


def query_text(snap: Any) -> str:
    """What the index is searched with, for the result file."""
    states = snap.version.zero_shot_states
    if states > 1:
        return (
            "the kept state's z_u and 1; the pool is scored on the mean over the "
            f"{states} evaluated states"
        )
    if snap.scorer.mode == "inner":
        return "z_u and 1" if snap.scorer.prior_weight else "z_u"
    return "user vector enhanced towards the user's own universal vector (Eq. 8-9, 2)"


def ann_recall(
    store: Path, service: Service, users: list[str], k: int, pools: list[int]
) -> dict[str, Any]:
    """Recall@k of the index path against exact scoring of the whole large catalogue."""
    snap = service.snapshot()
    state = snap.domains[ANN_DOMAIN]
    assert state.index is not None, "the large domain should be indexed"
    exact_times, truth = [], {}
    vectors = {}
    for user in users:
        row = snap.version.user_row[user]
        vectors[user] = UserVectors.of(snap.version, user, row)
        t = time.perf_counter()
        scores, _ = state.score_rows(snap.scorer, vectors[user], torch.arange(state.size))
        exact_times.append((time.perf_counter() - t) * 1000)
        truth[user] = float(torch.topk(scores, k).values[-1])
    sweep = []
    for pool in pools:
        hits, times = 0, []
        for user in users:
            t = time.perf_counter()
            _, scores, _, approx = state.recommend(snap.scorer, vectors[user], k, pool)
            times.append((time.perf_counter() - t) * 1000)
            assert approx
            hits += sum(s >= truth[user] - 1e-6 for s in scores)
        sweep.append({"pool": pool, "recall_at_k": hits / (k * len(users)), **percentiles(times)})
    return {
        "items": state.size,
        "k": k,
        "users": len(users),
        "backend": state.index.backend,
        "n_lists": state.index.n_lists,
        "n_probe": state.index.n_probe,
        "query": query_text(snap),
        "exact_full_scoring": percentiles(exact_times),
        "sweep": sweep,
        "served_pool": service.ann_pool,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        choices=["paper", "preset"],
        default="paper",
        help="model sizes: the paper's A.3 (default) or the benchmark preset's",
    )
    parser.add_argument("--work", type=Path, help="scratch folder (data, run, store)")
    parser.add_argument("--out", type=Path, help="result file (default: by --sizes)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--recommend-requests", type=int, default=500)
    parser.add_argument("--inproc-requests", type=int, default=500)
    parser.add_argument("--inproc-pause-ms", type=float, default=1.0)
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument(
        "--servers",
        type=server_shape,
        nargs="+",
        default=[(1, 1), (2, 1)],
        metavar="WxT",
        help="server shapes, one run each: W processes of T torch threads (default: 1x1 2x1)",
    )
    parser.add_argument(
        "--load",
        nargs="+",
        choices=["httpx", "wrk"],
        help="load generators (default: httpx, and wrk when it is on PATH)",
    )
    parser.add_argument("--wrk-seconds", type=float, default=8.0, help="measured time per wrk case")
    parser.add_argument("--pretrain-steps", type=int, default=30)
    parser.add_argument("--ann-items", type=int, default=20_000)
    parser.add_argument("--ann-users", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true", help="reuse a pre-trained run in --work")
    args = parser.parse_args(argv)
    if args.load is None:
        args.load = ["httpx", "wrk"] if wrk_available() else ["httpx"]
    if "wrk" in args.load and not wrk_available():
        parser.error("--load wrk: the wrk program is not on PATH (Debian: apt-get install wrk).")
    suffix = "" if args.sizes == "paper" else f"_{args.sizes}"
    if args.work is None:
        args.work = Path(tempfile.gettempdir()) / f"peace-serve-latency{suffix}"
    if args.out is None:
        args.out = ROOT / "results" / f"serve_latency{suffix}.json"
    torch.set_num_threads(1)
    cfg = model_config(args)
    rng = np.random.default_rng(args.seed)
    info = machine()
    args.work.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    ds, store, timings = build(args, args.work)
    service = Service(store)
    catalogues, timings["launch_large_domain_s"] = grow_catalogues(service, ds, args, rng)
    users = [str(u) for u in rng.choice(service.snapshot().version.users, 300, replace=False)]
    print(f"setup {time.perf_counter() - t0:.1f} s; measuring in-process scoring ...", flush=True)
    inproc = in_process(service, catalogues, users, args, rng)
    print("ANN recall ...", flush=True)
    ann = ann_recall(store, service, users[: args.ann_users], 10, [50, 100, 200, 400])
    states = service.snapshot().version.zero_shot_states
    del service
    kept = None
    if states > 1:  # the same run served from its kept state alone, in the same sitting
        print("the kept state alone (export --kept-only) ...", flush=True)
        kept = kept_state_cases(ds, args, users)

    print(
        f"\n{'case':<34} {'ranker':<20} {'load':<6} {'wkr':>3} {'thr':>3} {'cli':>3} {'reqs':>6} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'req/s':>9} {'err':>4} {'server ms':>9}"
    )
    http = [
        row for w, t in args.servers for row in http_cases(store, catalogues, users, args, w, t)
    ]
    if hasattr(os, "getloadavg"):
        info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": info,
        "model": {
            "sizes": args.sizes,
            "overrides": [
                *(PRESET if args.sizes == "preset" else MODEL),
                f"pretrain.max_steps={args.pretrain_steps}",
            ],
            "dim": cfg.model.dim,
            "n_interests": cfg.model.n_interests,
            "n_prototypes": cfg.model.n_prototypes,
            "top_k_prototypes": cfg.model.top_k_prototypes,
            "interaction_features": cfg.finetune.interaction_features,
            "zero_shot_states": states,
            "note": ("paper sizes (A.3)" if args.sizes == "paper" else "benchmark preset sizes")
            + ", briefly pre-trained: latency, not accuracy",
        },
        "data": {
            "synthetic": "small",
            "seed": args.seed,
            "users": int(ds.num_users),
            "catalogue_sizes": {d: len(c) for d, c in catalogues.items()},
        },
        "server": "uvicorn subprocess on 127.0.0.1 with the case's worker processes and torch "
        "threads per process, clients on the same machine: threads with keep-alive httpx clients "
        "(load_generator httpx, a fixed number of requests) and wrk, one thread with one "
        "keep-alive connection per client (load_generator wrk, a fixed time)",
        "load_generators": args.load,
        "timings_s": timings,
        "http": http,
        "in_process": inproc,
        "ann": ann,
        "kept_state": kept,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("\nin-process scoring (no HTTP):")
    for r in inproc:
        print(
            f"  {r['case']:<36} {r['candidates']} candidates: p50 {r['p50_ms']:.2f} ms, "
            f"p99 {r['p99_ms']:.2f} ms"
        )
    print(
        f"ANN ({ann['backend']}, {ann['items']} items, {ann['n_lists']} lists, probe "
        f"{ann['n_probe']}): exact full scoring p50 {ann['exact_full_scoring']['p50_ms']:.1f} ms"
    )
    for s in ann["sweep"]:
        print(
            f"  pool {s['pool']:>4}: recall@10 {s['recall_at_k']:.3f}, p50 {s['p50_ms']:.2f} ms, "
            f"p99 {s['p99_ms']:.2f} ms"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
