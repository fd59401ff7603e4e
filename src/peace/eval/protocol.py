"""The evaluation protocol of A.2 for every target domain, for PEACE and the references.

* normal: fine-tune on the first 70% of the target's rows, choose on the next 15%, test on the
  last 15% (per-user full ranking, items seen in earlier splits excluded);
* zero-shot: the pre-trained model, no target row for training or choice; every row of the domain
  is test data (``zero-shot``), and the normal test split alone (``zero-shot-test``).

Results are rows ``{"model", "setting", "domain", "metric", "mean", "std", "values"}`` over seeds
(``values``: one per seed, in the seeds' order), the schema of ``metrics.json`` and of the
benchmark reports.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch import Tensor

from peace.config import PeaceConfig
from peace.data.dataset import Dataset
from peace.data.history import HistoryIndex
from peace.data.splits import TargetSplit, pretrain_cutoff, split_targets
from peace.flows.finetune import RankingTask, evaluate_per_user, fit_ranker, ranking_task
from peace.flows.pretrain_cache import pretrain_or_load
from peace.flows.pretrained import Pretrained
from peace.flows.rankers import (
    DeepFMRanker,
    EntityOverlapRanker,
    EntityPriorRanker,
    PeaceRanker,
    PopularityRanker,
    ProfilePriorRanker,
    RandomRanker,
    TargetDomain,
    ZeroShotRanker,
    source_entity_counts,
    source_profile_prior,
    zero_shot_prior,
    zero_shot_profile,
)
from peace.models import COMPETITORS, FINE_TUNED, PEACE_VARIANTS, ZERO_SHOT

#: references of the normal setting (fitted on the target's training split)
NORMAL_REFERENCES = ("Popularity", "DeepFM")
#: references of the zero-shot settings: no learning, no target row (see peace.flows.rankers)
ZERO_SHOT_REFERENCES = ("Random", "Entity prior", "Profile prior", "Entity overlap")
REFERENCES = NORMAL_REFERENCES + ZERO_SHOT_REFERENCES
DEFAULT_MODELS = ("PEACE", "Popularity", "DeepFM")

Result = dict[tuple[str, str, str, str], list[float]]


def variant_config(cfg: PeaceConfig, name: str) -> PeaceConfig:
    switches = PEACE_VARIANTS[name]
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **switches))


#: settings whose per-user NDCG@10 is kept, for paired significance tests in the report (and
#: in ``peace evaluate --valid``'s output)
PAIRED_SETTINGS = ("normal", "zero-shot-test", "zero-shot-valid")
PER_USER = "per-user ndcg@10"
"""Key (in the metric slot of a :data:`Result`) of the per-user values of one seed."""


def _record(
    results: Result, model: str, setting: str, domain: str, per_user: dict[str, np.ndarray]
) -> None:
    """Means of each metric over users; per-user NDCG@10 too where paired tests need it."""
    for metric, values in per_user.items():
        mean = float(values.mean()) if len(values) else float("nan")
        results[(model, setting, domain, metric)].append(mean)
    if setting in PAIRED_SETTINGS and "ndcg@10" in per_user:
        results[(model, setting, domain, PER_USER)].append(per_user["ndcg@10"])


def per_user_means(results: list[Result]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """``{model: {setting: {domain: [per-user NDCG@10, mean over seeds]}}}``; users in the
    order of the ranking task, the same for every model of a (setting, domain)."""
    merged: dict[tuple[str, str, str], list[np.ndarray]] = defaultdict(list)
    for res in results:
        for (model, setting, domain, metric), values in res.items():
            if metric == PER_USER:
                merged[(model, setting, domain)].extend(values)
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for (model, setting, domain), arrays in sorted(merged.items()):
        mean = np.mean(np.stack(arrays), axis=0)
        out.setdefault(model, {}).setdefault(setting, {})[domain] = [
            round(float(v), 4) for v in mean
        ]
    return out


def run_seed(
    ds: Dataset,
    cfg: PeaceConfig,
    models: tuple[str, ...] = DEFAULT_MODELS,
    show_progress: bool = True,
    on_pretrained: Callable[[str, Pretrained], None] | None = None,
    log: Callable[[str], None] = print,
    pretrained: Pretrained | None = None,
    normal: bool = True,
    pretrain_cache: str | Path | None = None,
) -> tuple[Result, dict]:
    """Every model of ``models`` on every target domain for ``cfg.seed``.

    ``pretrained`` stands in for the pre-training of a PEACE variant or competitor when it was
    already run with the same configuration and seed. ``normal=False`` skips the normal setting
    of the pre-trained models (their zero-shot rows only: no fine-tuning). ``pretrain_cache``: a
    folder of kept pre-trainings (:mod:`peace.flows.pretrain_cache`), loaded where they match.
    """
    results: Result = defaultdict(list)
    timings: dict[str, float] = {}
    splits = chosen_splits(ds, cfg)
    ks = cfg.eval.ks
    for name in models:
        if name in PEACE_VARIANTS or name in COMPETITORS:
            vcfg = variant_config(cfg, name) if name in PEACE_VARIANTS else cfg
            architecture = "PEACE" if name in PEACE_VARIANTS else name
            t0 = time.perf_counter()
            loaded = False
            if pretrained is not None:
                pre = pretrained
            else:
                pre, run, loaded = pretrain_or_load(
                    ds, vcfg, pretrain_cache, architecture, show_progress
                )
            # a kept pre-training's time is its loading's: the report names it so
            step = f"{name} pre-train (loaded)" if loaded else f"{name} pre-train"
            timings[step] = time.perf_counter() - t0
            done = f"loaded from {run}" if loaded else "pre-trained"
            log(f"[seed {cfg.seed}] {name}: {done} in {timings[step]:.1f}s")
            if on_pretrained is not None:
                on_pretrained(name, pre)
            # eval.zero_shot_prior weighs PEACE's own zero-shot score; a competitor keeps its own.
            prior = zero_shot_prior(ds, pre, vcfg) if architecture == "PEACE" else (0.0, None)
            profile = (
                zero_shot_profile(ds, vcfg, pre.cutoff) if architecture == "PEACE" else (0.0, None)
            )
            for d, split in splits.items():
                t0 = time.perf_counter()
                kept = pretrained_rows(
                    results,
                    name,
                    pre,
                    ds,
                    d,
                    split,
                    vcfg,
                    ks,
                    show_progress,
                    zero_shot=name not in FINE_TUNED,
                    normal=normal and name not in ZERO_SHOT,
                    prior=prior,
                    profile=profile,
                )
                timings[f"{name} {ds.domains[d]}"] = time.perf_counter() - t0
                if kept is not None:
                    log(f"[seed {cfg.seed}] {name} {ds.domains[d]}: valid NDCG@10 {kept:.4f}")
        elif name in ZERO_SHOT_REFERENCES:
            reference_rows(results, name, ds, splits, cfg)
        elif name in REFERENCES:
            for d, split in splits.items():
                target = TargetDomain(ds, d)
                valid, test = split_task(split, "valid"), split_task(split, "test")
                if name == "Popularity":
                    ranker = PopularityRanker(target, split.train)
                else:
                    ranker = DeepFMRanker(target, cfg)
                    fitted = fit_ranker(
                        ranker,
                        target,
                        split.train,
                        valid,
                        cfg.finetune,
                        cfg.seed,
                        ks,
                        show_progress,
                    )
                    log(
                        f"[seed {cfg.seed}] {name} {ds.domains[d]}: valid NDCG@10 "
                        f"{kept_ndcg(fitted):.4f}"
                    )
                _record(
                    results,
                    name,
                    "normal",
                    ds.domains[d],
                    evaluate_per_user(ranker, target, test, ks, cfg.seed),
                )
        else:
            known = list(PEACE_VARIANTS) + list(REFERENCES) + list(COMPETITORS)
            raise ValueError(f"unknown model {name!r}; choose from {known}.")
    return results, timings


def chosen_splits(ds: Dataset, cfg: PeaceConfig) -> dict[int, TargetSplit]:
    """The target splits of ``cfg.eval.domains`` (all when empty), in the dataset's order."""
    splits = split_targets(ds, cfg.eval.split)
    if not cfg.eval.domains:
        return splits
    unknown = sorted(set(cfg.eval.domains) - {ds.domains[d] for d in splits})
    if unknown:
        names = [ds.domains[d] for d in splits]
        raise ValueError(f"eval.domains: {unknown} are not target domains; choose from {names}.")
    return {d: s for d, s in splits.items() if ds.domains[d] in cfg.eval.domains}


