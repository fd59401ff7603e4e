"""``peace benchmark``: Tables 2-3 and the ablation of the paper on a public dataset.

Protocol (A.2, DESIGN.md decisions 1 and 9) for every target domain and seed:

* normal: pre-train on the source domains, fine-tune on the target's first 70%, choose on the
  next 15%, test on the last 15%;
* zero-shot: no target data for training or choice; every row of the domain is test data
  (``zero-shot``) and, for comparison with the normal setting, the normal test split alone
  (``zero-shot-test``).

Hyper-parameters are chosen first, with the same budget for every trained model
(:mod:`peace.eval.search`).

The ablations use PEACE's chosen values with one component switched off.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from peace.config import PeaceConfig
from peace.data.dataset import Dataset
from peace.eval.protocol import (
    PEACE_VARIANTS,
    REFERENCES,
    ZERO_SHOT_REFERENCES,
    aggregate,
    per_user_means,
    run_seed,
)
from peace.eval.search import (
    apply_values,
    candidates_or_defaults,
    choose,
    finetune_stage,
    finetune_trial,
    pretrain_trial,
    search,
)
from peace.eval.update import join_search
from peace.flows.pretrained import Pretrained, load_pretrained
from peace.flows.rankers import zero_shot_prior
from peace.models import COMPETITORS

ALL_MODELS = (
    "PEACE",
    "PEACE w/o GL",
    "PEACE w/o CPL",
    "PEACE w/o PEA",
    "Entity mean",
    "Popularity",
    "DeepFM",
    *ZERO_SHOT_REFERENCES,
    *COMPETITORS,
)


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
    zero_shot_only: bool = False,
    pretrain_cache: str | Path | None = None,
) -> dict:
    """Search, then run every model over ``seeds``; return the results document (no files).

    With ``jobs > 1`` the independent groups of :func:`model_groups` run in that many worker
    processes, each with ``cores // jobs`` torch threads; the results are the same as those of one
    process with that thread count, since every group seeds itself. ``on_group`` receives each
    group's document as soon as that group finishes, so a run stopped later keeps it.
    ``zero_shot_only``: the pre-trained models' zero-shot rows alone (no fine-tuning, no
    fine-tuning search). ``pretrain_cache``: a folder where every pre-training of PEACE and its
    variants is kept and loaded again when one repeats it (:mod:`peace.flows.pretrain_cache`): a
    change that only the heads or the zero-shot score read then pre-trains only the competitors.
    """
    if zero_shot_only:
        finetune_candidates = []
    candidates = (pretrain_candidates, finetune_candidates, competitor_candidates)
    if jobs <= 1:
        return _run_models(
            ds,
            cfg,
            seeds,
            models,
            show_progress,
            log,
            *candidates,
            normal=not zero_shot_only,
            pretrain_cache=pretrain_cache,
        )
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    t_start = time.perf_counter()
    threads = run_threads(jobs)
    groups = model_groups(models, jobs)
    context = multiprocessing.get_context("spawn")
    with (
        ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool,
        tempfile.TemporaryDirectory(prefix="peace-search-") as folder,
    ):
        searched = None
        if sum(any(m in PEACE_VARIANTS for m in g) for g in groups) > 1:
            searched = search_peace_apart(
                pool, ds, cfg, seeds[0], candidates, threads, log, folder, pretrain_cache
            )
        futures = {
            pool.submit(
                _run_group,
                ds.root,
                cfg,
                seeds,
                group,
                threads,
                candidates,
                not zero_shot_only,
                searched,
                pretrain_cache,
            ): k
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


def model_groups(models: tuple[str, ...], jobs: int = 1) -> list[tuple[str, ...]]:
    """Units that can run apart: the PEACE variants in up to ``jobs`` groups, every other model
    alone; the PEACE groups first, as they are the longest.

    The variants take PEACE's searched values: with more than one group of them, PEACE is
    searched once beforehand, its candidates side by side (:func:`search_peace_apart`), and every
    group takes the outcome. ``--jobs 2`` runs the four variants (the update after a change that
    PEACE alone reads) in about half the wall time.
    """
    family = tuple(m for m in models if m in PEACE_VARIANTS)
    parts = max(1, min(jobs, len(family)))
    families = [family[k::parts] for k in range(parts)] if family else []
    return families + [(m,) for m in models if m not in PEACE_VARIANTS]


def _run_group(
    root: str,
    cfg: PeaceConfig,
    seeds: list[int],
    models: tuple[str, ...],
    threads: int,
    candidates: tuple,
    normal: bool = True,
    searched: tuple[dict, list[dict], str] | None = None,
    pretrain_cache: str | Path | None = None,
) -> dict:
    """One worker process: load the dataset, run ``models``, return their document.
    ``searched``: PEACE's search (chosen values, trials, the chosen pre-training's run folder)."""
    ds = _worker(threads, root)
    name = ", ".join(models)

    def log(message: str) -> None:
        print(f"[{name}] {message}", flush=True)

    found = None
    if searched is not None:
        values, trials, run = searched
        found = (values, trials, load_pretrained(run, ds) if "PEACE" in models else None)
    return _run_models(
        ds,
        cfg,
        seeds,
        models,
        False,
        log,
        *candidates,
        normal=normal,
        searched=found,
        pretrain_cache=pretrain_cache,
    )


def run_threads(jobs: int = 1) -> int:
    """The torch threads that each process of :func:`run_benchmark` computes with: this
    process's own for one job (the ``peace`` command sets them, ``PEACE_THREADS`` overrides),
    the cores divided among ``jobs`` worker processes otherwise."""
    if jobs <= 1:
        import torch

        return torch.get_num_threads()
    import os

    return max(1, (os.cpu_count() or 1) // jobs)


def _worker(threads: int, root: str) -> Dataset:
    """A worker process's thread count and dataset."""
    import torch

    from peace.data.dataset import load_dataset

    torch.set_num_threads(threads)
    return load_dataset(root)


