"""Hyper-parameter search of ``peace benchmark``, on validation data and seed ``seeds[0]``.

Hyper-parameter search, with the same budget (``len(candidates)``) for every trained model, on
seed ``seeds[0]``:

* pre-trained models (PEACE's values and every competitor's learning rate) are chosen by the
  held-out *source* ranking (NDCG@10 of the served score over each held-out record's source
  catalogue, :func:`peace.flows.pretrain.pretrain`), so that the zero-shot setting stays free
  of any target data;
* fine-tuned rankers (PEACE's head, DeepFM) are chosen by validation NDCG@10 averaged over the
  target domains.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from peace.config import PeaceConfig
from peace.data.dataset import Dataset
from peace.eval.protocol import PEACE_VARIANTS, chosen_splits, kept_ndcg, split_task
from peace.flows.finetune import fit_ranker
from peace.flows.pretrain_cache import pretrain_or_load
from peace.flows.pretrained import Pretrained
from peace.flows.rankers import DeepFMRanker, PeaceRanker, TargetDomain, zero_shot_prior
from peace.models import COMPETITORS, FINE_TUNED

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


def candidates_or_defaults(
    pretrain_candidates: list[dict] | None, finetune_candidates: list[dict] | None
) -> tuple[list[dict], list[dict]]:
    """The pre-training and fine-tuning candidates a search tries: those given, or the defaults
    (:data:`PRETRAIN_CANDIDATES`, :data:`FINETUNE_CANDIDATES`) for a list that is None."""
    return (
        PRETRAIN_CANDIDATES if pretrain_candidates is None else pretrain_candidates,
        FINETUNE_CANDIDATES if finetune_candidates is None else finetune_candidates,
    )


def choose(entries: list[dict], keys: list[float] | None = None) -> int | None:
    """The search's choice among one stage's trials, in the order they were tried: the index of
    the lowest key (pre-training, :func:`pretrain_choice`), or without keys of the highest
    ``value`` (fine-tuning's validation NDCG@10); the earlier of equal ones. None without
    trials. Both ways of searching (:func:`search` and
    :func:`peace.eval.benchmark.search_peace_apart`) choose with it."""
    if not entries:
        return None
    if len(entries) == 1:  # nothing to choose between (an only candidate has no value)
        return 0
    if keys is None:
        keys = [-e["value"] for e in entries]
    return min(range(len(entries)), key=keys.__getitem__)


def finetune_stage(
    model: str,
    candidates: list[dict],
    fit: Callable[[dict], dict],
    log: Callable[[str], None],
) -> list[dict]:
    """The search-log entries of one model's fine-tuning stage: ``fit(candidate)`` for each
    candidate, or, for a single candidate (``--dev``, ``--quick``), an entry without a value
    and no fit: with nothing to choose between, the run's own fine-tuning is the same fit."""
    if len(candidates) == 1:
        log(f"search {model} fine-tuning {candidates[0]}: the only candidate (fitted by the run)")
        return [only_candidate(model, candidates[0])]
    entries = []
    for cand in candidates:
        entries.append(fit(cand))
        log(f"search {model} fine-tuning {cand}: valid NDCG@10 {entries[-1]['value']:.4f}")
    return entries


def only_candidate(model: str, candidate: dict) -> dict:
    """The search-log entry of a fine-tuning stage's only candidate (:func:`finetune_stage`)."""
    name = model if model == "DeepFM" else f"{model} (fine-tuning)"
    return {"model": name, "candidate": candidate, "criterion": "only candidate", "value": None}


def apply_values(cfg: PeaceConfig, values: dict[str, object]) -> PeaceConfig:
    """``cfg`` with the searched ``values`` (``{"section.key": value}``) set."""
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
            split_task(split, "valid"),
            cfg.finetune,
            cfg.seed,
            cfg.eval.ks,
            show_progress,
        )
        scores.append(kept_ndcg(log))
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
    searched: tuple[dict, list[dict], Pretrained | None] | None = None,
    pretrain_cache: str | Path | None = None,
) -> tuple[dict[str, dict], list[dict], dict[str, Pretrained]]:
    """Choose hyper-parameters on validation data; return choices, the search log, and models.

    ``searched``: PEACE's search done beforehand, ``(chosen values, its trials, the chosen
    pre-training or None)``, taken instead of searching PEACE again. ``pretrain_cache``: a folder
    of kept pre-trainings (:mod:`peace.flows.pretrain_cache`).
    """
    pre_c, fin_c = candidates_or_defaults(pretrain_candidates, finetune_candidates)
    chosen: dict[str, dict] = {}
    trail: list[dict] = []
    cache: dict[str, Pretrained] = {}
    if searched is not None and any(m in PEACE_VARIANTS for m in models):
        values, entries, pre = searched  # PEACE searched beforehand (peace.eval.benchmark)
        chosen["PEACE"] = dict(values)
        trail += entries
        if pre is not None:
            cache["PEACE"] = pre
    elif any(m in PEACE_VARIANTS for m in models):
        best = _search_pretraining(
            ds, cfg, "PEACE", pre_c, show_progress, log, trail, pretrain_cache
        )
        chosen["PEACE"] = dict(best[1])
        cache["PEACE"] = best[2]
        peace_cfg = apply_values(cfg, chosen["PEACE"])
        prior = zero_shot_prior(ds, best[2], peace_cfg)
        entries = finetune_stage(
            "PEACE",
            fin_c,
            lambda cand: finetune_trial(
                ds, peace_cfg, "PEACE", cand, best[2], prior, show_progress
            ),
            log,
        )
        trail += entries
        k = choose(entries)
        if k is not None:  # no candidates: a run without fine-tuning (zero-shot only)
            chosen["PEACE"].update(fin_c[k])
    comp_c = (
        COMPETITOR_PRETRAIN_CANDIDATES if competitor_candidates is None else competitor_candidates
    )
    for name in (m for m in models if m in COMPETITORS):
        best = _search_pretraining(ds, cfg, name, comp_c, show_progress, log, trail, pretrain_cache)
        chosen[name] = dict(best[1])
        cache[name] = best[2]
        if name not in FINE_TUNED:
            continue  # zero-shot: nothing of the target is fitted or chosen
        model_cfg = apply_values(cfg, chosen[name])
        entries = finetune_stage(
            name,
            fin_c,
            lambda cand, c=model_cfg, n=name, p=best[2]: finetune_trial(
                ds, c, n, cand, p, (0.0, None), show_progress
            ),
            log,
        )
        trail += entries
        k = choose(entries)
        if k is not None:
            chosen[name].update(fin_c[k])
    if "DeepFM" in models:

        def fit_deepfm(cand: dict) -> dict:
            c = apply_values(cfg, cand)
            value = _valid_ndcg(ds, c, lambda t: DeepFMRanker(t, c), show_progress)
            return {
                "model": "DeepFM",
                "candidate": cand,
                "criterion": "valid ndcg@10",
                "value": value,
            }

        entries = finetune_stage("DeepFM", fin_c, fit_deepfm, log)
        trail += entries
        k = choose(entries)
        if k is not None:
            chosen["DeepFM"] = dict(fin_c[k])
    return chosen, trail, cache