def target_history(ds: Dataset, cfg: PeaceConfig) -> dict[str, list[int]]:
    """Per target domain: each test user's positive rows in the domain's training split.

    Users come in the order of the test ranking task, the order of the per-user values of the
    ``normal`` and ``zero-shot-test`` settings, so the report can split every paired comparison
    by how much the user had already done in the domain.
    """
    out: dict[str, list[int]] = {}
    for d, split in chosen_splits(ds, cfg).items():
        users = ranking_task(split.test).users
        train = split.train
        counts = train[train["label"] == 1].groupby("user").size()
        out[ds.domains[d]] = [int(counts.get(u, 0)) for u in users]
    return out


def split_task(split: TargetSplit, part: str) -> RankingTask:
    """A target's ``"valid"`` or ``"test"`` split as a ranking task, the items of the earlier
    splits excluded."""
    if part == "valid":
        return ranking_task(split.valid, split.train)
    if part == "test":
        return ranking_task(split.test, _concat(split.train, split.valid))
    raise ValueError(f"split part {part!r}: expected valid or test.")


def zero_shot_tasks(split: TargetSplit, valid: bool = False) -> dict[str, RankingTask]:
    """The zero-shot settings' ranking tasks of a target domain: every row of the domain
    (``zero-shot``), or with ``valid`` its validation split alone (``zero-shot-valid``, ranked as
    the normal ranker's validation is: items of the training split excluded), and the normal
    test split (``zero-shot-test``)."""
    first = (
        ("zero-shot-valid", split_task(split, "valid"))
        if valid
        else ("zero-shot", ranking_task(split.all))
    )
    return dict([first, ("zero-shot-test", split_task(split, "test"))])


