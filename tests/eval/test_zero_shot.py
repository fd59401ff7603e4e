"""``peace evaluate``: zero-shot scores of one pre-trained run, the benchmark's numbers."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import toy_tables
from typer.testing import CliRunner

from peace.cli import app
from peace.data.contract import write_dataset
from peace.data.dataset import load_dataset
from peace.eval.protocol import ZERO_SHOT_REFERENCES, aggregate, chosen_splits, run_seed
from peace.eval.zero_shot import against_difference, evaluate_run, pairs_summary, summary
from peace.flows.checkpoints import CheckpointError
from peace.flows.finetune import evaluate_per_user, ranking_task
from peace.flows.pretrain import pretrain
from peace.flows.pretrained import dataset_fingerprint, load_pretrained, source_items_fingerprint
from peace.flows.rankers import (
    RandomRanker,
    TargetDomain,
    ZeroShotRanker,
    source_entity_prior,
    zero_shot_profile,
)

REFERENCES = ZERO_SHOT_REFERENCES


@pytest.fixture
def run(toy_dir: Path, tiny_config, tmp_path: Path) -> tuple[Path, object]:
    cfg = tiny_config.override(['pretrain.served_loss="softmax"', "eval.zero_shot_prior=0.5"])
    pretrain(load_dataset(toy_dir), cfg, out=tmp_path / "run", show_progress=False)
    return tmp_path / "run", cfg


def test_the_scores_are_the_benchmarks(toy_dir: Path, run) -> None:
    folder, cfg = run
    ds = load_dataset(toy_dir)
    pre = load_pretrained(folder, ds)
    assert pre.source_domains == tuple(ds.domains[d] for d in ds.source_domains)
    doc = evaluate_run(ds, pre, (), [0.0, 0.5])
    assert doc["domains"] == [ds.domains[d] for d in ds.target_domains]
    assert doc["scorers"] == ["PEACE", "PEACE + 0.5 prior", *REFERENCES]
    # the benchmark's zero-shot rows of the same run: its PEACE weighs the prior by 0.5
    res, _ = run_seed(ds, cfg, ("PEACE", *REFERENCES), show_progress=False, pretrained=pre,
                      normal=False)  # fmt: skip
    bench = {
        (r["model"], r["setting"], r["domain"], r["metric"]): r["mean"] for r in aggregate([res])
    }
    mine = {(r["model"], r["setting"], r["domain"], r["metric"]): r["mean"] for r in doc["rows"]}
    # PEACE twice here, once there
    assert len(bench) == len(mine) - len(bench) // (1 + len(REFERENCES))
    for (model, setting, domain, metric), value in bench.items():
        name = "PEACE + 0.5 prior" if model == "PEACE" else model
        assert mine[(name, setting, domain, metric)] == pytest.approx(value, abs=1e-12)
    assert (
        mine[("PEACE", "zero-shot", "t1", "ndcg@10")]
        != mine[("PEACE + 0.5 prior", "zero-shot", "t1", "ndcg@10")]
    )
    # every other scorer is tested against the first, on the mean over the domains
    assert [t["scorer"] for t in doc["tests"]] == doc["scorers"][1:]
    assert all(0 < t["p_value"] <= 1 and t["against"] == "PEACE" for t in doc["tests"])
    rows = summary(doc)
    assert [r[0] for r in rows] == doc["scorers"] and rows[0][-1] == "-"
    assert len(rows[0]) == 1 + len(doc["domains"]) + 2


def test_a_domain_that_trained_the_run_is_refused(toy_dir: Path, run) -> None:
    folder, _ = run
    ds = load_dataset(toy_dir)
    pre = load_pretrained(folder, ds)
    other_cut = dataclasses.replace(pre, source_domains=("s1", "t1"))
    with pytest.raises(ValueError, match=r"\['t1'\] were source domains"):
        evaluate_run(ds, other_cut, ("t1", "t2"))
    evaluate_run(ds, other_cut, ("t2",), references=())  # t2 never trained it
    older = dataclasses.replace(pre, source_domains=None, source_items=None, cutoff=pre.cutoff - 1)
    with pytest.raises(ValueError, match="another cut of the data"):
        evaluate_run(ds, older)
    with pytest.raises(ValueError, match="distinct weights"):
        evaluate_run(ds, pre, (), [0.5, 0.5])


def test_the_command_prints_and_writes_the_scores(toy_dir: Path, run, tmp_path: Path) -> None:
    folder, _ = run
    out = tmp_path / "scores.json"
    args = ["evaluate", "--data", str(toy_dir), "--run", str(folder), "--domains", "t2"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--no-references"])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    # default weights: 0 and the run's eval.zero_shot_prior
    assert doc["domains"] == ["t2"] and doc["scorers"] == ["PEACE", "PEACE + 0.5 prior"]
    assert "PEACE + 0.5 prior" in result.output
    bad = CliRunner().invoke(app, [*args[:-1], "nowhere"])
    assert bad.exit_code == 2 and "not target domains" in bad.output


def test_the_validation_split_replaces_every_row(toy_dir: Path, run, tmp_path: Path) -> None:
    folder, _ = run
    ds = load_dataset(toy_dir)
    pre = load_pretrained(folder, ds)
    doc = evaluate_run(ds, pre, (), [0.5], references=("Random",), valid=True)
    every = evaluate_run(ds, pre, (), [0.5], references=("Random",))
    assert doc["settings"] == ["zero-shot-valid", "zero-shot-test"]
    mine = {(r["model"], r["setting"], r["domain"], r["metric"]): r["mean"] for r in doc["rows"]}
    rows = {(r["model"], r["setting"], r["domain"], r["metric"]): r["mean"] for r in every["rows"]}
    # the test split's rows and the test of Random against PEACE are those of the default
    test = {k: v for k, v in rows.items() if k[1] == "zero-shot-test"}
    assert test and all(mine[k] == v for k, v in test.items())
    assert doc["tests"] == every["tests"]
    assert {k[1] for k in mine} == {"zero-shot-valid", "zero-shot-test"}
    assert set(doc["per_user"]["PEACE + 0.5 prior"]) == {"zero-shot-valid", "zero-shot-test"}
    # the first column: each domain's validation split, ranked as the normal ranker's is
    cfg = pre.config
    prior = source_entity_prior(ds, pre.cutoff, cfg.eval.zero_shot_prior_counts)
    profile = zero_shot_profile(ds, cfg, pre.cutoff)
    moved = 0
    for d, split in chosen_splits(ds, cfg).items():
        target, name = TargetDomain(ds, d), ds.domains[d]
        task = ranking_task(split.valid, split.train)
        zero = ZeroShotRanker(pre, target, cfg.eval.zero_shot_scorer, 0.5, prior, profile=profile)
        for scorer, ranker in (
            ("PEACE + 0.5 prior", zero),
            ("Random", RandomRanker(target, cfg.seed)),
        ):
            value = evaluate_per_user(ranker, target, task, cfg.eval.ks, cfg.seed)["ndcg@10"]
            assert mine[(scorer, "zero-shot-valid", name, "ndcg@10")] == float(value.mean())
            kept = doc["per_user"][scorer]["zero-shot-valid"][name]
            assert kept == [round(float(v), 4) for v in value]
        key = ("PEACE + 0.5 prior", "zero-shot", name, "ndcg@10")
        moved += rows[key] != mine[("PEACE + 0.5 prior", "zero-shot-valid", name, "ndcg@10")]
    assert moved > 0
    # the command: --valid prints and writes valid / test; with --normal it is refused
    out = tmp_path / "valid.json"
    args = ["evaluate", "--data", str(toy_dir), "--run", str(folder), "--no-references"]
    result = CliRunner().invoke(app, [*args, "--valid", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["settings"] == ["zero-shot-valid", "zero-shot-test"]
    refused = CliRunner().invoke(app, [*args, "--valid", "--normal"])
    assert refused.exit_code == 2 and "--valid is for the zero-shot rankers" in refused.output


def test_a_run_is_tested_against_another(toy_dir: Path, run, tmp_path: Path) -> None:
    folder, cfg = run
    ds = load_dataset(toy_dir)
    other = tmp_path / "other"
    pretrain(ds, cfg.override(["seed=1"]), out=other, show_progress=False)
    pre, base = load_pretrained(folder, ds), load_pretrained(other, ds)
    doc = evaluate_run(ds, pre, (), [0.5, 0.0], references=(), against=base)
    against = "PEACE + 0.5 prior, against run"
    assert doc["scorers"] == ["PEACE + 0.5 prior", against, "PEACE"]
    # the other run's rows are its own scores with the first weight
    alone = evaluate_run(ds, base, (), [0.5], references=())
    mine = {(r["model"], r["setting"], r["domain"], r["metric"]): r["mean"] for r in doc["rows"]}
    for r in alone["rows"]:
        assert mine[(against, r["setting"], r["domain"], r["metric"])] == r["mean"]
    test = doc["tests"][0]
    assert test["scorer"] == against and test["against"] == "PEACE + 0.5 prior"
    per_user = doc["per_user"]
    expected = np.mean(
        [
            np.mean(np.asarray(per_user[against]["zero-shot-test"][d]))
            - np.mean(np.asarray(per_user["PEACE + 0.5 prior"]["zero-shot-test"][d]))
            for d in doc["domains"]
        ]
    )
    assert test["difference"] == pytest.approx(expected) and test["difference"] != 0.0
    same = evaluate_run(ds, pre, (), [0.5], references=(), against=pre)["tests"][0]
    assert same["difference"] == 0.0 and same["p_value"] == 1.0
    other_cut = dataclasses.replace(base, source_domains=("s1", "t1"))
    with pytest.raises(ValueError, match=r"\['t1'\] were source domains"):
        evaluate_run(ds, pre, ("t1",), references=(), against=other_cut)
    # the command prints this run minus the other and writes both
    out = tmp_path / "scores.json"
    args = ["evaluate", "--data", str(toy_dir), "--run", str(folder), "--against", str(other)]
    result = CliRunner().invoke(app, [*args, "--prior-weights", "0.5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert written["against"] == str(other) and written["scorers"][1] == against
    assert f"{-test['difference']:+.4f}" in " ".join(result.output.split())


def test_several_runs_are_each_tested_against_their_own(toy_dir: Path, run, tmp_path: Path):
    folder, cfg = run
    ds = load_dataset(toy_dir)
    others = [tmp_path / f"other{s}" for s in (1, 2)]
    for seed, path in zip((1, 2), others, strict=True):
        pretrain(ds, cfg.override([f"seed={seed}"]), out=path, show_progress=False)
    pre = load_pretrained(folder, ds)
    docs = [
        evaluate_run(ds, pre, (), [0.5], references=(), against=load_pretrained(p, ds))
        for p in others
    ]
    diffs = [against_difference(doc) for doc in docs]
    for doc, diff in zip(docs, diffs, strict=True):
        means = {}
        for r in doc["rows"]:
            if r["metric"] == "ndcg@10" and r["setting"] == "zero-shot":
                means.setdefault(r["model"], []).append(r["mean"])
        first, other = doc["scorers"][:2]
        assert diff["zero-shot"] == pytest.approx(np.mean(means[first]) - np.mean(means[other]))
    pooled = pairs_summary(docs)
    assert pooled["pairs"] == 2
    for setting in ("zero-shot", "zero-shot-test"):
        values = [d[setting] for d in diffs]
        assert pooled["difference"][setting] == pytest.approx(np.mean(values))
        assert pooled["ahead"][setting] == sum(v > 0 for v in values)
        # per domain: each pair's difference of the two scorers' rows, averaged over the pairs
        by_domain = pooled["domains"][setting]
        assert list(by_domain) == docs[0]["domains"]
        for domain, pooled_domain in by_domain.items():
            per_pair = []
            for doc in docs:
                rows = {
                    r["model"]: r["mean"]
                    for r in doc["rows"]
                    if (r["metric"], r["setting"], r["domain"]) == ("ndcg@10", setting, domain)
                }
                first, other = doc["scorers"][:2]
                per_pair.append(rows[first] - rows[other])
            assert pooled_domain["difference"] == pytest.approx(np.mean(per_pair))
            assert pooled_domain["ahead"] == sum(v > 0 for v in per_pair)
        assert np.mean([v["difference"] for v in by_domain.values()]) == pytest.approx(
            pooled["difference"][setting]
        )
    with pytest.raises(ValueError, match="no against run"):
        against_difference(evaluate_run(ds, pre, (), [0.5], references=()))
    # the command: one --against per --run, in order; the pooled line and JSON
    out = tmp_path / "pairs.json"
    both = ",".join(str(p) for p in others)
    args = ["evaluate", "--data", str(toy_dir), "--prior-weights", "0.5", "--no-references"]
    result = CliRunner().invoke(
        app, [*args, "--run", f"{folder},{folder}", "--against", both, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert written["summary"]["difference"] == pytest.approx(pooled["difference"])
    assert [p["against"] for p in written["pairs"]] == [str(p) for p in others]
    printed = " ".join(result.output.split())
    assert "mean of 2 pairs" in printed
    assert "each run minus its --against run" in printed and "ahead in" in printed
    for setting, by_domain in pooled["domains"].items():
        for domain, pooled_domain in by_domain.items():
            assert written["summary"]["domains"][setting][domain] == pytest.approx(pooled_domain)
    bad = CliRunner().invoke(
        app, [*args, "--run", f"{folder},{folder}", "--against", str(others[0])]
    )
    assert bad.exit_code == 2 and "one --against run per --run" in " ".join(bad.output.split())


def test_the_command_names_domains_that_are_not_targets(toy_dir: Path, run) -> None:
    folder, _ = run
    args = ["evaluate", "--data", str(toy_dir), "--run", str(folder), "--no-references"]
    result = CliRunner().invoke(app, [*args, "--domains", "t1,s1,nowhere"])
    printed = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "--domains: ['s1', 'nowhere'] are not target domains" in printed
    assert "(source domains, seen in pre-training: s1)" in printed and "choose from" in printed


def test_a_run_of_another_cut_with_the_same_source_names_is_refused(
    toy_dir: Path, run, tmp_path: Path
) -> None:
    """Two cuts of one dataset share ids and source names; a run whose source items hold the
    scored domain's items must not be scored there."""
    folder, cfg = run
    ds = load_dataset(toy_dir)
    pre = load_pretrained(folder, ds)
    assert pre.source_items == source_items_fingerprint(ds)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["source_items"] == pre.source_items
    # cut B: half of t2's items become items of the source s1
    tables = toy_tables()
    inter = tables["interactions"]
    moved = [f"t2_i{j}" for j in range(6)]
    inter.loc[inter["item"].isin(moved), "domain"] = "s1"
    other_ds = load_dataset(write_dataset(tables, tmp_path / "cut-b"))
    assert dataset_fingerprint(other_ds) == dataset_fingerprint(ds)
    assert [other_ds.domains[d] for d in other_ds.source_domains] == list(pre.source_domains)
    pretrain(other_ds, cfg, out=tmp_path / "run-b", show_progress=False)
    with pytest.raises(CheckpointError, match="other source items than this dataset's"):
        load_pretrained(tmp_path / "run-b", ds)  # the same ids: only the cut tells them apart
    # cut B's record (its sources, cut-off and source items) handed to evaluate_run directly
    cut_b = load_pretrained(tmp_path / "run-b", other_ds)
    cut_b = dataclasses.replace(cut_b, model=pre.model, graph=pre.graph, history=pre.history)
    with pytest.raises(ValueError, match="other source items than this dataset's"):
        evaluate_run(ds, cut_b, ("t2",), references=())
    with pytest.raises(ValueError, match="other source items than this dataset's"):
        evaluate_run(ds, pre, ("t2",), references=(), against=cut_b)
    # a run that recorded no source items is checked by its names, then by its cut-off
    unrecorded = dataclasses.replace(cut_b, source_items=None, cutoff=pre.cutoff)
    evaluate_run(ds, unrecorded, ("t2",), references=())
    with pytest.raises(ValueError, match="another cut of the data"):
        evaluate_run(ds, dataclasses.replace(unrecorded, cutoff=pre.cutoff - 1), ("t2",))


