"""`peace quickstart` end to end on a tiny dataset, and determinism of the whole protocol."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import TINY_OVERRIDES
from typer.testing import CliRunner

from peace.cli import app
from peace.data.dataset import load_dataset
from peace.eval.protocol import run_protocol

TINY = [*TINY_OVERRIDES, "pretrain.epochs=1", "finetune.epochs=2"]


def test_quickstart_writes_metrics_in_schema(toy_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "qs"
    args = ["quickstart", "--out", str(out), "--data", str(toy_dir), "--quiet"]
    for item in TINY:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["dataset"] == str(toy_dir) and doc["seeds"] == [0]
    keys = {"model", "setting", "domain", "metric", "mean", "std", "values"}
    assert all(set(r) == keys for r in doc["rows"])
    assert all(r["values"] == [r["mean"]] for r in doc["rows"])  # one seed: its value is the mean
    got = {(r["model"], r["setting"], r["domain"]) for r in doc["rows"]}
    for domain in ("t1", "t2"):
        for setting in ("normal", "zero-shot", "zero-shot-test"):
            assert ("PEACE", setting, domain) in got
        assert ("DeepFM", "normal", domain) in got and ("Popularity", "normal", domain) in got
        for reference in ("Random", "Entity prior", "Profile prior", "Entity overlap"):
            assert (reference, "zero-shot", domain) in got
            assert (reference, "zero-shot-test", domain) in got
    metrics = {r["metric"] for r in doc["rows"]}
    assert metrics == {"hit@5", "hit@10", "ndcg@5", "ndcg@10"}
    assert all(0.0 <= r["mean"] <= 1.0 for r in doc["rows"])
    assert (out / "config.toml").is_file()
    assert "PEACE quickstart: t1" in result.output


def test_quickstart_reports_a_broken_dataset_clearly(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "quickstart",
            "--out",
            str(tmp_path / "o"),
            "--data",
            str(tmp_path / "missing"),
            "--quiet",
        ],
    )
    assert result.exit_code == 2
    assert "no such dataset folder" in result.output


def test_same_seed_same_metrics(toy_dir: Path, tiny_config) -> None:
    ds = load_dataset(toy_dir)
    a, _ = run_protocol(ds, tiny_config, [0], show_progress=False, log=lambda m: None)
    b, _ = run_protocol(ds, tiny_config, [0], show_progress=False, log=lambda m: None)
    c, _ = run_protocol(ds, tiny_config, [1], show_progress=False, log=lambda m: None)
    assert a == b
    assert a != c


def test_help_names_the_preset_a_command_runs_without_config() -> None:
    """`peace quickstart` and `peace benchmark` run their shipped presets when no --config is
    given; their help says so rather than the paper's A.3 values of `PeaceConfig()`."""
    for command in ("quickstart", "benchmark"):
        result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "250"})
        assert result.exit_code == 0, result.output
        assert f"peace/configs/{command}.toml" in result.output
        assert "A.3" not in result.output.split("--config", 1)[1].split("\n", 1)[0]
