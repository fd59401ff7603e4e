"""Where PEACE trains: ``--device`` / ``PEACE_DEVICE`` for pre-training and the benchmark.

The CUDA cases run where a GPU is at hand and are skipped with a reason elsewhere; the rest
checks, on any machine, what the device choice changes and what it must not.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from peace.data.dataset import load_dataset
from peace.flows.pretrain import pretrain
from peace.nn.entity_encoder import EntityEncoder, EntityGraph
from peace.nn.peace import PretrainBatch
from peace.utils import resolve_device, to_device

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")


def test_resolve_device_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PEACE_DEVICE", raising=False)
    assert resolve_device(None) == torch.device("cpu")
    monkeypatch.setenv("PEACE_DEVICE", "cpu")
    assert resolve_device(None) == torch.device("cpu")
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("gpu0")
    with pytest.raises(ValueError, match="cpu or cuda only"):
        resolve_device("meta")


@NO_CUDA
def test_missing_cuda_is_a_clear_error(toy_dir: Path, tiny_config) -> None:
    with pytest.raises(ValueError, match="no CUDA device.*--device cpu"):
        resolve_device("cuda")
    ds = load_dataset(toy_dir)
    with pytest.raises(ValueError, match="no CUDA device"):
        pretrain(ds, tiny_config, show_progress=False, device="cuda")
    done = subprocess.run(
        [sys.executable, "-m", "peace", "benchmark", "--data", str(toy_dir), "--quick"]
        + ["--device", "cuda", "--out", str(toy_dir.parent / "report")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "--device" in done.stderr and "no CUDA device" in done.stderr
    assert not (toy_dir.parent / "report").exists()  # refused before anything ran


def test_entity_data_follows_the_module_but_stays_out_of_the_weights() -> None:
    enc = EntityEncoder(5, 2, dim=4, degree_buckets=3, unseen="zero")
    enc.set_unseen(np.array([True, False, False, False, True]))
    enc.set_degrees(np.array([0, 1, 2, 7, 30]))
    enc.set_features(None)
    names = set(enc.state_dict())
    assert not names & {"unseen", "degree_bucket", "features", "private"}
    moved = enc.to("meta")  # a device with no data: what is moved shows, what is left does not
    assert moved.unseen.device.type == "meta"
    assert moved.degree_bucket.device.type == "meta"
    assert moved.embedding.weight.device.type == "meta"


def test_graph_and_batches_move_as_a_whole() -> None:
    graph = EntityGraph(np.array([[0, 0, 1], [1, 1, 2]]), 3, 2)
    assert graph.to("cpu") is graph
    moved = graph.to("meta")
    assert moved is not graph and graph.edge_index.device.type == "cpu"
    assert {t.device.type for t in (moved.edge_index, moved.edge_type, moved.indptr)} == {"meta"}
    assert moved.num_entities == graph.num_entities
    batch = PretrainBatch(
        tokens=torch.zeros(2, 3, dtype=torch.long),
        mask=torch.ones(2, 3, dtype=torch.bool),
        targets=torch.zeros(2, 3, dtype=torch.long),
        labels=torch.ones(2, 3),
        valid=torch.ones(2, 3, dtype=torch.bool),
    )
    out = to_device(batch, torch.device("meta"))
    assert out.tokens.device.type == "meta" and out.valid.device.type == "meta"
    assert out.users is None and batch.tokens.device.type == "cpu"


def test_explicit_cpu_is_the_default(toy_dir: Path, tiny_config) -> None:
    ds = load_dataset(toy_dir)
    default = pretrain(ds, tiny_config, show_progress=False)
    explicit = pretrain(ds, tiny_config, show_progress=False, device="cpu")
    assert [e["loss"] for e in default.log] == [e["loss"] for e in explicit.log]
    assert [e["valid_ndcg"] for e in default.log] == [e["valid_ndcg"] for e in explicit.log]


@CUDA
@pytest.mark.parametrize("sampling", ["full", "sampled"])
def test_cuda_pretraining_follows_the_cpu(toy_dir: Path, tmp_path: Path, tiny_config, sampling):
    cfg = tiny_config.override([f"model.graph_sampling={sampling}"])
    ds = load_dataset(toy_dir)
    cpu = pretrain(ds, cfg, show_progress=False, device="cpu")
    gpu = pretrain(ds, cfg, out=tmp_path / "run", show_progress=False, device="cuda")
    # Same draws (made on the CPU), float sums in another order: close, not equal.
    assert [e["step"] for e in gpu.log] == [e["step"] for e in cpu.log]
    for a, b in zip(cpu.log, gpu.log, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=0.02)
    assert next(gpu.model.parameters()).device.type == "cpu"
    assert (tmp_path / "run" / "model.safetensors").is_file()
    resumed = pretrain(
        ds, cfg, out=tmp_path / "run", show_progress=False, device="cuda", resume=True
    )  # a finished run reads its GPU trainer state and stops
    assert len(resumed.log) == len(gpu.log)