def test_the_normal_ranker_is_the_benchmarks(toy_dir: Path, run) -> None:
    """``peace evaluate --normal``: the run's fine-tuned ranker gives the benchmark's normal
    rows; against itself with the same head it ties exactly, and --set changes only its head."""
    from peace.eval.normal import evaluate_normal

    folder, cfg = run
    ds = load_dataset(toy_dir)
    pre = load_pretrained(folder, ds)
    doc = evaluate_normal(ds, pre, ("t1",), load_pretrained(folder, ds))
    assert doc["settings"] == ["normal-valid", "normal"]
    assert doc["scorers"] == ["PEACE", "PEACE, against run"]
    bench_cfg = cfg.override(['eval.domains=["t1"]'])
    res, _ = run_seed(ds, bench_cfg, ("PEACE",), show_progress=False, pretrained=pre)
    bench = {(r["setting"], r["metric"]): r["mean"] for r in aggregate([res])}
    mine = {
        (r["model"], r["setting"], r["metric"]): r["mean"]
        for r in doc["rows"]
        if r["domain"] == "t1"
    }
    for metric in ("hit@10", "ndcg@10"):
        assert mine[("PEACE", "normal", metric)] == pytest.approx(bench[("normal", metric)])
        assert mine[("PEACE, against run", "normal", metric)] == mine[("PEACE", "normal", metric)]
    assert doc["tests"][0]["difference"] == 0.0 and doc["tests"][0]["p_value"] == 1.0
    assert 0 < mine[("PEACE", "normal-valid", "ndcg@10")] <= 1
    # a head that cannot learn: the --run's ranker moves, the --against run's does not
    frozen = evaluate_normal(ds, pre, ("t1",), load_pretrained(folder, ds), ["finetune.lr=0.0"])
    moved = {
        (r["model"], r["metric"]): r["mean"] for r in frozen["rows"] if r["setting"] == "normal"
    }
    assert moved[("PEACE, against run", "ndcg@10")] == mine[("PEACE", "normal", "ndcg@10")]
    assert moved[("PEACE", "ndcg@10")] != mine[("PEACE", "normal", "ndcg@10")]
    assert summary(frozen)[1][-1].startswith(f"{frozen['tests'][0]['difference']:+.4f}")
    with pytest.raises(ValueError, match=r"only \[finetune\] and \[eval\] values"):
        evaluate_normal(ds, pre, ("t1",), overrides=["model.dim=8"])


def test_the_normal_command_prints_and_refuses(toy_dir: Path, run, tmp_path: Path) -> None:
    folder, _ = run
    base = ["evaluate", "--data", str(toy_dir), "--run", str(folder), "--domains", "t1"]
    out = tmp_path / "normal.json"
    args = [*base, "--normal", "--against", str(folder), "--set", "finetune.lr=0.0"]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "normal NDCG@10 (normal-valid / normal)" in result.output
    doc = json.loads(out.read_text())
    assert doc["set"] == ["finetune.lr=0.0"] and doc["against"] == str(folder)
    refused = CliRunner().invoke(app, [*base, "--set", "finetune.lr=0.0"])
    assert refused.exit_code == 2 and "pass it with --normal" in refused.output
    refused = CliRunner().invoke(app, [*base, "--normal", "--prior-weights", "1"])
    assert refused.exit_code == 2 and "--set eval.zero_shot_prior=W" in refused.output
