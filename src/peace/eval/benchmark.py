"""``peace benchmark``: Tables 2-3 and the ablation of the paper on a public dataset.

Protocol (A.2, DESIGN.md decisions 1 and 9) for every target domain and seed:

* normal: pre-train on the source domains, fine-tune on the target's first 70%, choose on the
  next 15%, test on the last 15%;
* zero-shot: no target data for training or choice; every row of the domain is test data
  (``zero-shot``) and, for comparison with the normal setting, the normal test split alone
  (``zero-shot-test``).

Hyper-parameter search, with the same budget (``len(candidates)``) for every trained model, on
seed ``seeds[0]``:

* pre-trained models (PEACE's values and every competitor's learning rate) are chosen by the
  held-out *source* ranking (NDCG@10 of the served score over each held-out record's source
  catalogue, :func:`peace.flows.pretrain.pretrain`), so that the zero-shot setting stays free
  of any target data;
* fine-tuned rankers (PEACE's head, DeepFM) are chosen by validation NDCG@10 averaged over the
  target domains.

The ablations use PEACE's chosen values with one component switched off.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

from peace.config import PeaceConfig
from peace.data.dataset import Dataset
from peace.eval.protocol import (
    COMPETITORS,
    PEACE_VARIANTS,
    REFERENCES,
    ZERO_SHOT_REFERENCES,
    aggregate,
    chosen_splits,
    per_user_means,
    run_seed,
)
from peace.flows.finetune import fit_ranker, ranking_task
from peace.flows.pretrain import pretrain
from peace.flows.pretrained import Pretrained
from peace.flows.rankers import DeepFMRanker, PeaceRanker, TargetDomain
from peace.models import FINE_TUNED

ALL_MODELS = (
    "PEACE",
    "PEACE w/o GL",
    "PEACE w/o CPL",
    "PEACE w/o PEA",
    "Popularity",
    "DeepFM",
    *ZERO_SHOT_REFERENCES,
    *COMPETITORS,
)

# Candidate values: two per searched model, the budget two CPU cores allow. Every pre-trained
# model (PEACE and each competitor) searches the same thing, its pre-training learning rate, and
# is chosen by the same rule, the held-out source ranking of its served score.
PRETRAIN_CANDIDATES: list[dict[str, object]] = [
    {"pretrain.lr": 0.002},
    {"pretrain.lr": 0.005},
]
FINETUNE_CANDIDATES: list[dict[str, object]] = [
    {"finetune.lr": 0.002},
    {"finetune.lr": 0.01},
]
COMPETITOR_PRETRAIN_CANDIDATES: list[dict[str, object]] = PRETRAIN_CANDIDATES


def _apply(cfg: PeaceConfig, values: dict[str, object]) -> PeaceConfig:
    return cfg.override([f"{k}={_toml(v)}" for k, v in values.items()])


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def pretrain_choice(log: list[dict]) -> tuple[str, float, float]:
    """(criterion, its best value, a key where lower is better) of a pre-training log: the
    held-out source NDCG@10 of the served score when logged, else the held-out loss."""
    ndcg = [e["valid_ndcg"] for e in log if e.get("valid_ndcg") == e.get("valid_ndcg")]
    if any(v is not None for v in ndcg):
        best = max(v for v in ndcg if v is not None)
        return "held-out source NDCG@10", float(best), -float(best)
    loss = min(e["valid_loss"] for e in log)
    return "held-out source loss", float(loss), float(loss)


def _valid_ndcg(
    ds: Dataset,
    cfg: PeaceConfig,
    make_ranker: Callable[[TargetDomain], object],
    show_progress: bool,
) -> float:
    """Mean over target domains of the best validation NDCG@10 reached while fine-tuning."""
    scores = []
    for d, split in chosen_splits(ds, cfg).items():
        target = TargetDomain(ds, d)
        ranker = make_ranker(target)
        log = fit_ranker(
            ranker,
            target,
            split.train,
            ranking_task(split.valid, split.train),
            cfg.finetune,
            cfg.seed,
            cfg.eval.ks,
            show_progress,
        )
        scores.append(max(e["ndcg@10"] for e in log))
    return float(np.mean(scores))


def search(
    ds: Dataset,
    cfg: PeaceConfig,
    models: tuple[str, ...],
    show_progress: bool,
    log: Callable[[str], None],
    pretrain_candidates: list[dict] | None = None,
    finetune_candidates: list[dict] | None = None,
    competitor_candidates: list[dict] | None = None,
) -> tuple[dict[str, dict], list[dict], dict[str, Pretrained]]:
    """Choose hyper-parameters on validation data; return choices, the search log, and models."""
    pre_c = PRETRAIN_CANDIDATES if pretrain_candidates is None else pretrain_candidates
    fin_c = FINETUNE_CANDIDATES if finetune_candidates is None else finetune_candidates
    chosen: dict[str, dict] = {}
    trail: list[dict] = []
    cache: dict[str, Pretrained] = {}
    if any(m in PEACE_VARIANTS for m in models):
        best = None
        for cand in pre_c:
            t0 = time.perf_counter()
            pre = pretrain(ds, _apply(cfg, cand), show_progress=show_progress)
            criterion, value, loss = pretrain_choice(pre.log)
            trail.append(
                {
                    "model": "PEACE (pre-training)",
                    "candidate": cand,
                    "criterion": criterion,
                    "value": value,
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )
            log(f"search PEACE pre-training {cand}: {criterion} {value:.4f}")
            if best is None or loss < best[0]:
                best = (loss, cand, pre)
        chosen["PEACE"] = dict(best[1])
        cache["PEACE"] = best[2]
        peace_cfg = _apply(cfg, chosen["PEACE"])
        best_ft = None
        for cand in fin_c:
            c = _apply(peace_cfg, cand)
            value = _valid_ndcg(ds, c, lambda t, c=c: PeaceRanker(best[2], t, c), show_progress)
            trail.append(
                {
                    "model": "PEACE (fine-tuning)",
                    "candidate": cand,
                    "criterion": "valid ndcg@10",
                    "value": value,
                }
            )
            log(f"search PEACE fine-tuning {cand}: valid NDCG@10 {value:.4f}")
            if best_ft is None or value > best_ft[0]:
                best_ft = (value, cand)
        chosen["PEACE"].update(best_ft[1])
    comp_c = (
        COMPETITOR_PRETRAIN_CANDIDATES if competitor_candidates is None else competitor_candidates
    )
    for name in (m for m in models if m in COMPETITORS):
        best = None
        for cand in comp_c:
            t0 = time.perf_counter()
            pre = pretrain(ds, _apply(cfg, cand), show_progress=show_progress, architecture=name)
            criterion, value, loss = pretrain_choice(pre.log)
            trail.append(
                {
                    "model": f"{name} (pre-training)",
                    "candidate": cand,
                    "criterion": criterion,
                    "value": value,
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )
            log(f"search {name} pre-training {cand}: {criterion} {value:.4f}")
            if best is None or loss < best[0]:
                best = (loss, cand, pre)
        chosen[name] = dict(best[1])
        cache[name] = best[2]
        if name not in FINE_TUNED:
            continue  # zero-shot: nothing of the target is fitted or chosen
        model_cfg = _apply(cfg, chosen[name])
        best_ft = None
        for cand in fin_c:
            c = _apply(model_cfg, cand)
            t0 = time.perf_counter()
            value = _valid_ndcg(
                ds, c, lambda t, c=c, p=best[2]: PeaceRanker(p, t, c), show_progress
            )
            trail.append(
                {
                    "model": f"{name} (fine-tuning)",
                    "candidate": cand,
                    "criterion": "valid ndcg@10",
                    "value": value,
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )
            log(f"search {name} fine-tuning {cand}: valid NDCG@10 {value:.4f}")
            if best_ft is None or value > best_ft[0]:
                best_ft = (value, cand)
        chosen[name].update(best_ft[1])
    if "DeepFM" in models:
        best_ft = None
        for cand in fin_c:
            c = _apply(cfg, cand)
            value = _valid_ndcg(ds, c, lambda t, c=c: DeepFMRanker(t, c), show_progress)
            trail.append(
                {"model": "DeepFM", "candidate": cand, "criterion": "valid ndcg@10", "value": value}
            )
            log(f"search DeepFM {cand}: valid NDCG@10 {value:.4f}")
            if best_ft is None or value > best_ft[0]:
                best_ft = (value, cand)
        chosen["DeepFM"] = dict(best_ft[1])
    return chosen, trail, cache


def run_benchmark(
    ds: Dataset,
    cfg: PeaceConfig,
    seeds: list[int],
    models: tuple[str, ...] = ALL_MODELS,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
    pretrain_candidates: list[dict] | None = None,
    finetune_candidates: list[dict] | None = None,
    competitor_candidates: list[dict] | None = None,
    jobs: int = 1,
    on_group: Callable[[dict], None] | None = None,
) -> dict:
    """Search, then run every model over ``seeds``; return the results document (no files).

    With ``jobs > 1`` the independent groups of :func:`model_groups` run in that many worker
    processes, each with ``cores // jobs`` torch threads; the results are the same as those of one
    process with that thread count, since every group seeds itself. ``on_group`` receives each
    group's document as soon as that group finishes, so a run stopped later keeps it.
    """
    candidates = (pretrain_candidates, finetune_candidates, competitor_candidates)
    if jobs <= 1:
        return _run_models(ds, cfg, seeds, models, show_progress, log, *candidates)
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    t_start = time.perf_counter()
    threads = max(1, (os.cpu_count() or 1) // jobs)
    groups = model_groups(models)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {
            pool.submit(_run_group, ds.root, cfg, seeds, group, threads, candidates): k
            for k, group in enumerate(groups)
        }
        docs: list[dict | None] = [None] * len(groups)
        failed: list[tuple[str, BaseException]] = []
        for future in as_completed(futures):
            k = futures[future]
            name = ", ".join(groups[k])
            try:
                doc = future.result()
            except Exception as exc:  # the other groups still finish and are handed on
                log(f"{name}: failed: {exc!r}")
                failed.append((name, exc))
                continue
            log(f"{name}: done in {doc['wall_seconds']:.0f}s")
            if on_group is not None:
                on_group(doc)
            docs[k] = doc
    if failed:
        names = "; ".join(name for name, _ in failed)
        raise RuntimeError(f"benchmark groups failed: {names}") from failed[0][1]
    merged = merge_documents([d for d in docs if d is not None])
    merged["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    merged["jobs"] = {"processes": jobs, "threads_per_process": threads}
    return merged


def model_groups(models: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Units that can run apart: the PEACE variants together (they share PEACE's search), every
    other model alone; the PEACE group first, as it is the longest."""
    family = tuple(m for m in models if m in PEACE_VARIANTS)
    return ([family] if family else []) + [(m,) for m in models if m not in PEACE_VARIANTS]


