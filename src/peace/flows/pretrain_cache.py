"""Pre-training runs kept by what made them, so that a run that would repeat one loads it instead.

On the CPU a pre-training repeats itself exactly: the same dataset, configuration (seed
included), pre-training code, torch version, thread count and kernels (torch's CPU capability:
an AVX512 machine's default kernels round otherwise than AVX2 ones) give the same weights and
log. A change that only the heads or the zero-shot score read (a ``[finetune]`` key, the
zero-shot priors) therefore need not pre-train again: ``peace benchmark --pretrain-cache DIR``
keeps every pre-training in ``DIR/<model>-<key>/`` (a run folder, :mod:`peace.flows.pretrained`)
and loads it when the key comes round again. The key hashes everything the pre-training reads
(:func:`pretraining_key`); anything else in it would only cost a miss, never a wrong hit. A kept
run that fails its checksums is pre-trained again and replaced. PEACE and its variants are kept;
a competitor is pre-trained each time (its model is built from the pre-training's records, which
a run folder does not hold).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

import torch

import peace
from peace.config import PeaceConfig
from peace.data.dataset import Dataset
from peace.flows.checkpoints import CheckpointError
from peace.flows.pretrain import pretrain
from peace.flows.pretrained import Pretrained, data_identity, load_pretrained
from peace.utils import resolve_device

# The package's files that pre-training runs: the data, the networks (all of nn/, the heads of
# Eq. 11-12 included), the competitors and the pre-training flow. A change anywhere else (the
# fine-tuning flow, the rankers, evaluation, the service) keeps the key; so does a new key of
# config.py's [finetune], whose values are not in the key (the other sections' are).
PRETRAINING_CODE = (
    "models.py",
    "utils.py",
    "data",
    "nn",
    "baselines",
    "flows/pretrain.py",
    "flows/records.py",
    "flows/selection.py",
    "flows/pretrained.py",
    "flows/checkpoints.py",
    "flows/distributed.py",
)

# The [eval] keys that pre-training does not read: which targets are scored (its cut-off comes
# from every target domain's split, whichever eval.domains lists) and the zero-shot score's
# priors, read after it. The pre-training reads eval.split (its cut-off), eval.zero_shot_states
# (which states it keeps) and eval.zero_shot_scorer (its held-out ranking): those stay in the key.
NOT_PRETRAINING_EVAL_KEYS = (
    "domains",
    "zero_shot_prior",
    "zero_shot_prior_counts",
    "zero_shot_profile_prior",
)


def code_fingerprint() -> str:
    """Hash of the source of :data:`PRETRAINING_CODE`."""
    root = Path(peace.__file__).parent
    h = hashlib.sha256()
    for part in PRETRAINING_CODE:
        path = root / part
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            h.update(file.relative_to(root).as_posix().encode())
            h.update(b"\x1f")
            h.update(file.read_bytes())
            h.update(b"\x1e")
    return h.hexdigest()[:16]


def pretraining_key(ds: Dataset, cfg: PeaceConfig, architecture: str = "PEACE") -> str:
    """What a pre-training of ``architecture`` on ``ds`` with ``cfg`` depends on, hashed: the
    dataset's identity, the configuration less ``[finetune]`` and
    :data:`NOT_PRETRAINING_EVAL_KEYS`, the code, torch's version, thread count and CPU
    kernels, and the device (competitors train on the CPU)."""
    config = cfg.to_dict()
    config.pop("finetune")
    for key in NOT_PRETRAINING_EVAL_KEYS:
        config["eval"].pop(key)
    device = resolve_device(None) if architecture == "PEACE" else torch.device("cpu")
    what = {
        "architecture": architecture,
        "data": data_identity(ds),
        "config": config,
        "code": code_fingerprint(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "kernels": torch.backends.cpu.get_cpu_capability(),
        "device": device.type,
    }
    text = json.dumps(what, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def run_folder(cache: str | Path, ds: Dataset, cfg: PeaceConfig, architecture: str) -> Path:
    """The folder of ``cache`` that keeps this pre-training (it may not exist yet)."""
    name = "".join(c if c.isalnum() else "-" for c in architecture)
    return Path(cache) / f"{name}-{pretraining_key(ds, cfg, architecture)}"


def cached_pretrain(
    ds: Dataset,
    cfg: PeaceConfig,
    cache: str | Path,
    architecture: str = "PEACE",
    show_progress: bool = False,
) -> tuple[Pretrained, Path, bool]:
    """The pre-training of ``architecture`` with ``cfg``: loaded from ``cache`` when kept there,
    else run and kept. Returns (the model, its run folder, whether it was loaded). A loaded model
    carries ``cfg``, as a new one does, not the configuration of the run that kept it (which may
    differ in the keys that are not in the key).

    A new run is written to a folder of its own and renamed into place when finished, so an
    interrupted run leaves no entry, and two processes that run the same key keep one."""
    run = run_folder(cache, ds, cfg, architecture)
    if run.is_dir():
        try:
            return dataclasses.replace(load_pretrained(run, ds), config=cfg), run, True
        except CheckpointError:
            shutil.rmtree(run, ignore_errors=True)  # damaged: pre-train it again below
    run.parent.mkdir(parents=True, exist_ok=True)
    scratch = run.with_name(f".{run.name}.{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    pre = pretrain(ds, cfg, scratch, show_progress=show_progress, architecture=architecture)
    try:
        scratch.rename(run)
    except OSError:  # another process kept the same key first; its run is the same
        shutil.rmtree(scratch, ignore_errors=True)
    return pre, run, False


def pretrain_or_load(
    ds: Dataset,
    cfg: PeaceConfig,
    cache: str | Path | None,
    architecture: str = "PEACE",
    show_progress: bool = False,
    out: str | Path | None = None,
) -> tuple[Pretrained, Path | None, bool]:
    """:func:`cached_pretrain` with a cache (PEACE and its variants), else a plain pre-training
    (into ``out``, if given): (the model, its run folder or None, whether it was loaded)."""
    if cache is not None and architecture == "PEACE":
        return cached_pretrain(ds, cfg, cache, architecture, show_progress)
    pre = pretrain(ds, cfg, out, show_progress=show_progress, architecture=architecture)
    return pre, None if out is None else Path(out), False
