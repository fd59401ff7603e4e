"""A folder or file to write that cannot be written: one line naming the option, the path and the
fix, exit code 2, before any work (no training, no import), and whatever was there untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import toy_tables
from typer.testing import CliRunner

from peace.cli import app as peace_app
from peace.cli.common import OutputError, writable_folder
from peace.data.contract import write_dataset


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("outputs")
    data = write_dataset(toy_tables(), root / "toy")
    blocker = root / "a-file"
    blocker.write_text("kept\n")
    report = tmp_path_factory.mktemp("report")  # what `peace report` reads, as a benchmark left it
    (report / "results.json").write_text("{}")
    (report / "config.toml").write_text("")
    return {
        "root": root,
        "data": data,
        "file": blocker,
        "elsewhere": tmp_path_factory.mktemp("b"),
        "report": report,
    }


def commands(p: dict[str, Path]) -> list[tuple[list[str], str, Path]]:
    """(arguments, the option named, the path named) for every command that writes a folder
    or a file, with a file where the folder would be or under the file's place."""
    data, file, root = str(p["data"]), p["file"], p["root"]
    nowhere = root / "no-run"
    return [
        (["pretrain", "--data", data, "--out", str(file)], "--out", file),
        (["pretrain", "--data", data, "--out", str(file / "run")], "--out", file / "run"),
        (["benchmark", "--data", data, "--out", str(file), "--quick"], "--out", file),
        (
            [
                "benchmark",
                "--data",
                data,
                "--out",
                str(p["elsewhere"]),
                "--pretrain-cache",
                str(file),
            ],
            "--pretrain-cache",
            file,
        ),
        (["quickstart", "--out", str(file)], "--out", file),
        (
            ["report", "--data", data, "--out", str(p["report"]), "--pretrain-cache", str(file)],
            "--pretrain-cache",
            file,
        ),
        (["data", "synth", "--out", str(file)], "--out", file),
        (
            ["data", "import", "movielens", "--movielens", str(nowhere), "--kg", str(nowhere)]
            + ["--out", str(file)],
            "--out",
            file,
        ),
        (
            ["data", "import", "recbole", "--atomic", str(nowhere), "--out", str(file)],
            "--out",
            file,
        ),
        (["export", "--run", str(nowhere), "--store", str(file)], "--store", file),
        (
            ["finetune", "--run", str(nowhere), "--store", str(file), "--domain", "t0"],
            "--store",
            file,
        ),
        (
            ["evaluate", "--data", data, "--run", str(nowhere), "--out", str(file / "x.json")],
            "--out",
            file / "x.json",
        ),
        (["evaluate", "--data", data, "--run", str(nowhere), "--out", str(root)], "--out", root),
    ]


def test_every_writing_command_refuses_an_unwritable_path_first(paths: dict[str, Path]) -> None:
    for args, option, named in commands(paths):
        result = CliRunner().invoke(peace_app, args)
        output = result.output.strip()
        assert result.exit_code == 2, (args, output[-2000:])
        assert output.startswith(f"error: {option} {named}"), (args, output)
        assert "Traceback" not in output and output.count("\n") == 0, (args, output)
        assert paths["file"].read_text() == "kept\n"
    # nothing was trained, imported or written beside the inputs
    assert sorted(p.name for p in paths["root"].iterdir()) == ["a-file", "toy"]


def test_writable_folder_creates_missing_parents_and_says_what_is_wrong(tmp_path: Path) -> None:
    made = writable_folder(tmp_path / "a" / "b", "--out")
    assert made.is_dir()
    (tmp_path / "f").write_text("")
    with pytest.raises(OutputError, match=r"--x .*/f: a file is there, not a folder"):
        writable_folder(tmp_path / "f", "--x")
    with pytest.raises(OutputError, match=r"cannot create the folder"):
        writable_folder(tmp_path / "f" / "sub", "--x")
