"""Data-parallel pre-training across processes, started by ``torchrun``.

``torchrun --nproc-per-node N -m peace pretrain ...`` starts N processes; each finds its rank in
the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``), joins
one process group (gloo on CPU; nccl with ``--device cuda``, one GPU per local rank) and
trains the same model on its own share of every global batch. Every rank draws the same global
batch with the same seeded generator and keeps the rows ``[r * B / N, (r + 1) * B / N)`` of it,
so with the same global batch size and seed the run follows a one-process run: gradients are
averaged across ranks by :class:`torch.nn.parallel.DistributedDataParallel` (equal to the
one-process gradient when the ranks' shares hold the same number of pairs). Rank 0 writes the run
folder.

In full-graph mode every rank encodes the whole entity graph; with ``model.graph_sampling =
"sampled"`` each rank samples the subgraph of its own share, and the ranks' generators then part
ways (same distribution, not the same draws as one process).

Several machines: the same command with torchrun's rendezvous flags, e.g.
``torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29400 -m peace
pretrain ...`` on each machine (see docs/performance.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from peace.nn.peace import PretrainBatch
from peace.utils import map_tensors


@dataclass(frozen=True)
class Ranks:
    """This process's place in the process group, and the device its collectives use."""

    rank: int
    world: int
    device: torch.device = torch.device("cpu")

    @property
    def writes(self) -> bool:
        """Rank 0 writes checkpoints and logs."""
        return self.rank == 0


def from_environment(device: torch.device | None = None) -> Ranks | None:
    """Join the process group torchrun describes; None when the process runs alone.

    Training on ``cuda`` uses nccl, each rank on the GPU of its local rank (``cuda:LOCAL_RANK``,
    whatever index ``device`` names); on the CPU, gloo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    device = torch.device("cpu") if device is None else device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        nccl = device.type == "cuda" and dist.is_nccl_available()
        dist.init_process_group(backend="nccl" if nccl else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size(), device)


def shard(batch: PretrainBatch, ranks: Ranks) -> PretrainBatch:
    """This rank's contiguous share of a global batch (every tensor field sliced on rows)."""
    n = batch.tokens.shape[0]
    lo, hi = ranks.rank * n // ranks.world, (ranks.rank + 1) * n // ranks.world
    return map_tensors(batch, lambda t: t[lo:hi])


class _Objective(nn.Module):
    """The training step's losses as a module call, so DistributedDataParallel can hook it."""

    def __init__(self, model: nn.Module, losses: Callable[..., dict[str, Tensor]]) -> None:
        super().__init__()
        self.model = model
        self._losses = losses

    def forward(self, *args: object) -> dict[str, Tensor]:
        return self._losses(*args)


def objective(
    model: nn.Module, losses: Callable[..., dict[str, Tensor]], ranks: Ranks | None
) -> Callable[..., dict[str, Tensor]]:
    """``losses`` as called by the training loop: plain in one process, through
    DistributedDataParallel (gradients averaged across ranks) in a process group."""
    if ranks is None:
        return losses
    # Parameters a step does not reach (e.g. the prototypes without Eq. 7) are allowed.
    ids = [ranks.device.index] if ranks.device.type == "cuda" else None
    return DistributedDataParallel(
        _Objective(model, losses), device_ids=ids, find_unused_parameters=True
    )


def mean_over_ranks(values: dict[str, float], ranks: Ranks | None) -> dict[str, float]:
    """Average logged numbers (e.g. running loss sums) across ranks."""
    if ranks is None or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=ranks.device)
    dist.all_reduce(t)
    return {k: float(v) / ranks.world for k, v in zip(keys, t.tolist(), strict=True)}