def _pretrain_candidate(
    root: str,
    cfg: PeaceConfig,
    candidate: dict,
    out: str,
    threads: int,
    cache: str | Path | None = None,
) -> tuple[dict, float, str]:
    """One worker process: pre-train PEACE with one search candidate into the run folder
    ``out`` (or from or into the kept pre-trainings ``cache``); its search-log entry, selection
    key (:func:`peace.eval.search.pretrain_trial`) and run folder."""
    ds = _worker(threads, root)
    entry, key, _, run = pretrain_trial(ds, cfg, "PEACE", candidate, out=out, cache=cache)
    return entry, key, str(run)


def _finetune_candidate(
    root: str, cfg: PeaceConfig, run: str, candidate: dict, threads: int
) -> dict:
    """One worker process: PEACE's head with one fine-tuning candidate on the pre-training in
    ``run``; its search-log entry (:func:`peace.eval.search.finetune_trial`)."""
    ds = _worker(threads, root)
    pre = load_pretrained(run, ds)
    return finetune_trial(ds, cfg, "PEACE", candidate, pre, zero_shot_prior(ds, pre, cfg))


def search_peace_apart(
    pool,
    ds: Dataset,
    cfg: PeaceConfig,
    seed: int,
    candidates: tuple,
    threads: int,
    log: Callable[[str], None],
    folder: str,
    pretrain_cache: str | Path | None = None,
) -> tuple[dict, list[dict], str]:
    """PEACE's search (:func:`peace.eval.search.search`) with each stage's candidates side by
    side in ``pool``'s workers, the pre-trainings written under ``folder``: (chosen values, the
    trials in search order, the chosen pre-training's run folder). The same choice as searching
    in one process: each candidate seeds itself, and ties go to the earlier candidate. With
    ``pretrain_cache`` the pre-trainings are kept there instead (:mod:`peace.flows.pretrain_cache`).
    """
    pre_c, fin_c = candidates_or_defaults(candidates[0], candidates[1])
    base = dataclasses.replace(cfg, seed=seed)
    runs = [str(Path(folder) / f"pretrain-{k}") for k in range(len(pre_c))]
    done = [
        pool.submit(_pretrain_candidate, ds.root, base, cand, run, threads, pretrain_cache)
        for cand, run in zip(pre_c, runs, strict=True)
    ]
    trials, keys = [], []
    for k, (cand, future) in enumerate(zip(pre_c, done, strict=True)):
        entry, key, runs[k] = future.result()
        log(f"search PEACE pre-training {cand}: {entry['criterion']} {entry['value']:.4f}")
        trials.append(entry)
        keys.append(key)
    best = choose(trials, keys)
    chosen = dict(pre_c[best])
    peace_cfg = apply_values(base, chosen)
    # Side by side in the workers (an only candidate is not fitted: finetune_stage), taken in
    # the candidates' order.
    futures = iter(
        [
            pool.submit(_finetune_candidate, ds.root, peace_cfg, runs[best], cand, threads)
            for cand in fin_c
        ]
        if len(fin_c) > 1
        else []
    )
    entries = finetune_stage("PEACE", fin_c, lambda cand: next(futures).result(), log)
    trials += entries
    k = choose(entries)
    if k is not None:  # no candidates: a run without fine-tuning (zero-shot only)
        chosen.update(fin_c[k])
    return chosen, trials, runs[best]


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
        # groups of PEACE variants each search PEACE: a trial listed once, the first choice kept
        out["search"] = join_search(out["search"], doc.get("search", []))
        for model, values in doc.get("chosen", {}).items():
            out["chosen"].setdefault(model, values)
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
    normal: bool = True,
    searched: tuple[dict, list[dict], Pretrained | None] | None = None,
    pretrain_cache: str | Path | None = None,
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
        searched,
        pretrain_cache,
    )
    per_seed = []
    curves: dict[str, list[dict]] = {}
    timings: dict[str, dict] = {}
    embeddings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for seed in seeds:
        seed_results = []
        for model in models:
            values = chosen.get("PEACE" if model in PEACE_VARIANTS else model, {})
            mcfg = dataclasses.replace(apply_values(cfg, values), seed=seed)
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
                ds,
                mcfg,
                (model,),
                show_progress,
                on_pretrained=keep,
                log=log,
                pretrained=reuse,
                normal=normal,
                pretrain_cache=pretrain_cache,
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


CURVE_KEYS = (
    "step",
    "loss",
    "loss_et",
    "loss_uni",
    "loss_cp",
    "loss_ip",
    "valid_loss",
    "valid_ndcg",
)


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
