"""Small shared helpers: seeding, compute threads, devices, atomic file writes, checksums,
progress bars."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import inspect
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch.optim import Adam

T = TypeVar("T")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator for explicit sampling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def deterministic_on_cpu(train: Callable[..., T]) -> Callable[..., T]:
    """Run a training function with torch's deterministic algorithms when it trains on the CPU.

    Some CPU kernels add into shared rows atomically across threads (the backward of indexing a
    tensor with repeated indices), so two runs of the same seed on two or more threads could
    differ; the deterministic algorithms sum in one fixed order, so a seed gives the same weights
    run after run on a given number of threads (one thread and two still round some sums
    differently, as other kernels split them over threads). The setting is restored afterwards;
    a GPU run (``train``'s ``device`` argument, None meaning ``PEACE_DEVICE``) is left as it is.
    A function without a ``device`` parameter trains on the CPU.
    """
    signature = inspect.signature(train)
    takes_device = "device" in signature.parameters

    @functools.wraps(train)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        if takes_device:
            device = signature.bind(*args, **kwargs).arguments.get("device")
            if resolve_device(device).type != "cpu":
                return train(*args, **kwargs)
        before = torch.are_deterministic_algorithms_enabled()
        warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            return train(*args, **kwargs)
        finally:
            torch.use_deterministic_algorithms(before, warn_only=warn_only)

    return wrapper


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Draw torch's random numbers inside from ``seed`` alone, then restore the global state:
    a module initialised inside does not depend on what ran before it in the process."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity mask, e.g. from taskset or a container)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def busy_cpus(cpus: list[int], interval: float = 0.05, threshold: float = 0.5) -> int:
    """How many of ``cpus`` other processes keep busy: CPUs more than ``threshold`` busy over
    ``interval`` seconds, read from /proc/stat (0 where that file is missing)."""

    def sample() -> dict[int, tuple[int, int]]:
        out = {}
        try:
            lines = Path("/proc/stat").read_text().splitlines()
        except OSError:
            return out
        for line in lines:
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit():
                values = [int(v) for v in fields]
                idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
                out[int(name[3:])] = (sum(values), idle)
        return out

    before = sample()
    if not before:
        return 0
    time.sleep(interval)
    after = sample()
    busy = 0
    for cpu in cpus:
        if cpu in before and cpu in after:
            total = after[cpu][0] - before[cpu][0]
            idle = after[cpu][1] - before[cpu][1]
            busy += total > 0 and (total - idle) / total > threshold
    return busy


def compute_threads(processes: int | None = None) -> int:
    """Compute threads for this process: ``PEACE_THREADS`` or ``OMP_NUM_THREADS`` when set, else
    the usable CPUs that no other process keeps busy, shared among ``processes`` (default: the
    local processes torchrun started). Threads that wait on a CPU another process holds make
    every parallel operation wait for them, which is far worse than using fewer threads."""
    for var in ("PEACE_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    cpus = usable_cpus()
    if processes is None:
        processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    free = len(cpus) - busy_cpus(cpus)
    return max(1, free // max(1, processes))


def adam(params: Iterable, lr: float, weight_decay: float = 0.0, fused: bool = False) -> Adam:
    """Adam as training uses it: ``fused`` (one kernel per tensor), or else the multi-tensor
    implementation, which gives the same values as torch's per-tensor default on a CPU (where
    that default is the slower per-tensor loop) and is already its default on a GPU."""
    if fused:
        return Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    return Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The context a training forward pass runs in: ``torch.autocast`` to bfloat16 for
    ``precision = "bf16"``, nothing for ``"fp32"``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise ValueError(f"precision {precision!r}: expected 'fp32' or 'bf16'.")


def resolve_device(name: str | torch.device | None) -> torch.device:
    """The torch device for ``name`` (``cpu``, ``cuda``, ``cuda:1``, ...); None reads
    ``PEACE_DEVICE`` (default ``cpu``). A device this process cannot use is an error that says
    what is available, not a failure deep inside the first step."""
    if name is None:
        name = os.environ.get("PEACE_DEVICE", "") or "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {name!r}: not a torch device; use cpu, cuda or cuda:N.") from exc
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"device {name!r}: peace trains on cpu or cuda only.")
    if not torch.cuda.is_available():
        raise ValueError(
            f"device {name!r}: no CUDA device is available to this process (torch "
            f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}); use --device cpu, "
            "or install a CUDA build of torch on a machine with a GPU."
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(f"device {name!r}: this process sees {count} CUDA device(s).")
    return device


def map_tensors(value: T, fn: Callable[[torch.Tensor], torch.Tensor]) -> T:
    """``fn`` applied to a tensor, or to every tensor field of a dataclass (a copy; the other
    fields kept); anything else, None included, is returned as it is."""
    if isinstance(value, torch.Tensor):
        return fn(value)  # type: ignore[return-value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        mapped = {
            f.name: fn(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if isinstance(getattr(value, f.name), torch.Tensor)
        }
        return dataclasses.replace(value, **mapped)  # type: ignore[return-value]
    return value


def to_device(value: T, device: torch.device) -> T:
    """``value`` (a tensor, or a dataclass of tensors: :func:`map_tensors`) on ``device``."""
    # Copies to a GPU may overlap the host's work; copies back must not (the host reads them).
    overlap = device.type == "cuda"
    return map_tensors(value, lambda t: t.to(device, non_blocking=overlap))


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path: str | Path) -> None:
    """Flush a directory entry (a rename or a new file in it) to disk, where the OS allows it."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def progress(
    iterable: Iterable[T], description: str, total: int | None = None, enabled: bool = True
) -> Iterable[T]:
    """A rich progress bar around ``iterable`` (silent when disabled or not a terminal)."""
    if not enabled:
        return iterable
    from rich.progress import track

    return track(iterable, description=description, total=total, transient=True)
