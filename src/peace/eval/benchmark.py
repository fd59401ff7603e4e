"""``peace benchmark``: Tables 2-3 and the ablation of the paper on a public dataset.

Protocol (A.2, DESIGN.md decisions 1 and 9) for every target domain and seed:

* normal: pre-train on the source domains, fine-tune on the target's first 70%, choose on the
  next 15%, test on the last 15%;
* zero-shot: no target data for training or choice; every row of the domain is test data
  (``zero-shot``) and, for comparison with the normal setting, the normal test split alone
  (``zero-shot-test``).

Hyper-parameter search, with the same budget (``len(candidates)``) for every trained model, on
seed ``seeds[0]``:

* PEACE's pre-training values (n, K) are chosen by the held-out *source* loss, so that the
  zero-shot setting stays free of any target data;
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
from peace.data.splits import split_targets
from peace.eval.protocol import PEACE_VARIANTS, REFERENCES, aggregate, run_seed
from peace.flows.finetune import fit_ranker, ranking_task
from peace.flows.pretrain import Pretrained, pretrain
from peace.flows.rankers import DeepFMRanker, PeaceRanker, TargetDomain

ALL_MODELS = ("PEACE", "PEACE w/o GL", "PEACE w/o CPL", "PEACE w/o PEA", "Popularity", "DeepFM")

# Candidate values, scaled from A.3 (n = 900, K = 160 for tens of millions of entities) to public
# data of thousands of entities. Two candidates per searched model: the budget two CPU cores allow
# for three seeds of six models in about two hours.
PRETRAIN_CANDIDATES: list[dict[str, object]] = [
    {"model.n_prototypes": 64, "model.top_k_prototypes": 16},
    {"model.n_prototypes": 256, "model.top_k_prototypes": 64},
]
FINETUNE_CANDIDATES: list[dict[str, object]] = [
    {"finetune.lr": 0.002},
    {"finetune.lr": 0.01},
]


def _apply(cfg: PeaceConfig, values: dict[str, object]) -> PeaceConfig:
    return cfg.override([f"{k}={_toml(v)}" for k, v in values.items()])


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def _valid_ndcg(
    ds: Dataset,
    cfg: PeaceConfig,
    make_ranker: Callable[[TargetDomain], object],
    show_progress: bool,
) -> float:
    """Mean over target domains of the best validation NDCG@10 reached while fine-tuning."""
    scores = []
    for d, split in split_targets(ds, cfg.eval.split).items():
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
            loss = min(e["valid_loss"] for e in pre.log)
            trail.append(
                {
                    "model": "PEACE (pre-training)",
                    "candidate": cand,
                    "criterion": "held-out source loss",
                    "value": loss,
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )
            log(f"search PEACE pre-training {cand}: held-out source loss {loss:.4f}")
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
) -> dict:
    """Search, then run every model over ``seeds``; return the results document (no files)."""
    t_start = time.perf_counter()
    base = dataclasses.replace(cfg, seed=seeds[0])
    chosen, trail, cache = search(
        ds, base, models, show_progress, log, pretrain_candidates, finetune_candidates
    )
    per_seed = []
    timings: dict[str, dict] = {}
    embeddings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for seed in seeds:
        seed_results = []
        for model in models:
            values = chosen.get("PEACE" if model in PEACE_VARIANTS else model, {})
            mcfg = dataclasses.replace(_apply(cfg, values), seed=seed)
            reuse = None
            if model == "PEACE" and seed == seeds[0] and "PEACE" in cache:
                reuse = cache["PEACE"]  # the searched model: same config, same seed

            def keep(name: str, pre: Pretrained, seed: int = seed) -> None:
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
        "seeds": list(seeds),
        "search": trail,
        "chosen": chosen,
        "timings": timings,
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "embeddings": embeddings,
        "variants": {m: PEACE_VARIANTS[m] for m in models if m in PEACE_VARIANTS},
        "references": [m for m in models if m in REFERENCES],
    }


def data_statistics(ds: Dataset) -> tuple[object, dict]:
    """Per-domain statistics (Table 1) and the graph's size."""
    return ds.summary(), {
        "entities": ds.num_entities,
        "relations": ds.num_relations,
        "triplets": int(len(ds.triplets)),
    }
