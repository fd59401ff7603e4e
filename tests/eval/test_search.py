"""PEACE's search with its candidates side by side makes the choice of a search in one process."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import torch

from peace.config import PeaceConfig
from peace.data.dataset import load_dataset
from peace.eval.benchmark import search_peace_apart
from peace.eval.search import choose, search
from peace.flows.pretrained import load_pretrained


@pytest.mark.parametrize("fine_tune", [2, 1, 0], ids=["both-stages", "only-head", "zero-shot-only"])
def test_search_apart_chooses_as_one_process_does(
    toy_dir: Path, tiny_config: PeaceConfig, tmp_path: Path, fine_tune: int
) -> None:
    ds = load_dataset(toy_dir)
    pre_c = [{"pretrain.lr": 0.001}, {"pretrain.lr": 0.02}]
    fin_c = [{"finetune.lr": 0.001}, {"finetune.lr": 0.01}][2 - fine_tune :]
    cfg = tiny_config.override(["pretrain.max_steps=20", "pretrain.eval_every=10"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker runs; other thread counts give other floats
    try:
        chosen, trail, cache = search(ds, cfg, ("PEACE",), False, lambda m: None, pre_c, fin_c)
    finally:
        torch.set_num_threads(threads)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        apart, trials, run = search_peace_apart(
            pool, ds, cfg, cfg.seed, (pre_c, fin_c, None), 1, lambda m: None, str(tmp_path)
        )

    def outcome(entries: list[dict]) -> list[tuple]:
        return [(e["model"], e["candidate"], e["criterion"], e["value"]) for e in entries]

    assert apart == chosen["PEACE"]
    assert outcome(trials) == outcome(trail)
    assert len(trials) == len(pre_c) + len(fin_c)
    # the chosen pre-training is on disk with the kept weights of the one-process search
    kept = load_pretrained(run, ds)
    for name, value in cache["PEACE"].model.state_dict().items():
        assert torch.equal(kept.model.state_dict()[name], value), name
    assert len(kept.states) == len(cache["PEACE"].states)


def test_choose_takes_the_first_best() -> None:
    trials = [{"value": 0.3}, {"value": 0.5}, {"value": 0.5}, {"value": 0.1}]
    assert choose(trials) == 1  # highest value, the earlier of equal ones
    assert choose(trials, [2.0, 1.0, 0.5, 0.5]) == 2  # lowest key, the earlier of equal ones
    assert choose([]) is None


def test_an_only_fine_tuning_candidate_is_not_fitted_twice(
    toy_dir: Path, tiny_config: PeaceConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one fine-tuning candidate (``--dev``, ``--quick``) there is nothing to choose
    between: the search fits nothing for it (the run's own fine-tuning is the same fit), keeps
    it, and logs it without a value."""
    import peace.eval.search as search_module

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an only candidate was fitted")

    monkeypatch.setattr(search_module, "finetune_trial", refuse)
    monkeypatch.setattr(search_module, "_valid_ndcg", refuse)
    ds = load_dataset(toy_dir)
    cfg = tiny_config.override(["pretrain.max_steps=10", "pretrain.eval_every=10"])
    only = {"finetune.lr": 0.01}
    chosen, trail, _ = search(
        ds, cfg, ("PEACE", "DeepFM"), False, lambda m: None, [{"pretrain.lr": 0.01}], [only]
    )
    assert chosen["PEACE"] == {"pretrain.lr": 0.01, **only} and chosen["DeepFM"] == only
    heads = [e for e in trail if e["criterion"] == "only candidate"]
    assert [(e["model"], e["value"]) for e in heads] == [
        ("PEACE (fine-tuning)", None),
        ("DeepFM", None),
    ]
    with pytest.raises(AssertionError, match="fitted"):  # two candidates are both fitted
        search(ds, cfg, ("DeepFM",), False, lambda m: None, [], [only, {"finetune.lr": 0.1}])