def _run_group(
    root: str,
    cfg: PeaceConfig,
    seeds: list[int],
    models: tuple[str, ...],
    threads: int,
    candidates: tuple,
) -> dict:
    """One worker process: load the dataset, run ``models``, return their document."""
    import torch

    from peace.data.dataset import load_dataset

    torch.set_num_threads(threads)
    name = ", ".join(models)

    def log(message: str) -> None:
        print(f"[{name}] {message}", flush=True)

    return _run_models(load_dataset(root), cfg, seeds, models, False, log, *candidates)


def merge_documents(docs: list[dict]) -> dict:
    """One results document from the documents of disjoint model groups."""
    out: dict = {
        "rows": [],
        "seeds": docs[0]["seeds"] if docs else [],
        "search": [],
        "chosen": {},
        "timings": {},
        "embeddings": {},
        "variants": {},
        "references": [],
        "groups": [],
        "per_user": {},
        "curves": {},
    }
    for doc in docs:
        out["rows"] += doc["rows"]
        out["per_user"].update(doc.get("per_user", {}))
        out["curves"].update(doc.get("curves", {}))
        out["search"] += doc.get("search", [])
        out["chosen"].update(doc.get("chosen", {}))
        for seed, t in doc.get("timings", {}).items():
            out["timings"].setdefault(seed, {}).update(t)
        out["embeddings"].update(doc.get("embeddings", {}))
        out["variants"].update(doc.get("variants", {}))
        out["references"] += [m for m in doc.get("references", []) if m not in out["references"]]
        models = sorted({r["model"] for r in doc["rows"]})
        out["groups"].append({"models": models, "wall_seconds": doc.get("wall_seconds")})
    out["rows"].sort(key=lambda r: (r["model"], r["setting"], r["domain"], r["metric"]))
    return out


