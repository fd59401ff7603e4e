"""`peace benchmark --seeds 1 --quick` on a tiny slice: every table, every file, in seconds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import peace.flows.pretrain_cache as pretrain_cache
from peace.baselines import FINE_TUNED, ZERO_SHOT
from peace.cli import app
from peace.data.dataset import load_dataset
from peace.eval.benchmark import ALL_MODELS
from peace.flows.pretrained import data_identity

SHARED = Path(os.environ.get("PEACE_DATASETS", Path(__file__).parents[3] / "shared" / "datasets"))


def _bench(toy_dir: Path, out: Path, *extra: str):
    return CliRunner().invoke(
        app,
        [
            "benchmark",
            "--data",
            str(toy_dir),
            "--out",
            str(out),
            "--seeds",
            "1",
            "--quick",
            "--quiet",
            "--set",
            "model.dim=16",
            "--set",
            "model.n_interests=2",
            *extra,
        ],
    )


def test_quick_benchmark_writes_results_and_report(toy_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = _bench(toy_dir, out)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "results.json").read_text())
    assert doc["seeds"] == [0]
    assert doc["data"] == data_identity(load_dataset(toy_dir))  # what --update compares
    models = {r["model"] for r in doc["rows"]}
    assert models == set(ALL_MODELS)
    settings = {(r["model"], r["setting"]) for r in doc["rows"]}
    for model in ("PEACE", "Entity mean", "Tiger"):
        assert (model, "zero-shot") in settings and (model, "zero-shot-test") in settings
    assert ("Entity mean", "normal") in settings
    for model in FINE_TUNED:
        assert {s for m, s in settings if m == model} == {"normal"}
    assert ("Tiger", "normal") not in settings
    assert {r["domain"] for r in doc["rows"]} == {"t1", "t2"}
    assert set(doc["chosen"]) == {"PEACE", "DeepFM", *FINE_TUNED, *ZERO_SHOT}
    # one candidate each: PEACE pre-training and head, DeepFM, each fine-tuned competitor's
    # pre-training and head, Tiger's pre-training
    assert len(doc["search"]) == 3 + 2 * len(FINE_TUNED) + len(ZERO_SHOT)
    report = (out / "REPORT.md").read_text()
    assert "Normal setting" in report and "Zero-shot" in report
    for model in ALL_MODELS:
        assert f"| {model} |" in report, model
    assert report.count("*Entity mean* is PEACE's own flow") == 2  # normal and zero-shot
    assert (out / "figures" / "ablation_ndcg.png").is_file()


@pytest.mark.skipif(
    not (SHARED / "ml-1m" / "ratings.dat").is_file(),
    reason="MovieLens-1M not found (set PEACE_DATASETS to the datasets folder)",
)
def test_movielens_import_counts(tmp_path: Path) -> None:
    from peace.data.dataset import load_dataset
    from peace.data.importers.movielens import import_movielens

    import_movielens(SHARED / "ml-1m", SHARED / "ml-1m-satori-kg", tmp_path / "ml")
    ds = load_dataset(tmp_path / "ml")
    stats = ds.summary().set_index("domain")
    assert set(stats.index[stats["role"] == "target"]) == {
        "Horror",
        "Crime",
        "War",
        "Children's",
        "Documentary",
        "Animation",
    }
    sources = stats[stats["role"] == "source"]
    targets = stats[stats["role"] == "target"]
    assert sources["items"].between(390, 774).all()
    assert sources["interactions"].between(140_000, 190_000).all()
    assert targets["items"].between(61, 159).all()
    assert targets["interactions"].between(6_000, 42_000).all()


def test_update_adds_models_and_keeps_the_others(toy_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    first = _bench(toy_dir, out, "--models", "PEACE,PEACE w/o CPL,Popularity")
    assert first.exit_code == 0, first.output
    before = json.loads((out / "results.json").read_text())
    assert (out / "embeddings.npz").is_file()
    parent = torch.get_num_threads()
    torch.set_num_threads(2)  # the parent's threads differ from the workers' (cores // jobs)
    try:
        second = _bench(
            toy_dir, out, "--models", "SASRec,ComiRec,DeepFM", "--update", "--jobs", "2"
        )
    finally:
        torch.set_num_threads(parent)
    assert second.exit_code == 0, second.output
    doc = json.loads((out / "results.json").read_text())
    models = {r["model"] for r in doc["rows"]}
    assert models == {"PEACE", "PEACE w/o CPL", "Popularity", "SASRec", "ComiRec", "DeepFM"}
    kept = [r for r in doc["rows"] if r["model"] in ("PEACE", "PEACE w/o CPL", "Popularity")]
    assert kept == before["rows"]
    # competitors: normal rows only, chosen by the same search budget as the others
    assert {r["setting"] for r in doc["rows"] if r["model"] == "SASRec"} == {"normal"}
    assert {"PEACE", "SASRec", "ComiRec", "DeepFM"} <= set(doc["chosen"])
    assert [r["models"] for r in doc["runs"]] == [
        ["PEACE", "PEACE w/o CPL", "Popularity"],
        ["SASRec", "ComiRec", "DeepFM"],
    ]
    assert doc["wall_seconds"] == pytest.approx(sum(r["wall_seconds"] for r in doc["runs"]))
    assert doc["jobs"]["processes"] == 2
    # the run records the threads its rows were computed with: the workers', not the parent's
    threads = doc["jobs"]["threads_per_process"]
    assert doc["runs"][-1]["environment"]["threads"] == threads
    report = (out / "REPORT.md").read_text()
    assert "SASRec" in report and "tsne" in report


def test_zero_shot_only_update_replaces_only_the_zero_shot_rows(
    toy_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    inner = ("--set", 'finetune.affinity="inner"')  # the head reads z_u . z_i, not the prior
    first = _bench(
        toy_dir, out, "--models", "PEACE,Entity prior", "--set", "eval.zero_shot_prior=0", *inner
    )
    assert first.exit_code == 0, first.output
    before = json.loads((out / "results.json").read_text())
    assert "prior(i)" not in (out / "REPORT.md").read_text()  # w = 0: the paper's score
    refused = _bench(
        toy_dir,
        out,
        "--models",
        "DeepFM",
        "--update",
        "--zero-shot-only",
        "--set",
        "eval.zero_shot_prior=0",
        *inner,
    )
    assert refused.exit_code != 0 and "list only PEACE variants" in refused.output
    update = ("--models", "PEACE", "--update", "--zero-shot-only")
    # a head that reads the zero-shot score (the preset's) makes the prior a normal-row key too
    stale = _bench(toy_dir, out, *update, "--set", "eval.zero_shot_prior=1.0")
    assert stale.exit_code != 0 and "eval.zero_shot_prior" in stale.output
    second = _bench(toy_dir, out, *update, "--set", "eval.zero_shot_prior=1.0", *inner)
    assert second.exit_code == 0, second.output
    doc = json.loads((out / "results.json").read_text())
    assert doc["config"]["eval"]["zero_shot_prior"] == 1.0

    def rows(d: dict, zero_shot: bool) -> list[dict]:
        return [
            r
            for r in d["rows"]
            if r["model"] != "PEACE" or r["setting"].startswith("zero-shot") == zero_shot
        ]

    assert rows(doc, False) == rows(before, False)  # normal rows and the reference: kept
    peace_zero = [r for r in doc["rows"] if r["model"] == "PEACE" and r not in before["rows"]]
    assert {r["setting"] for r in peace_zero} == {"zero-shot", "zero-shot-test"}
    assert doc["chosen"]["PEACE"] == before["chosen"]["PEACE"]  # pinned, fine-tuning kept
    assert set(doc["per_user"]["PEACE"]) == {"normal", "zero-shot-test"}
    assert doc["runs"][-1]["settings"] == ["zero-shot", "zero-shot-test"]
    report = (out / "REPORT.md").read_text()
    assert "zero-shot rows only" in report and "z_u . z_i + 1 * prior(i)" in report
    # A pre-training that does not repeat the recorded one (its curve differs) would put its
    # zero-shot rows beside normal rows of other weights: refused, the new rows kept aside.
    doc["curves"]["PEACE"][0]["valid_ndcg"] += 0.01
    for run in doc["runs"]:  # as if recorded on a CPU whose kernels differ from this one's
        run["environment"]["cpu_capability"] = "ANOTHER-ISA"
    (out / "results.json").write_text(json.dumps(doc))
    recorded = (out / "results.json").read_text()
    moved = _bench(toy_dir, out, *update, "--set", "eval.zero_shot_prior=1.0", *inner)
    assert moved.exit_code != 0
    said = " ".join(moved.output.split())
    assert "does not repeat the recorded one" in said
    assert "kernels ANOTHER-ISA" in said and "same kind of CPU" in said
    assert (out / "results.json").read_text() == recorded
    aside = json.loads((out / "partial" / "zero-shot-only" / "results.json").read_text())
    assert {r["setting"] for r in aside["rows"]} == {"zero-shot", "zero-shot-test"}


def test_update_refuses_another_configuration(toy_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert _bench(toy_dir, out, "--models", "Popularity").exit_code == 0
    result = _bench(toy_dir, out, "--models", "DeepFM", "--update", "--set", "model.dim=8")
    assert result.exit_code != 0
    assert "another configuration" in result.output and "model.dim" in result.output
    # Popularity fits nothing with [finetune]: its rows stay valid under another schedule.
    doc = json.loads((out / "results.json").read_text())
    here = doc["runs"][0]["environment"]
    doc["runs"][0]["environment"] = {**here, "cpu_capability": "ANOTHER-ISA"}
    doc["runs"][0]["models"] = ["Popularity", "DeepFM"]  # as if DeepFM had been recorded there
    (out / "results.json").write_text(json.dumps(doc))
    kept = _bench(toy_dir, out, "--models", "DeepFM", "--update", "--set", "finetune.lr=0.5")
    assert kept.exit_code == 0, kept.output
    said = " ".join(kept.output.split())
    assert "note: the replaced rows may not repeat here" in said and "ANOTHER-ISA" in said
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert {r["model"] for r in rows} == {"Popularity", "DeepFM"}
    missing = _bench(toy_dir, tmp_path / "nothing", "--models", "DeepFM", "--update")
    assert missing.exit_code != 0 and "run without --update first" in missing.output


def test_merge_brings_rows_run_elsewhere(toy_dir: Path, tmp_path: Path) -> None:
    main, other = tmp_path / "main", tmp_path / "other"
    assert _bench(toy_dir, main, "--models", "Popularity").exit_code == 0
    assert _bench(toy_dir, other, "--models", "DeepFM").exit_code == 0
    merged = _bench(toy_dir, main, "--merge", str(other))
    assert merged.exit_code == 0, merged.output
    doc = json.loads((main / "results.json").read_text())
    expected = json.loads((other / "results.json").read_text())["rows"]
    assert [r for r in doc["rows"] if r["model"] == "DeepFM"] == expected
    assert {r["model"] for r in doc["rows"]} == {"Popularity", "DeepFM"}
    assert [r["models"] for r in doc["runs"]] == [["Popularity"], ["DeepFM"]]
    assert "DeepFM" in (main / "REPORT.md").read_text()
    wrong = tmp_path / "wrong"
    assert _bench(toy_dir, wrong, "--models", "DeepFM", "--set", "finetune.lr=0.5").exit_code == 0
    refused = _bench(toy_dir, main, "--merge", str(wrong))
    assert refused.exit_code != 0 and "another configuration" in refused.output
    fresh = tmp_path / "fresh" / "report"  # merging into a folder that does not exist yet
    assert _bench(toy_dir, fresh, "--merge", str(main)).exit_code == 0
    assert {r["model"] for r in json.loads((fresh / "results.json").read_text())["rows"]} == {
        "Popularity",
        "DeepFM",
    }


def test_merge_of_several_folders_replaces_rows_run_under_an_older_configuration(
    toy_dir: Path, tmp_path: Path
) -> None:
    """Rows that this or a later --merge folder replaces need not match the new configuration;
    a kept row that does not match is still refused."""
    main, a, b = tmp_path / "main", tmp_path / "a", tmp_path / "b"
    old = ("--models", "Popularity,DeepFM", "--set", "model.dim=8")  # a key both read
    assert _bench(toy_dir, main, *old).exit_code == 0
    assert _bench(toy_dir, a, "--models", "DeepFM").exit_code == 0
    assert _bench(toy_dir, b, "--models", "Popularity").exit_code == 0
    alone = _bench(toy_dir, main, "--merge", str(a))  # would keep Popularity's old row
    assert alone.exit_code != 0 and "model.dim" in alone.output
    merged = _bench(toy_dir, main, "--merge", str(a), "--merge", str(b))
    assert merged.exit_code == 0, merged.output
    doc = json.loads((main / "results.json").read_text())
    expected = [r for f in (a, b) for r in json.loads((f / "results.json").read_text())["rows"]]
    key = lambda r: (r["model"], r["setting"], r["domain"], r["metric"])  # noqa: E731
    assert sorted(doc["rows"], key=key) == sorted(expected, key=key)
    assert doc["config"]["model"]["dim"] != 8


def test_a_stopped_parallel_run_keeps_its_finished_groups(
    toy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each group is written as it finishes; after a failure its folder merges like any other."""
    import peace.eval.benchmark as benchmark

    def stop(docs: list[dict]) -> dict:
        raise RuntimeError("stopped after the groups finished")

    monkeypatch.setattr(benchmark, "merge_documents", stop)
    out = tmp_path / "report"
    stopped = _bench(toy_dir, out, "--models", "Popularity,DeepFM", "--jobs", "2")
    assert stopped.exit_code != 0 and not (out / "results.json").exists()
    kept = sorted(p.name for p in (out / "partial").iterdir())
    assert kept == ["DeepFM", "Popularity"]
    monkeypatch.undo()
    merged = _bench(toy_dir, out, "--merge", str(out / "partial" / "DeepFM"))
    assert merged.exit_code == 0, merged.output
    doc = json.loads((out / "results.json").read_text())
    rows = json.loads((out / "partial" / "DeepFM" / "results.json").read_text())["rows"]
    assert doc["rows"] == rows and {r["model"] for r in rows} == {"DeepFM"}
    assert [r["models"] for r in doc["runs"]] == [["DeepFM"]] and doc["runs"][0]["command"]
    # A run that finishes leaves no partial folder behind.
    done = _bench(toy_dir, tmp_path / "done", "--models", "Popularity,DeepFM", "--jobs", "2")
    assert done.exit_code == 0, done.output
    assert not (tmp_path / "done" / "partial").exists()


