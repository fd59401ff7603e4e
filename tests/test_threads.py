"""Compute threads: explicit settings win; otherwise the usable CPUs nobody else keeps busy."""

from __future__ import annotations

import pytest

from peace import utils


@pytest.fixture(autouse=True)
def _no_thread_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PEACE_THREADS", "OMP_NUM_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)


def test_explicit_settings_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert utils.compute_threads() == 3
    monkeypatch.setenv("PEACE_THREADS", "5")
    assert utils.compute_threads() == 5


def test_busy_cpus_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(utils, "usable_cpus", lambda: [0, 1, 2, 3])
    monkeypatch.setattr(utils, "busy_cpus", lambda cpus: 0)
    assert utils.compute_threads() == 4
    assert utils.compute_threads(processes=2) == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert utils.compute_threads() == 1
    monkeypatch.setattr(utils, "busy_cpus", lambda cpus: 1)
    assert utils.compute_threads(processes=1) == 3
    monkeypatch.setattr(utils, "busy_cpus", lambda cpus: 4)
    assert utils.compute_threads(processes=1) == 1  # never zero


def test_busy_cpus_reads_this_machine() -> None:
    cpus = utils.usable_cpus()
    assert cpus and 0 <= utils.busy_cpus(cpus, interval=0.01) <= len(cpus)
