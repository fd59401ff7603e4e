"""The normal ranker of one pre-trained run (Eq. 11-12, Sec. 4.5's fine-tuning flow) on chosen
target domains: validation and test NDCG@10 per domain, and the test split tested per user
against another run, or against the same run with another head.

This is how a change to what the normal ranker reads (the pre-training behind it, or the head's
own ``[finetune]`` values) is judged on validation domains, as :mod:`peace.eval.zero_shot`
judges the zero-shot ranker::

    peace evaluate --normal --data data/ml-1m-val --run runs/change --against runs/preset \\
        --domains Sci-Fi,Romance,Adventure
    peace evaluate --normal --data data/ml-1m-val --run runs/preset --against runs/preset \\
        --domains Sci-Fi,Romance,Adventure --set finetune.user_dropout=0.3
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from peace.config import PeaceConfig
from peace.data.dataset import Dataset
from peace.eval.protocol import Result, _record, chosen_splits, split_task
from peace.eval.zero_shot import against_name, check_unseen, scored_document
from peace.flows.finetune import evaluate_per_user, fit_ranker
from peace.flows.pretrained import Pretrained
from peace.flows.rankers import PeaceRanker, TargetDomain, zero_shot_prior

#: the settings scored: the validation split (which stops fine-tuning) and the test split
SETTINGS = ("normal-valid", "normal")
#: the sections of the configuration a head may change without pre-training again
HEAD_SECTIONS = ("finetune", "eval")


def head_config(pre: Pretrained, overrides: Sequence[str] = ()) -> PeaceConfig:
    """The run's configuration with ``overrides`` (``section.key=value``) of the head's sections;
    any other key would describe other pre-trained weights, so it is refused."""
    other = [o for o in overrides if o.split(".", 1)[0].strip() not in HEAD_SECTIONS]
    if other:
        raise ValueError(
            f"--set {other[0]!r}: only [finetune] and [eval] values change the normal ranker of a "
            "pre-trained run; pre-train a run with that value and pass it as --run instead."
        )
    return pre.config.override(list(overrides))


def evaluate_normal(
    ds: Dataset,
    pre: Pretrained,
    domains: Sequence[str] = (),
    against: Pretrained | None = None,
    overrides: Sequence[str] = (),
    show_progress: bool = False,
) -> dict[str, Any]:
    """Fine-tune the normal ranker of ``pre`` on ``domains`` (default: every target domain) and
    score it; with ``against``, that run's ranker too, as the second scorer (its own
    configuration, without ``overrides``), tested per user on the test split.

    Args:
        ds: the dataset ``pre`` was trained on.
        pre: the pre-trained run (:func:`peace.flows.pretrained.load_pretrained`).
        domains: target domains to fine-tune on and score.
        against: another run of the same dataset, or ``pre`` itself to compare heads.
        overrides: ``[finetune]`` / ``[eval]`` values for ``pre``'s ranker (:func:`head_config`).

    Returns:
        As :func:`peace.eval.zero_shot.evaluate_run`, with the settings ``normal-valid`` (the
        best validation epoch, which fine-tuning keeps) and ``normal`` (its test split).
    """
    scored = [("PEACE", pre, head_config(pre, overrides))]
    if against is not None:
        scored.append((against_name(0.0), against, against.config))
    results: Result = defaultdict(list)
    splits: dict = {}
    for name, run, cfg in scored:
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, domains=tuple(domains)))
        splits = chosen_splits(ds, cfg)
        check_unseen(ds, run, [ds.domains[d] for d in splits])
        prior = zero_shot_prior(ds, run, cfg)
        for d, split in splits.items():
            target = TargetDomain(ds, d)
            valid, test = split_task(split, "valid"), split_task(split, "test")
            ranker = PeaceRanker(run, target, cfg, prior)
            fc = cfg.finetune
            fit_ranker(ranker, target, split.train, valid, fc, cfg.seed, cfg.eval.ks, show_progress)
            for setting, task in zip(SETTINGS, (valid, test), strict=True):
                scores = evaluate_per_user(ranker, target, task, cfg.eval.ks, cfg.seed)
                _record(results, name, setting, ds.domains[d], scores)
    names = [name for name, _, _ in scored]
    return scored_document(ds, splits, results, names, SETTINGS, pre.config.seed)
