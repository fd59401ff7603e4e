"""Data-parallel pre-training: ``torchrun --nproc-per-node 2 -m peace pretrain`` on CPU follows
one process with the same global batch and seed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from peace.flows import distributed
from peace.nn.peace import PretrainBatch
from tests.conftest import TINY_OVERRIDES

SETS = [*TINY_OVERRIDES, "pretrain.epochs=1", "pretrain.eval_every=4", "seed=3"]


def _pretrain(cmd: list[str], data: Path, out: Path) -> list[dict]:
    args = [*cmd, "pretrain", "--data", str(data), "--out", str(out), "--quiet"]
    for s in SETS:
        args += ["--set", s]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((out / "log.json").read_text())


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is missing")
def test_two_processes_follow_one(toy_dir: Path, tmp_path: Path) -> None:
    one = _pretrain([sys.executable, "-m", "peace"], toy_dir, tmp_path / "one")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    two = _pretrain([*torchrun, "--nproc-per-node", "2", "-m", "peace"], toy_dir, tmp_path / "two")
    assert [e["step"] for e in one] == [e["step"] for e in two]
    assert len(one) >= 4
    # The first steps: the same batches, the same averaged gradient.
    for key in ("loss_et", "valid_loss"):
        assert two[0][key] == pytest.approx(one[0][key], rel=1e-3), key
    assert two[0]["loss"] == pytest.approx(one[0]["loss"], rel=0.01)
    # Later, Eq. 7 over each rank's share of the batch's entities makes the runs part slowly.
    for a, b in zip(one, two, strict=True):
        for key in ("loss_et", "valid_loss"):
            assert b[key] == pytest.approx(a[key], rel=0.02), (key, a, b)
    # Training moved the model: the test would not pass on two untrained copies.
    assert one[-1]["loss"] < 0.9 * one[0]["loss"]
    assert (tmp_path / "two" / "model.safetensors").is_file()


def test_shards_cover_the_batch() -> None:
    n = 7
    batch = PretrainBatch(
        tokens=torch.arange(n * 2).view(n, 2),
        mask=torch.ones(n, 2, dtype=torch.bool),
        targets=torch.arange(n * 3).view(n, 3),
        labels=torch.ones(n, 3),
        valid=torch.ones(n, 3, dtype=torch.bool),
        users=torch.arange(n),
    )
    parts = [distributed.shard(batch, distributed.Ranks(r, 3)) for r in range(3)]
    assert torch.equal(torch.cat([p.tokens for p in parts]), batch.tokens)
    assert torch.equal(torch.cat([p.users for p in parts]), batch.users)
    assert [len(p.targets) for p in parts] == [2, 2, 3]
    assert parts[0].items is None