def reference_rows(
    results: Result,
    name: str,
    ds: Dataset,
    splits: dict[int, TargetSplit],
    cfg: PeaceConfig,
    valid: bool = False,
) -> None:
    """The zero-shot rows of a reference that needs no learning (``ZERO_SHOT_REFERENCES``);
    ``valid``: on the validation split in place of every row (:func:`zero_shot_tasks`)."""
    cutoff = pretrain_cutoff(split_targets(ds, cfg.eval.split), cfg.pretrain.cutoff)
    source = source_entity_counts(ds, cutoff)
    history = HistoryIndex(ds, cfg.model.history_length) if name == "Entity overlap" else None
    profile = source_profile_prior(ds, cutoff) if name == "Profile prior" else None
    for d, split in splits.items():
        target = TargetDomain(ds, d)
        if name == "Random":
            ranker = RandomRanker(target, cfg.seed)
        elif name == "Entity prior":
            ranker = EntityPriorRanker(target, source.rows)
        elif name == "Profile prior":
            ranker = ProfilePriorRanker(target, profile)
        else:
            ranker = EntityOverlapRanker(target, history, source.users, source.num_users)
        for setting, task in zero_shot_tasks(split, valid).items():
            metrics = evaluate_per_user(ranker, target, task, cfg.eval.ks, cfg.seed)
            _record(results, name, setting, ds.domains[d], metrics)


def _concat(a, b):
    import pandas as pd

    return pd.concat([a, b], ignore_index=True)


def pretrained_rows(
    results: Result,
    name: str,
    pre: Pretrained,
    ds: Dataset,
    d: int,
    split: TargetSplit,
    cfg: PeaceConfig,
    ks: tuple[int, ...],
    show_progress: bool,
    zero_shot: bool = True,
    normal: bool = True,
    prior: tuple[float, Tensor | None] = (0.0, None),
    profile: tuple[float, Tensor | None] = (0.0, None),
    zero_shot_valid: bool = False,
) -> float | None:
    """The zero-shot rows and/or the fine-tuned (normal) row of one pre-trained model;
    ``prior``: the zero-shot score's prior weight and source-entity prior (ZeroShotRanker and
    the normal head's affinity); ``profile``: the zero-shot score's profile weight and source
    profile prior (ZeroShotRanker only); ``zero_shot_valid``: the zero-shot ranker on the
    validation split in place of every row (:func:`zero_shot_tasks`). Returns the fine-tuned
    ranker's validation NDCG@10 (the kept epoch's), None without fine-tuning."""
    target = TargetDomain(ds, d)
    domain = ds.domains[d]
    tasks = zero_shot_tasks(split, zero_shot_valid) if zero_shot else {}
    if zero_shot:
        zero = ZeroShotRanker(pre, target, cfg.eval.zero_shot_scorer, *prior, profile=profile)
        for setting, task in tasks.items():
            metrics = evaluate_per_user(zero, target, task, ks, cfg.seed)
            _record(results, name, setting, domain, metrics)
    if not normal:
        return None
    test = tasks["zero-shot-test"] if zero_shot else split_task(split, "test")
    ranker = PeaceRanker(pre, target, cfg, prior)
    valid = split_task(split, "valid")
    fitted = fit_ranker(
        ranker, target, split.train, valid, cfg.finetune, cfg.seed, ks, show_progress
    )
    _record(results, name, "normal", domain, evaluate_per_user(ranker, target, test, ks, cfg.seed))
    return kept_ndcg(fitted)


def kept_ndcg(log: list[dict]) -> float:
    """The validation NDCG@10 of the epoch fine-tuning keeps (the best), from its log."""
    return max(e["ndcg@10"] for e in log)


def aggregate(results: list[Result]) -> list[dict]:
    """Mean and (population) std over seeds, one row per model, setting, domain and metric, with
    the value of each seed (``values``, in the order of ``results``)."""
    merged: Result = defaultdict(list)
    for res in results:
        for key, values in res.items():
            if key[3] != PER_USER:
                merged[key].extend(values)
    rows = []
    for (model, setting, domain, metric), values in sorted(merged.items()):
        arr = np.asarray(values, dtype=np.float64)
        rows.append(
            {
                "model": model,
                "setting": setting,
                "domain": domain,
                "metric": metric,
                "mean": float(arr.mean()),
                "std": float(arr.std()),
                "n": int(len(arr)),
                "values": [float(v) for v in arr],
            }
        )
    return rows


def run_protocol(
    ds: Dataset,
    cfg: PeaceConfig,
    seeds: list[int],
    models: tuple[str, ...] = DEFAULT_MODELS,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[list[dict], dict]:
    per_seed = []
    timings = {}
    for seed in seeds:
        res, t = run_seed(ds, dataclasses.replace(cfg, seed=seed), models, show_progress, log=log)
        per_seed.append(res)
        timings[seed] = t
    return aggregate(per_seed), timings
