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
        'eval.domains=["a"]',
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


def test_key_reads_the_cpu_kernels(toy_dir: Path, tiny_config, monkeypatch) -> None:
    """Torch's AVX512 kernels round otherwise than its AVX2 ones (docs/experiments.md section
    168): a pre-training kept on one kind is not the one the other would run."""
    ds = load_dataset(toy_dir)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    avx2 = pretraining_key(ds, tiny_config)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert pretraining_key(ds, tiny_config) != avx2


def test_scored_domains_leave_the_pretraining_as_it_is(toy_dir: Path, tiny_config) -> None:
    """The key leaves out eval.domains because the pre-training does not read it: its cut-off
    comes from every target's split. Pre-trained with one target scored or all, the same run."""
    from peace.eval.protocol import chosen_splits
    from peace.flows.pretrain import pretrain

    ds = load_dataset(toy_dir)
    first = ds.domains[next(iter(chosen_splits(ds, tiny_config)))]
    one = tiny_config.override([f'eval.domains=["{first}"]'])
    assert len(chosen_splits(ds, one)) < len(chosen_splits(ds, tiny_config))
    a = pretrain(ds, tiny_config, show_progress=False)
    b = pretrain(ds, one, show_progress=False)
    timeless = [[{k: v for k, v in e.items() if k != "seconds"} for e in r.log] for r in (a, b)]
    assert a.cutoff == b.cutoff and timeless[0] == timeless[1]
    torch.testing.assert_close(a.entity_table(), b.entity_table(), rtol=0, atol=0)


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