def _search_pretraining(
    ds: Dataset,
    cfg: PeaceConfig,
    name: str,
    candidates: list[dict],
    show_progress: bool,
    log: Callable[[str], None],
    trail: list[dict],
    cache: str | Path | None = None,
) -> tuple[float, dict, Pretrained]:
    """Pre-train model ``name`` with each candidate; (criterion key, candidate, model) of the
    one :func:`choose` takes by :func:`pretrain_choice`'s key. Every candidate is logged and
    added to ``trail``. ``cache``: a folder of kept pre-trainings."""
    entries, keys, best = [], [], None
    for cand in candidates:
        entry, key, pre, _ = pretrain_trial(ds, cfg, name, cand, show_progress, cache=cache)
        log(f"search {name} pre-training {cand}: {entry['criterion']} {entry['value']:.4f}")
        entries.append(entry)
        keys.append(key)
        if choose(entries, keys) == len(entries) - 1:  # only the chosen model is kept
            best = (key, cand, pre)
    trail += entries
    return best


def pretrain_trial(
    ds: Dataset,
    cfg: PeaceConfig,
    name: str,
    candidate: dict,
    show_progress: bool = False,
    out: str | Path | None = None,
    cache: str | Path | None = None,
) -> tuple[dict, float, Pretrained, Path | None]:
    """Pre-train model ``name`` with one candidate (into the run folder ``out``, if given; from
    or into the folder of kept pre-trainings ``cache``, if given, :mod:`peace.flows.pretrain_cache`):
    (its search-log entry, its :func:`pretrain_choice` key, lower is better, the model, its run
    folder or None). The entry of a kept pre-training says so (``loaded``): its seconds are the
    loading's."""
    t0 = time.perf_counter()
    cand_cfg = apply_values(cfg, candidate)
    pre, run, loaded = pretrain_or_load(ds, cand_cfg, cache, name, show_progress, out)
    criterion, value, loss = pretrain_choice(pre.log)
    entry = {
        "model": f"{name} (pre-training)",
        "candidate": candidate,
        "criterion": criterion,
        "value": value,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if loaded:
        entry["loaded"] = True
    return entry, loss, pre, run


def finetune_trial(
    ds: Dataset,
    cfg: PeaceConfig,
    name: str,
    candidate: dict,
    pre: Pretrained,
    prior: tuple[float, object] = (0.0, None),
    show_progress: bool = False,
) -> dict:
    """Fine-tune ``name``'s head on every target domain with one candidate: its search-log
    entry, whose value is the validation NDCG@10 averaged over the domains."""
    c = apply_values(cfg, candidate)
    t0 = time.perf_counter()
    value = _valid_ndcg(ds, c, lambda t: PeaceRanker(pre, t, c, prior), show_progress)
    return {
        "model": f"{name} (fine-tuning)",
        "candidate": candidate,
        "criterion": "valid ndcg@10",
        "value": value,
        "seconds": round(time.perf_counter() - t0, 1),
    }
