"""Damaged run checkpoints and store versions: one line naming the file, exit code 2, no
traceback; a damaged version is never made current."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import TINY_OVERRIDES, toy_tables
from typer.testing import CliRunner

from peace.cli import app as peace_app
from peace.config import PeaceConfig
from peace.data.contract import write_dataset
from peace.data.dataset import load_dataset
from peace.flows.checkpoints import CHECKSUMS
from peace.flows.offline_inference import export
from peace.flows.pretrain import pretrain
from peace.store import VERSIONS, current_version


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A dataset, a finished two-epoch run and a store with one version."""
    root = tmp_path_factory.mktemp("damaged")
    data = write_dataset(toy_tables(), root / "toy")
    ds = load_dataset(data)
    cfg = PeaceConfig().override([*TINY_OVERRIDES, "pretrain.epochs=2", "pretrain.max_steps=4"])
    pretrain(ds, cfg, out=root / "run", show_progress=False)
    export(root / "run", ds, root / "store")
    return data, root / "run", root / "store"


def flip(path: Path) -> None:
    """Eight bytes in the middle of the file change."""
    raw = bytearray(path.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 8] = bytes(b ^ 0xFF for b in raw[mid : mid + 8])
    path.write_bytes(bytes(raw))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 3])


def bad_header(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[8:40] = b"{" * 32
    path.write_bytes(bytes(raw))


def one_line_error(args: list[str], *words: str) -> str:
    result = CliRunner().invoke(peace_app, args)
    output = result.output.strip()
    assert result.exit_code == 2, output[-2000:]
    assert "Traceback" not in output and output.count("\n") == 0, output[-2000:]
    assert output.startswith("error:")
    for word in words:
        assert word in output, output
    return output


Damage = Callable[[Path], None]
# (file, damage, keep the checksum manifest, command, words of the message)
CASES: dict[str, tuple[str, Damage, bool, str, str]] = {
    "model flipped, export": ("model.safetensors", flip, True, "export", "checksum mismatch"),
    "model header, export": ("model.safetensors", bad_header, True, "export", "checksum mismatch"),
    "model header, no manifest": ("model.safetensors", bad_header, False, "export", "damaged"),
    "model truncated, no manifest": ("model.safetensors", truncate, False, "export", "damaged"),
    "meta truncated, no manifest": ("meta.json", truncate, False, "export", "damaged"),
    "config flipped, export": ("config.toml", flip, True, "export", "checksum mismatch"),
    "model flipped, warm start": ("model.safetensors", flip, True, "warm", "checksum mismatch"),
    "model header, warm start": ("model.safetensors", bad_header, False, "warm", "damaged"),
    "trainer flipped, resume": ("trainer.pt", flip, True, "resume", "checksum mismatch"),
    "trainer truncated, no manifest": ("trainer.pt", truncate, False, "resume", "damaged"),
    "last flipped, resume": ("last.safetensors", flip, True, "resume", "checksum mismatch"),
    "last truncated, no manifest": ("last.safetensors", truncate, False, "resume", "damaged"),
    "last header, no manifest": ("last.safetensors", bad_header, False, "resume", "damaged"),
    "log truncated, resume": ("log.json", truncate, True, "resume", "checksum mismatch"),
    "log truncated, no manifest": ("log.json", truncate, False, "resume", "damaged"),
    "manifest truncated, resume": (CHECKSUMS, truncate, True, "resume", "damaged"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_damaged_checkpoint_gives_one_line(
    made: tuple[Path, Path, Path], tmp_path: Path, case: str
) -> None:
    data, original, _ = made
    name, damage, manifest, command, words = CASES[case]
    run = tmp_path / "run"
    shutil.copytree(original, run)
    if not manifest:
        (run / CHECKSUMS).unlink()
    damage(run / name)
    args = {
        "export": [
            "export",
            "--run",
            str(run),
            "--store",
            str(tmp_path / "s"),
            "--data",
            str(data),
        ],
        "warm": ["pretrain", "--data", str(data), "--out", str(tmp_path / "new"), "--quiet"]
        + ["--config", str(original / "config.toml"), "--warm-start", str(run)],
        "resume": ["pretrain", "--data", str(data), "--out", str(run), "--resume", "--quiet"],
    }[command]
    one_line_error(args, f"{run / name}: ", words)
    assert not (tmp_path / "s" / VERSIONS).exists() or not any(
        (tmp_path / "s" / VERSIONS).iterdir()
    )


def test_checksums_cover_every_checkpoint_file(made: tuple[Path, Path, Path]) -> None:
    _, run, _ = made
    files = json.loads((run / CHECKSUMS).read_text())["files"]
    expected = ["config.toml", "last.safetensors", "log.json", "meta.json", "model.safetensors"]
    assert sorted(files) == sorted([*expected, "trainer.pt"])
    assert not (run / ".pending").exists()


def test_store_use_verifies_the_version(made: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, _, original = made
    store = tmp_path / "store"
    shutil.copytree(original, store)
    first = current_version(store)
    (store / "CURRENT").unlink()
    flip(store / VERSIONS / first / "users.arrow")
    one_line_error(
        ["store", "use", "--store", str(store), "--version", first], "users.arrow", "checksum"
    )
    assert current_version(store) is None


def test_store_use_refuses_an_unknown_domain(made: tuple[Path, Path, Path]) -> None:
    _, _, store = made
    one_line_error(
        ["store", "use", "--store", str(store), "--domain", "nope", "--zero-shot"],
        "unknown domain 'nope'",
        "'t1'",
    )
    one_line_error(
        ["store", "use", "--store", str(store), "--domain", "nope", "--version", "v1"],
        "unknown domain 'nope'",
    )
    result = CliRunner().invoke(
        peace_app, ["store", "use", "--store", str(store), "--domain", "t1", "--zero-shot"]
    )
    assert result.exit_code == 0, result.output


def test_serve_refuses_a_tampered_store_before_announcing(
    made: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the server started on a tampered store")

    monkeypatch.setattr(uvicorn, "run", never)
    _, _, original = made
    store = tmp_path / "store"
    shutil.copytree(original, store)
    flip(store / VERSIONS / str(current_version(store)) / "entities.arrow")
    output = one_line_error(["serve", "--store", str(store)], "entities.arrow", "checksum")
    assert "serving" not in output
