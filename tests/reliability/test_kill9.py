"""kill -9 during pre-training and during an export: nothing is lost.

A subprocess pre-trains (or exports) and SIGKILLs itself at a chosen file operation; then a
resumed run ends bit-identical to an uninterrupted one, and the store keeps serving (and can roll
back to) every version it had.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_OVERRIDES, toy_tables
from safetensors.torch import load_file

from peace.config import PeaceConfig
from peace.data.contract import write_dataset
from peace.data.dataset import load_dataset
from peace.flows.offline_inference import export
from peace.flows.pretrain import pretrain
from peace.store import (
    VERSIONS,
    StoreVersion,
    current_version,
    list_versions,
    published_versions,
    set_current,
)

CONFIG = [*TINY_OVERRIDES, "pretrain.epochs=3"]

# Kills the process at the N-th os.replace / os.rename whose target is inside the folder argv[2]
# (before the call takes effect), or with N = "fK" at the K-th os.fsync (a file just written),
# then runs the flow named by argv[1].
KILLER = """
import os, signal, sys
import torch
torch.set_num_threads(1)
flow, folder, point, data = sys.argv[1], os.path.realpath(sys.argv[2]), sys.argv[3], sys.argv[4]
seen = {"n": 0}

def kill_at_nth():
    seen["n"] += 1
    if seen["n"] == int(point.lstrip("f")):
        os.kill(os.getpid(), signal.SIGKILL)

def hook(real):
    def wrapped(src, dst, *args, **kwargs):
        if os.path.realpath(str(dst)).startswith(folder):
            kill_at_nth()
        return real(src, dst, *args, **kwargs)
    return wrapped

def hook_fsync(real):
    def wrapped(fd):
        kill_at_nth()
        return real(fd)
    return wrapped

if point.startswith("f"):
    os.fsync = hook_fsync(os.fsync)
else:
    os.replace, os.rename = hook(os.replace), hook(os.rename)
from peace.config import PeaceConfig
from peace.data.dataset import load_dataset
ds = load_dataset(data)
if flow == "pretrain":
    from peace.flows.pretrain import pretrain
    pretrain(ds, PeaceConfig().override(sys.argv[5:]), out=folder, show_progress=False)
else:
    from peace.flows.offline_inference import export
    export(sys.argv[5], ds, folder)
sys.exit(3)  # the kill point was never reached
"""


def run_killed(flow: str, folder: Path, nth: int | str, data: Path, *extra: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, flow, str(folder), str(nth), str(data), *extra],
        env=env,
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The dataset and an uninterrupted run."""
    root = tmp_path_factory.mktemp("kill9")
    data = write_dataset(toy_tables(), root / "toy")
    pretrain(
        load_dataset(data), PeaceConfig().override(CONFIG), out=root / "run", show_progress=False
    )
    return data, root / "run"


# One epoch's commit replaces the manifest, then six files (config, last, trainer, log, model,
# meta); the first epoch's commit is calls 1-7, the second's 8-14.
PRETRAIN_KILLS = {
    "training, no commit yet": 1,
    "second epoch staged, manifest not yet replaced": 8,
    "manifest committed, no file moved": 9,
    "manifest committed, two files moved": 11,
    "third epoch, mid-commit": 17,
}


@pytest.mark.parametrize("point", list(PRETRAIN_KILLS), ids=list(PRETRAIN_KILLS))
def test_pretraining_killed_resumes_bit_identical(
    straight: tuple[Path, Path], tmp_path: Path, point: str
) -> None:
    data, reference = straight
    run = tmp_path / "run"
    run_killed("pretrain", run, PRETRAIN_KILLS[point], data, *CONFIG)
    ds = load_dataset(data)
    resumed = pretrain(
        ds, PeaceConfig().override(CONFIG), out=run, resume=True, show_progress=False
    )
    expected = [
        {k: v for k, v in e.items() if k != "seconds"}
        for e in json.loads((reference / "log.json").read_text())
    ]
    assert [{k: v for k, v in e.items() if k != "seconds"} for e in resumed.log] == expected
    for name in ("model.safetensors", "last.safetensors"):
        got, want = load_file(str(run / name)), load_file(str(reference / name))
        assert got.keys() == want.keys()
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)
    assert not (run / ".pending").exists()


# One export writes and fsyncs its Arrow files one by one in a temporary folder (fsync 1 is the
# first), then the manifest and every file again, renames the folder (rename 1) and replaces
# CURRENT (replace 2).
EXPORT_KILLS: dict[str, int | str] = {
    "first table written": "f1",
    "third table written": "f3",
    "manifest written": "f7",
    "files and folders fsynced, before the rename": 1,
    "renamed, CURRENT not yet replaced": 2,
}


@pytest.mark.parametrize("point", list(EXPORT_KILLS), ids=list(EXPORT_KILLS))
def test_export_killed_loses_nothing(
    straight: tuple[Path, Path], tmp_path: Path, point: str
) -> None:
    data, run = straight
    ds = load_dataset(data)
    store = tmp_path / "store"
    first = export(run, ds, store)
    second = export(run, ds, store, as_of=600.0)
    run_killed("export", store, EXPORT_KILLS[point], data, str(run))
    # The served version is untouched and every published version still verifies.
    assert current_version(store) == second
    for version in published_versions(store):
        StoreVersion.open(store, version)
    kept = {first, second}
    assert kept <= set(published_versions(store))
    extra = set(published_versions(store)) - kept
    assert len(extra) == (1 if EXPORT_KILLS[point] == 2 else 0)
    assert len([p for p in (store / VERSIONS).iterdir() if p.name.startswith(".tmp-")]) == (
        0 if EXPORT_KILLS[point] == 2 else 1
    )
    # Roll back and forth, then export again.
    set_current(store, first)
    assert current_version(store) == first
    for version in extra:
        set_current(store, version)  # a version renamed into place before the kill is whole
    third = export(run, ds, store)
    assert current_version(store) == third
    assert [v["version"] for v in list_versions(store)][-1] == third