def test_jobs_split_the_peace_variants_and_list_their_search_once(
    toy_dir: Path, tmp_path: Path
) -> None:
    from peace.eval.benchmark import model_groups

    variants = ("PEACE", "PEACE w/o GL", "PEACE w/o CPL", "PEACE w/o PEA", "Popularity")
    assert model_groups(variants) == [variants[:4], ("Popularity",)]
    assert model_groups(variants, 2) == [
        ("PEACE", "PEACE w/o CPL"),
        ("PEACE w/o GL", "PEACE w/o PEA"),
        ("Popularity",),
    ]
    split = _bench(toy_dir, tmp_path / "split", "--models", "PEACE,PEACE w/o GL", "--jobs", "2")
    assert split.exit_code == 0, split.output
    doc = json.loads((tmp_path / "split" / "results.json").read_text())
    assert {r["model"] for r in doc["rows"]} == {"PEACE", "PEACE w/o GL"}
    # PEACE was searched once, its candidates side by side, for both groups: each trial listed
    # once, with the values of a search in one process
    trials = [(e["model"], json.dumps(e["candidate"], sort_keys=True)) for e in doc["search"]]
    assert trials and len(trials) == len(set(trials))
    # a group of its own gives PEACE the rows it gets alone (there the search's pre-training is
    # reused from memory, here from the search's run folder)
    alone = _bench(toy_dir, tmp_path / "alone", "--models", "PEACE", "--jobs", "2")
    assert alone.exit_code == 0, alone.output
    single = json.loads((tmp_path / "alone" / "results.json").read_text())
    assert [r for r in doc["rows"] if r["model"] == "PEACE"] == single["rows"]
    assert doc["chosen"]["PEACE"] == single["chosen"]["PEACE"]
    assert doc["curves"]["PEACE"] == single["curves"]["PEACE"]

    def outcome(trials: list[dict]) -> list[tuple]:
        return [(e["model"], e["candidate"], e["criterion"], e["value"]) for e in trials]

    assert outcome(doc["search"]) == outcome(single["search"])