def _run_models(
    ds: Dataset,
    cfg: PeaceConfig,
    seeds: list[int],
    models: tuple[str, ...],
    show_progress: bool,
    log: Callable[[str], None],
    pretrain_candidates: list[dict] | None,
    finetune_candidates: list[dict] | None,
    competitor_candidates: list[dict] | None,
) -> dict:
    t_start = time.perf_counter()
    base = dataclasses.replace(cfg, seed=seeds[0])
    chosen, trail, cache = search(
        ds,
        base,
        models,
        show_progress,
        log,
        pretrain_candidates,
        finetune_candidates,
        competitor_candidates,
    )
    per_seed = []
    curves: dict[str, list[dict]] = {}
    timings: dict[str, dict] = {}
    embeddings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for seed in seeds:
        seed_results = []
        for model in models:
            values = chosen.get("PEACE" if model in PEACE_VARIANTS else model, {})
            mcfg = dataclasses.replace(_apply(cfg, values), seed=seed)
            reuse = None
            if seed == seeds[0] and model in cache:
                reuse = cache[model]  # the searched model: same config, same seed

            def keep(name: str, pre: Pretrained, seed: int = seed) -> None:
                if seed == seeds[0]:
                    curves[name] = [_curve_point(e) for e in pre.log]
                if seed == seeds[0] and name in ("PEACE", "PEACE w/o CPL"):
                    table = pre.entity_table()[:-1].numpy()
                    protos = pre.model.prototypes.weight.detach().numpy().copy()
                    embeddings[name] = (table, protos)

            res, t = run_seed(
                ds, mcfg, (model,), show_progress, on_pretrained=keep, log=log, pretrained=reuse
            )
            seed_results.append(res)
            timings.setdefault(str(seed), {}).update({k: round(v, 1) for k, v in t.items()})
        merged: dict = {}
        for res in seed_results:
            merged.update(res)
        per_seed.append(merged)
        log(f"seed {seed} done at {time.perf_counter() - t_start:.0f}s")
    rows = aggregate(per_seed)
    return {
        "rows": rows,
        "per_user": per_user_means(per_seed),
        "curves": curves,
        "seeds": list(seeds),
        "search": trail,
        "chosen": chosen,
        "timings": timings,
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "embeddings": embeddings,
        "variants": {m: PEACE_VARIANTS[m] for m in models if m in PEACE_VARIANTS},
        "references": [m for m in models if m in REFERENCES],
    }


CURVE_KEYS = ("step", "loss", "loss_et", "loss_cp", "loss_ip", "valid_loss", "valid_ndcg")


def _curve_point(entry: dict) -> dict:
    """One held-out evaluation of a pre-training log, as the report's curves keep it."""
    return {k: round(float(entry[k]), 5) for k in CURVE_KEYS if entry.get(k) is not None}


def data_statistics(ds: Dataset) -> tuple[object, dict]:
    """Per-domain statistics (Table 1) and the graph's size."""
    return ds.summary(), {
        "entities": ds.num_entities,
        "relations": ds.num_relations,
        "triplets": int(len(ds.triplets)),
    }
