"""Zero-shot scoring of one pre-trained run, without fine-tuning: the served score (Sec. 4.4) at
one or more weights of the source-entity prior (``eval.zero_shot_prior``; the run's own profile
term, ``eval.zero_shot_profile_prior``, added at each) and the references that need no
learning, on chosen target domains, each scorer tested per user against the first.

This is how a pre-training change is judged on validation domains in minutes (a cut that moves
source genres out as extra targets, :mod:`peace.data.importers.movielens`), without scoring the
benchmark's own targets::

    peace pretrain --data data/ml-1m-val --preset benchmark --out runs/val
    peace evaluate --data data/ml-1m-val --run runs/val --domains Sci-Fi,Romance,Adventure
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from peace.data.dataset import Dataset
from peace.eval.protocol import (
    ZERO_SHOT_REFERENCES,
    Result,
    aggregate,
    chosen_splits,
    per_user_means,
    pretrained_rows,
    reference_rows,
)
from peace.eval.significance import domain_mean_test
from peace.flows.pretrained import Pretrained, cut_mismatch
from peace.flows.rankers import source_entity_prior, zero_shot_profile

#: the settings scored: every row of the domain, and its normal test split alone
SETTINGS = ("zero-shot", "zero-shot-test")
#: with ``valid``: the domain's validation split in place of every row
VALID_SETTINGS = ("zero-shot-valid", "zero-shot-test")


def scorer_name(weight: float) -> str:
    """``PEACE`` for the plain served score, ``PEACE + 0.5 prior`` with a prior weight."""
    return "PEACE" if weight == 0.0 else f"PEACE + {weight:g} prior"


#: how the scorer of :func:`evaluate_run`'s ``against`` run is named after its prior weight
AGAINST = ", against run"


def against_name(weight: float) -> str:
    """The scorer name of the ``against`` run: ``PEACE + 1 prior, against run``."""
    return f"{scorer_name(weight)}{AGAINST}"


def evaluate_run(
    ds: Dataset,
    pre: Pretrained,
    domains: Sequence[str] = (),
    weights: Sequence[float] = (0.0,),
    references: Sequence[str] = ZERO_SHOT_REFERENCES,
    show_progress: bool = False,
    against: Pretrained | None = None,
    valid: bool = False,
) -> dict[str, Any]:
    """Zero-shot NDCG@10 (and the other metrics of ``eval.ks``) of ``pre`` on ``domains``.

    Args:
        ds: the dataset ``pre`` was trained on.
        pre: the pre-trained run (:func:`peace.flows.pretrained.load_pretrained`).
        domains: target domains to score (default: every target domain).
        weights: prior weights of the served score, one scorer each (no duplicates).
        references: zero-shot references to score beside it (see ``ZERO_SHOT_REFERENCES``).
        against: another run of the same dataset (e.g. the preset's run of the same seed), scored
            with the first weight as the second scorer (:func:`against_name`), so the paired
            test compares the two runs on the same users.
        valid: score each domain's validation split and its test split
            (:data:`VALID_SETTINGS`) instead of every row and the test split (:data:`SETTINGS`):
            on a dataset's own targets, a first column that reads no test row
            (docs/experiments.md section 164).

    Returns:
        ``{"domains", "settings", "scorers", "seed", "rows", "per_user", "tests"}``: ``rows``
        as the benchmark's (mean over users; one seed, the run's), ``per_user`` the per-user
        NDCG@10 of the test split (and of the validation split with ``valid``), ``tests`` each
        other scorer minus the first on the mean over domains of ``zero-shot-test``
        (:func:`peace.eval.significance.domain_mean_test`).
    """
    weights = [float(w) for w in weights]
    if not weights or len(set(weights)) != len(weights):
        raise ValueError(f"prior weights {weights}: give one or more distinct weights.")
    unknown = sorted(set(references) - set(ZERO_SHOT_REFERENCES))
    if unknown:
        raise ValueError(f"references {unknown}: choose from {list(ZERO_SHOT_REFERENCES)}.")
    base = pre.config
    cfg = dataclasses.replace(base, eval=dataclasses.replace(base.eval, domains=tuple(domains)))
    splits = chosen_splits(ds, cfg)
    check_unseen(ds, pre, [ds.domains[d] for d in splits])
    results: Result = defaultdict(list)
    counts = cfg.eval.zero_shot_prior_counts
    scored = [(scorer_name(w), pre, w) for w in weights]
    if against is not None:
        check_unseen(ds, against, [ds.domains[d] for d in splits])
        scored.insert(1, (against_name(weights[0]), against, weights[0]))
    priors = {  # one per pre-training cut-off (the same for runs of this dataset)
        run.cutoff: source_entity_prior(ds, run.cutoff, counts) for _, run, w in scored if w
    }
    for name, run, w in scored:
        prior = priors[run.cutoff] if w else None
        for d, split in splits.items():
            pretrained_rows(
                results,
                name,
                run,
                ds,
                d,
                split,
                cfg,
                cfg.eval.ks,
                show_progress,
                normal=False,
                prior=(w, prior),
                profile=zero_shot_profile(ds, run.config, run.cutoff),
                zero_shot_valid=valid,
            )
    for name in references:
        reference_rows(results, name, ds, splits, cfg, valid)
    names = [name for name, _, _ in scored] + list(references)
    settings = VALID_SETTINGS if valid else SETTINGS
    return scored_document(ds, splits, results, names, settings, cfg.seed)


def scored_document(
    ds: Dataset,
    splits: dict,
    results: Result,
    names: Sequence[str],
    settings: tuple[str, str],
    seed: int,
) -> dict[str, Any]:
    """The result of one run's scorers ``names`` (the first the one the others are tested
    against): rows, per-user values and, on ``settings[1]``, each other scorer minus the first on
    the mean over domains (:func:`peace.eval.significance.domain_mean_test`)."""
    per_user = per_user_means([results])
    tested = settings[1]
    first = names[0]
    tests = []
    for name in names[1:]:
        pairs = [
            (np.asarray(per_user[name][tested][d]), np.asarray(per_user[first][tested][d]))
            for d in per_user[first][tested]
        ]
        t = domain_mean_test(pairs, seed)
        tests.append(
            {
                "scorer": name,
                "against": first,
                "setting": tested,
                "difference": t.mean,
                "p_value": t.p_value,
                "interval": [t.low, t.high],
                "users": t.users,
            }
        )
    return {
        "domains": [ds.domains[d] for d in splits],
        "settings": list(settings),
        "scorers": list(names),
        "seed": seed,
        "rows": aggregate([results]),
        "per_user": per_user,
        "tests": tests,
    }


def settings_of(doc: dict[str, Any]) -> tuple[str, ...]:
    """The two settings a result scores (``all / test`` zero-shot, ``valid / test`` normal)."""
    return tuple(doc.get("settings", SETTINGS))


def check_unseen(ds: Dataset, pre: Pretrained, names: list[str]) -> None:
    """Refuse to score a domain whose rows pre-trained the run: one of its source domains, or
    any domain of ``ds`` when the run is from another cut of the same data
    (:func:`peace.flows.pretrained.cut_mismatch`: same ids and maybe the same source names,
    other source items)."""
    if pre.source_domains is not None:
        seen = sorted(set(names) & set(pre.source_domains))
        if seen:
            raise ValueError(
                f"{ds.root}: {seen} were source domains of the run's pre-training (its sources: "
                f"{list(pre.source_domains)}); score a run pre-trained on this dataset."
            )
    problem = cut_mismatch(ds, pre.config, pre.cutoff, pre.source_items)
    if problem is not None:
        raise ValueError(problem)


def domain_differences(doc: dict[str, Any], metric: str = "ndcg@10") -> dict[str, dict[str, float]]:
    """This run minus the ``against`` run in a result of :func:`evaluate_run`, per setting and
    domain: the first scorer's mean minus the against scorer's."""
    first, other = doc["scorers"][0], doc["scorers"][1] if len(doc["scorers"]) > 1 else ""
    if not other.endswith(AGAINST):
        raise ValueError("the result has no against run: score it with evaluate_run(against=).")
    means = {
        (r["model"], r["setting"], r["domain"]): r["mean"]
        for r in doc["rows"]
        if r["metric"] == metric and r["model"] in (first, other)
    }
    return {
        s: {d: means[(first, s, d)] - means[(other, s, d)] for d in doc["domains"]}
        for s in settings_of(doc)
    }


def against_difference(doc: dict[str, Any], metric: str = "ndcg@10") -> dict[str, float]:
    """This run minus the ``against`` run in a result of :func:`evaluate_run`: per setting, the
    difference of the first scorer's and the against scorer's means over the domains."""
    return _over_domains(domain_differences(doc, metric))


def _over_domains(per_domain: dict[str, dict[str, float]]) -> dict[str, float]:
    """Per setting, the mean of :func:`domain_differences` over the domains."""
    return {s: float(np.mean(list(d.values()))) for s, d in per_domain.items()}


def pairs_summary(docs: Sequence[dict[str, Any]], metric: str = "ndcg@10") -> dict[str, Any]:
    """Several runs each scored against its own baseline (e.g. seeds 0-3 of a change against
    the preset's seeds 0-3): per setting, the mean over the pairs of :func:`against_difference`
    and how many pairs the change leads; ``domains`` the same per domain (every pair scores the
    same domains)."""
    per_domain = [domain_differences(doc, metric) for doc in docs]
    diffs = [_over_domains(d) for d in per_domain]
    settings = settings_of(docs[0])
    domains = {
        s: {
            d: {
                "difference": float(np.mean([p[s][d] for p in per_domain])),
                "ahead": sum(p[s][d] > 0 for p in per_domain),
            }
            for d in per_domain[0][s]
        }
        for s in settings
    }
    return {
        "pairs": len(diffs),
        "difference": {s: float(np.mean([d[s] for d in diffs])) for s in settings},
        "ahead": {s: sum(d[s] > 0 for d in diffs) for s in settings},
        "domains": domains,
    }


def summary(doc: dict[str, Any], metric: str = "ndcg@10") -> list[list[str]]:
    """Table rows of a result of :func:`evaluate_run` or :func:`peace.eval.normal.evaluate_normal`:
    scorer, both settings per domain (``all / test`` zero-shot, ``valid / test`` normal), their
    means over the domains, and the paired test against the first scorer."""
    means = {
        (r["model"], r["setting"], r["domain"]): r["mean"]
        for r in doc["rows"]
        if r["metric"] == metric
    }
    tests = {t["scorer"]: t for t in doc["tests"]}
    settings = settings_of(doc)
    out = []
    for name in doc["scorers"]:
        cells, per_setting = [], {s: [] for s in settings}
        for d in doc["domains"]:
            values = [means.get((name, s, d), math.nan) for s in settings]
            for s, v in zip(settings, values, strict=True):
                per_setting[s].append(v)
            cells.append(" / ".join(f"{v:.4f}" for v in values))
        mean = " / ".join(f"{np.mean(per_setting[s]):.4f}" for s in settings)
        t = tests.get(name)
        test = "-" if t is None else f"{t['difference']:+.4f} (p {t['p_value']:.2g})"
        out.append([name, *cells, mean, test])
    return out