def test_report_rewrites_the_report_from_results_alone(toy_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert _bench(toy_dir, out, "--models", "Popularity,DeepFM").exit_code == 0
    written = (out / "REPORT.md").read_text()
    results = (out / "results.json").read_bytes()
    (out / "REPORT.md").unlink()
    again = CliRunner().invoke(app, ["report", "--data", str(toy_dir), "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert (out / "REPORT.md").read_text() == written
    assert (out / "results.json").read_bytes() == results
    missing = CliRunner().invoke(app, ["report", "--data", str(toy_dir), "--out", str(tmp_path)])
    assert missing.exit_code != 0 and "no results.json" in missing.output


def test_a_failed_group_keeps_the_others_and_later_runs_leave_their_folders(
    toy_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    # PCRec-D needs model.dim divisible by its 8 factors: its group fails, Popularity's does not.
    failed = _bench(
        toy_dir, out, "--models", "Popularity,PCRec-D", "--jobs", "2", "--set", "model.dim=12"
    )
    assert failed.exit_code != 0
    assert "PCRec-D: failed" in failed.output
    assert (out / "partial" / "Popularity" / "results.json").is_file()
    # A later run removes only the folders it wrote itself.
    later = _bench(toy_dir, out, "--models", "DeepFM", "--jobs", "2")
    assert later.exit_code == 0, later.output
    assert sorted(p.name for p in (out / "partial").iterdir()) == ["Popularity"]


def test_target_history_counts_each_test_users_training_rows(toy_dir: Path) -> None:
    from peace.config import PeaceConfig
    from peace.data.dataset import load_dataset
    from peace.eval.protocol import chosen_splits, target_history
    from peace.flows.finetune import ranking_task

    ds = load_dataset(toy_dir)
    cfg = PeaceConfig()
    history = target_history(ds, cfg)
    splits = chosen_splits(ds, cfg)
    assert sorted(history) == sorted(ds.domains[d] for d in splits)
    for d, split in splits.items():
        users = ranking_task(split.test).users
        counts = history[ds.domains[d]]
        assert len(counts) == len(users)
        train = split.train[split.train["label"] == 1]
        for u, n in zip(users, counts, strict=True):
            assert n == int((train["user"] == u).sum())
        assert any(counts) or len(train) == 0


# --pretrain-cache (peace.flows.pretrain_cache): two seeds of two PEACE variants and a competitor
CACHED = ("--seeds", "2", "--models", "PEACE,PEACE w/o CPL,SASRec")


def _rows(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())["rows"]


def test_kept_pretrainings_give_the_same_rows(toy_dir: Path, tmp_path: Path, monkeypatch) -> None:
    runs: list[str] = []
    plain = pretrain_cache.pretrain

    def counted(ds, cfg, out=None, **kwargs):
        runs.append(kwargs.get("architecture", "PEACE"))
        return plain(ds, cfg, out, **kwargs)

    monkeypatch.setattr(pretrain_cache, "pretrain", counted)
    cache = tmp_path / "cache"
    result = _bench(toy_dir, tmp_path / "plain", *CACHED)
    assert result.exit_code == 0, result.output
    # the searched candidates (seed 0) are reused as the runs of seed 0
    assert sorted(runs) == ["PEACE"] * 4 + ["SASRec"] * 2
    runs.clear()
    result = _bench(toy_dir, tmp_path / "cold", *CACHED, "--pretrain-cache", str(cache))
    assert result.exit_code == 0, result.output
    assert sorted(runs) == ["PEACE"] * 4 + ["SASRec"] * 2
    assert _rows(tmp_path / "cold") == _rows(tmp_path / "plain")
    assert len(list(cache.iterdir())) == 4  # PEACE's variants; a competitor is not kept
    runs.clear()
    result = _bench(toy_dir, tmp_path / "warm", *CACHED, "--pretrain-cache", str(cache))
    assert result.exit_code == 0, result.output
    assert runs == ["SASRec"] * 2
    assert _rows(tmp_path / "warm") == _rows(tmp_path / "plain")
    # what was loaded says so: the search's trial and the timings (seconds of loading)
    for folder, loaded in (("cold", False), ("warm", True)):
        doc = json.loads((tmp_path / folder / "results.json").read_text())
        (trial,) = [e for e in doc["search"] if e["model"] == "PEACE (pre-training)"]
        assert trial.get("loaded", False) is loaded
        steps = set(doc["timings"]["1"])
        assert ("PEACE w/o CPL pre-train (loaded)" in steps) is loaded
        assert ("PEACE w/o CPL pre-train" in steps) is not loaded
        assert "SASRec pre-train" in steps
    # a key that only the heads read: PEACE is not pre-trained again, the rows move
    runs.clear()
    result = _bench(
        toy_dir,
        tmp_path / "head",
        *CACHED,
        "--pretrain-cache",
        str(cache),
        "--set",
        "finetune.user_dropout=0.1",
    )
    assert result.exit_code == 0, result.output
    assert runs == ["SASRec"] * 2
    assert _rows(tmp_path / "head") != _rows(tmp_path / "plain")
    # the report's t-SNE vectors, when missing, come from the kept pre-trainings: the same ones
    cold = tmp_path / "cold"
    kept = dict(np.load(cold / "embeddings.npz"))
    written = (cold / "REPORT.md").read_text()
    (cold / "embeddings.npz").unlink()
    runs.clear()
    args = ["report", "--data", str(toy_dir), "--out", str(cold), "--pretrain-cache", str(cache)]
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert runs == []
    again_kept = dict(np.load(cold / "embeddings.npz"))
    assert kept.keys() == again_kept.keys()
    assert all(np.array_equal(kept[k], again_kept[k]) for k in kept)
    assert (cold / "REPORT.md").read_text() == written


def test_worker_processes_share_kept_pretrainings(toy_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    models = ("--models", "PEACE,PEACE w/o GL", "--jobs", "2")
    plain = _bench(toy_dir, tmp_path / "plain", *models)
    assert plain.exit_code == 0, plain.output
    cold = _bench(toy_dir, tmp_path / "cold", *models, "--pretrain-cache", str(cache))
    assert cold.exit_code == 0, cold.output
    # PEACE's search candidate (seed 0, kept as PEACE's run) and PEACE w/o GL's seed 0
    kept = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in cache.iterdir()}
    assert len(kept) == 2
    warm = _bench(toy_dir, tmp_path / "warm", *models, "--pretrain-cache", str(cache))
    assert warm.exit_code == 0, warm.output
    # loaded, not pre-trained again (that would write a new folder in place of the old)
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in cache.iterdir()} == kept
    assert _rows(tmp_path / "cold") == _rows(tmp_path / "plain") == _rows(tmp_path / "warm")


def test_settings_that_cannot_run_are_refused_before_any_work(
    toy_dir: Path, tmp_path: Path
) -> None:
    """No seeds, or a target domain the dataset does not have: exit 2 with one line, nothing
    pre-trained or written but the empty output folder."""
    out = tmp_path / "out"
    no_seeds = CliRunner().invoke(
        app, ["benchmark", "--data", str(toy_dir), "--out", str(out)] + ["--seeds", "0"]
    )
    assert no_seeds.exit_code == 2 and "--seeds" in no_seeds.output
    unknown = _bench(toy_dir, out, "--set", 'eval.domains=["t1", "nowhere"]')
    assert unknown.exit_code == 2, unknown.output
    assert unknown.output.startswith("error: eval.domains: ['nowhere'] are not target domains")
    assert "t1" in unknown.output and "Traceback" not in unknown.output
    assert list(out.iterdir()) == []
    quick = CliRunner().invoke(app, ["quickstart", "--out", str(tmp_path / "q"), "--seeds", "0"])
    assert quick.exit_code == 2 and not (tmp_path / "q").exists()
