"""Kept pre-trainings (peace.flows.pretrain_cache): what the key reads, and loading them again.
The benchmark's rows with and without them: tests/eval/test_benchmark.py."""

from __future__ import annotations

from pathlib import Path

import torch

from peace.data.dataset import load_dataset
from peace.flows.pretrain_cache import cached_pretrain, pretraining_key, run_folder


def test_key_reads_what_pretraining_reads(toy_dir: Path, tiny_config) -> None:
    ds = load_dataset(toy_dir)
    key = pretraining_key(ds, tiny_config)
    assert pretraining_key(ds, tiny_config) == key
    for same in (
        "finetune.lr=0.05",
        "finetune.tune_user_mlp=false",
        "eval.zero_shot_prior=0.5",
        "eval.zero_shot_profile_prior=0.5",
        'eval.zero_shot_prior_counts="users"',
    ):
        assert pretraining_key(ds, tiny_config.override([same])) == key, same
    for other in (
        "seed=1",
        "pretrain.lr=0.005",
        "model.dim=8",
        'eval.zero_shot_states="evaluated"',
        "eval.split=[0.6, 0.2, 0.2]",
    ):
        assert pretraining_key(ds, tiny_config.override([other])) != key, other
    assert pretraining_key(ds, tiny_config, "SASRec") != key
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        assert pretraining_key(ds, tiny_config) != key
    finally:
        torch.set_num_threads(threads)


def test_second_call_loads_the_same_run(toy_dir: Path, tmp_path: Path, tiny_config) -> None:
    ds = load_dataset(toy_dir)
    cfg = tiny_config.override(['eval.zero_shot_states="evaluated"'])
    first, run, loaded = cached_pretrain(ds, cfg, tmp_path / "cache")
    assert not loaded and run == run_folder(tmp_path / "cache", ds, cfg, "PEACE")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [run.name]  # no scratch
    again, run2, loaded = cached_pretrain(ds, cfg.override(["finetune.lr=0.5"]), tmp_path / "cache")
    assert loaded and run2 == run
    assert again.config == cfg.override(["finetune.lr=0.5"])  # the caller's, as a new run's
    torch.testing.assert_close(again.entity_table(), first.entity_table(), rtol=0, atol=0)
    assert again.log == first.log
    assert len(again.states) == len(first.states) > 1
    for a, b in zip(again.states, first.states, strict=True):
        for name in b:
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
    _, run3, loaded = cached_pretrain(ds, cfg.override(["seed=1"]), tmp_path / "cache")
    assert not loaded and run3 != run


def test_a_damaged_entry_is_pretrained_again(toy_dir: Path, tmp_path: Path, tiny_config) -> None:
    ds = load_dataset(toy_dir)
    first, run, _ = cached_pretrain(ds, tiny_config, tmp_path / "cache")
    weights = run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    again, run2, loaded = cached_pretrain(ds, tiny_config, tmp_path / "cache")
    assert not loaded and run2 == run
    torch.testing.assert_close(again.entity_table(), first.entity_table(), rtol=0, atol=0)
    _, _, loaded = cached_pretrain(ds, tiny_config, tmp_path / "cache")
    assert loaded
