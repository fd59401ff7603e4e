"""`peace benchmark --seeds 1 --quick` on a tiny slice: every table, every file, in seconds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from peace.cli import app

SHARED = Path(os.environ.get("PEACE_DATASETS", Path(__file__).parents[3] / "shared" / "datasets"))


def test_quick_benchmark_writes_results_and_report(toy_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = CliRunner().invoke(app, [
        "benchmark", "--data", str(toy_dir), "--out", str(out), "--seeds", "1", "--quick",
        "--quiet", "--set", "model.dim=16", "--set", "model.n_interests=2",
    ])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "results.json").read_text())
    assert doc["seeds"] == [0]
    models = {r["model"] for r in doc["rows"]}
    assert models == {"PEACE", "PEACE w/o GL", "PEACE w/o CPL", "PEACE w/o PEA", "Popularity",
                      "DeepFM"}
    settings = {(r["model"], r["setting"]) for r in doc["rows"]}
    assert ("PEACE", "zero-shot") in settings and ("PEACE", "zero-shot-test") in settings
    assert {r["domain"] for r in doc["rows"]} == {"t1", "t2"}
    assert doc["chosen"]["PEACE"] and doc["chosen"]["DeepFM"]
    assert len(doc["search"]) == 3  # one candidate each: pre-training, PEACE head, DeepFM
    report = (out / "REPORT.md").read_text()
    assert "Normal setting" in report and "Zero-shot" in report
    assert (out / "figures" / "ablation_ndcg.png").is_file()


@pytest.mark.skipif(not (SHARED / "ml-1m" / "ratings.dat").is_file(),
                    reason="MovieLens-1M not found (set PEACE_DATASETS to the datasets folder)")
def test_movielens_import_counts(tmp_path: Path) -> None:
    from peace.data.dataset import load_dataset
    from peace.data.importers.movielens import import_movielens

    import_movielens(SHARED / "ml-1m", SHARED / "ml-1m-satori-kg", tmp_path / "ml")
    ds = load_dataset(tmp_path / "ml")
    stats = ds.summary().set_index("domain")
    assert set(stats.index[stats["role"] == "target"]) == {
        "Horror", "Crime", "War", "Children's", "Documentary", "Animation"}
    sources = stats[stats["role"] == "source"]
    targets = stats[stats["role"] == "target"]
    assert sources["items"].between(390, 774).all()
    assert sources["interactions"].between(140_000, 190_000).all()
    assert targets["items"].between(61, 159).all()
    assert targets["interactions"].between(6_000, 42_000).all()
