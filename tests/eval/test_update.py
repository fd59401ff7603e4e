"""What `peace benchmark --update` keeps from an existing results document."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peace.config import PeaceConfig
from peace.eval.update import (
    HEAD_KEYS,
    SHARED_MODEL_KEYS,
    UpdateError,
    kept_document,
    machine_difference,
    merge_update,
)


def _row(model: str) -> dict:
    return {
        "model": model,
        "setting": "normal",
        "domain": "t1",
        "metric": "ndcg@10",
        "mean": 0.5,
        "std": 0.0,
        "values": [0.5],
    }


def _document(path: Path, cfg: PeaceConfig, extra: tuple[str, ...] = ()) -> None:
    """A results document of Popularity, DeepFM, Tiger and the models in ``extra``."""
    runs = [
        {"command": "a", "models": ["Popularity", "DeepFM"], "wall_seconds": 10.0},
        {"command": "b", "models": ["Tiger"], "wall_seconds": 5.0},
    ]
    doc = {
        "dataset": "toy",
        "seeds": [0],
        "rows": [_row("Popularity"), _row("DeepFM"), _row("Tiger"), *map(_row, extra)],
        "search": [{"model": "Tiger (pre-training)"}, {"model": "DeepFM"}],
        "chosen": {"Tiger": {"pretrain.lr": 0.005}, "DeepFM": {"finetune.lr": 0.01}},
        "timings": {"0": {"Tiger": 1.0, "DeepFM t1": 2.0}},
        "runs": runs,
        "config": json.loads(json.dumps(cfg.to_dict())),
    }
    path.write_text(json.dumps(doc))


def test_rerun_models_are_dropped_with_the_runs_that_made_only_them(tmp_path: Path) -> None:
    cfg = PeaceConfig()
    path = tmp_path / "results.json"
    _document(path, cfg)
    kept = kept_document(path, "toy", [0], cfg, ("Tiger",))
    assert {r["model"] for r in kept["rows"]} == {"Popularity", "DeepFM"}
    assert set(kept["chosen"]) == {"DeepFM"} and kept["search"] == [{"model": "DeepFM"}]
    assert kept["timings"] == {"0": {"DeepFM t1": 2.0}}
    assert [r["command"] for r in kept["runs"]] == ["a"]  # run "b" made only Tiger's rows
    new = {"rows": [_row("Tiger")], "chosen": {"Tiger": {}}, "timings": {}}
    merged = merge_update(kept, new, {"command": "c", "models": ["Tiger"], "wall_seconds": 7.0})
    assert merged["wall_seconds"] == 17.0
    assert merged["commands"] == ["a", "c"]
    # A run that still made some kept rows stays, with its full time.
    kept = kept_document(path, "toy", [0], cfg, ("DeepFM",))
    assert [r["command"] for r in kept["runs"]] == ["a", "b"]


def test_a_search_merged_twice_is_listed_once() -> None:
    """Two merged runs of PEACE variants each search PEACE: the same candidates with the same
    outcome are listed once (the first run's seconds), an outcome that differs beside it."""
    trial = {
        "model": "PEACE (pre-training)",
        "candidate": {"pretrain.lr": 0.005},
        "criterion": "held-out source NDCG@10",
        "value": 0.128,
        "seconds": 302.4,
    }
    empty = {"rows": [], "search": [], "chosen": {}, "timings": {}, "variants": {}}
    run = {"command": "c", "models": ["PEACE"], "wall_seconds": 1.0}
    start = {**empty, "references": [], "runs": []}
    first = merge_update(start, {**empty, "search": [trial]}, run)
    again = {**empty, "search": [{**trial, "seconds": 299.5}]}
    assert merge_update(first, again, run)["search"] == [trial]
    other = {**empty, "search": [{**trial, "value": 0.127}]}
    assert merge_update(first, other, run)["search"] == [trial, {**trial, "value": 0.127}]


def test_a_merge_lists_the_kept_models_then_the_new_ones() -> None:
    """The merged document's per-model entries keep one order, the kept models' then the new
    ones', not the order of a set, which string hashing changes from process to process: the same
    merge writes the same results.json."""
    kept_names = [f"model {k}" for k in range(12)]
    empty = {"rows": [], "search": [], "timings": {}, "variants": {}, "references": [], "runs": []}
    kept = {
        **empty,
        "chosen": {m: {} for m in kept_names},
        "per_user": {m: {"normal": {}} for m in kept_names},
    }
    new = {**empty, "chosen": {"new": {"finetune.lr": 0.01}}, "per_user": {"new": {"normal": {}}}}
    run = {"command": "c", "models": ["new"], "wall_seconds": 1.0}
    merged = merge_update(kept, new, run)
    assert list(merged["chosen"]) == [*kept_names, "new"]
    assert list(merged["per_user"]) == [*kept_names, "new"]


def test_update_refuses_other_seeds(tmp_path: Path) -> None:
    cfg = PeaceConfig()
    path = tmp_path / "results.json"
    _document(path, cfg)
    with pytest.raises(UpdateError, match="seeds"):
        kept_document(path, "toy", [0, 1], cfg, ("Tiger",))


def test_update_refuses_other_data_of_the_same_name(tmp_path: Path) -> None:
    """Two cuts of one dataset imported into folders of the same name: the names match, the
    recorded data identity does not."""
    cfg = PeaceConfig()
    path = tmp_path / "results.json"
    _document(path, cfg)
    here = {"fingerprint": "aaaa", "source_items": "bbbb"}
    kept = kept_document(path, "toy", [0], cfg, ("Tiger",), data=here)  # a document before it
    assert {r["model"] for r in kept["rows"]} == {"Popularity", "DeepFM"}
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "data": here}))
    assert kept_document(path, "toy", [0], cfg, ("Tiger",), data=here)["rows"] == kept["rows"]
    other_cut = {**here, "source_items": "cccc"}
    with pytest.raises(UpdateError, match="other data of the same name"):
        kept_document(path, "toy", [0], cfg, ("Tiger",), data=other_cut)


def test_update_reads_a_key_the_document_predates_as_its_default(tmp_path: Path) -> None:
    """A document written before a configuration key existed ran with that key's default."""
    cfg = PeaceConfig()
    path = tmp_path / "results.json"
    _document(path, cfg)
    doc = json.loads(path.read_text())
    del doc["config"]["model"]["gnn_residual"]
    path.write_text(json.dumps(doc))
    assert {r["model"] for r in kept_document(path, "toy", [0], cfg, ("Tiger",))["rows"]} == {
        "Popularity",
        "DeepFM",
    }
    changed = cfg.override(["finetune.lr=0.05"])
    with pytest.raises(UpdateError, match="finetune.lr"):
        kept_document(path, "toy", [0], changed, ("Tiger",))


def test_a_key_a_model_does_not_read_keeps_its_rows(tmp_path: Path) -> None:
    """[model] keys only PEACE reads, and the head's [finetune] keys (PEACE and the fine-tuned
    competitors), keep the rows of the models that do not read them; shared keys do not."""
    cfg = PeaceConfig()
    path = tmp_path / "results.json"
    _document(path, cfg)
    changed = cfg.override(
        ["model.gnn_residual=true", "model.unseen_entities=zero", "finetune.user_dropout=0.5"]
    )
    kept = kept_document(path, "toy", [0], changed, ("Tiger",))
    assert {r["model"] for r in kept["rows"]} == {"Popularity", "DeepFM"}
    with pytest.raises(UpdateError, match="model.dim"):
        kept_document(path, "toy", [0], cfg.override(["model.dim=32"]), ("Tiger",))
    with pytest.raises(UpdateError, match="finetune.epochs"):  # DeepFM trains with it
        kept_document(path, "toy", [0], cfg.override(["finetune.epochs=3"]), ("Tiger",))
    doc = json.loads(path.read_text())
    doc["rows"].append(_row("SASRec"))  # fine-tuned with the same head as PEACE
    path.write_text(json.dumps(doc))
    with pytest.raises(UpdateError, match="user_dropout"):
        kept_document(path, "toy", [0], changed, ("Tiger",))
    kept = kept_document(path, "toy", [0], cfg.override(["model.gnn_residual=true"]), ("Tiger",))
    assert {r["model"] for r in kept["rows"]} == {"Popularity", "DeepFM", "SASRec"}
    doc = json.loads(path.read_text())
    doc["rows"].append(_row("PEACE"))
    path.write_text(json.dumps(doc))
    with pytest.raises(UpdateError, match="gnn_residual"):  # PEACE's rows would be kept
        kept_document(path, "toy", [0], changed, ("Tiger",))


def test_competitors_read_only_the_shared_model_keys() -> None:
    """What SHARED_MODEL_KEYS promises, checked on the competitors' source."""
    import re

    import peace.baselines

    root = Path(peace.baselines.__file__).parent
    read = set()
    for source in root.glob("*.py"):
        read |= set(re.findall(r"\bmodel\.(\w+)", source.read_text()))
    assert read and read <= SHARED_MODEL_KEYS, read - SHARED_MODEL_KEYS


def test_only_the_head_reads_its_finetune_keys() -> None:
    """What HEAD_KEYS promises: they reach a model only through the Eq. 11 head's ranker."""
    import inspect
    import re

    import peace.baselines
    from peace.flows import rankers

    sources = [p.read_text() for p in Path(peace.baselines.__file__).parent.glob("*.py")]
    sources += [
        inspect.getsource(c)
        for name, c in vars(rankers).items()
        if inspect.isclass(c) and c.__module__ == rankers.__name__ and name != "PeaceRanker"
    ]
    read = set()
    for source in sources:
        read |= set(re.findall(r"\b(?:fc|finetune|cfg)\.(\w+)", source))
    assert read & HEAD_KEYS == set()
    assert set(re.findall(r"\bfc\.(\w+)", inspect.getsource(rankers.PeaceRanker))) & {
        "interaction_features",
        "user_dropout",
        "freeze_encoders",
    } == {"interaction_features", "user_dropout", "freeze_encoders"}


def test_per_user_values_and_curves_follow_their_models(tmp_path: Path) -> None:
    cfg = PeaceConfig()
    path = tmp_path / "results.json"
    _document(path, cfg)
    doc = json.loads(path.read_text())
    doc["per_user"] = {"Tiger": {"zero-shot-test": {"t1": [0.1]}}, "DeepFM": {"normal": {}}}
    doc["curves"] = {"Tiger": [{"step": 1, "valid_ndcg": 0.2}]}
    path.write_text(json.dumps(doc))
    kept = kept_document(path, "toy", [0], cfg, ("Tiger",))
    assert set(kept["per_user"]) == {"DeepFM"} and kept["curves"] == {}
    new = {"rows": [_row("Tiger")], "per_user": {"Tiger": {}}, "curves": {"Tiger": []}}
    merged = merge_update(kept, new, {"command": "c", "models": ["Tiger"], "wall_seconds": 1.0})
    assert set(merged["per_user"]) == {"DeepFM", "Tiger"} and set(merged["curves"]) == {"Tiger"}


def test_a_finetune_schedule_key_keeps_the_rows_of_models_that_train_nothing(
    tmp_path: Path,
) -> None:
    """Popularity and the zero-shot rows fit nothing with [finetune]; DeepFM and the fine-tuned
    competitors do, so their rows are not kept under another schedule."""
    cfg = PeaceConfig()
    path = tmp_path / "results.json"
    _document(path, cfg)
    changed = cfg.override(["finetune.patience_steps=100", "finetune.min_steps=800"])
    kept = kept_document(path, "toy", [0], changed, ("DeepFM",))
    assert {r["model"] for r in kept["rows"]} == {"Popularity", "Tiger"}
    with pytest.raises(UpdateError, match="patience_steps"):  # DeepFM's rows would be kept
        kept_document(path, "toy", [0], changed, ("Tiger",))
    doc = json.loads(path.read_text())
    doc["rows"] = [r for r in doc["rows"] if r["model"] != "DeepFM"] + [_row("SASRec")]
    path.write_text(json.dumps(doc))
    with pytest.raises(UpdateError, match="min_steps"):
        kept_document(path, "toy", [0], changed, ("Tiger",))


def test_peace_only_pretrain_keys_keep_the_competitors_rows(tmp_path: Path) -> None:
    """The served-score term of Eq. 10 shapes PEACE's pre-training alone."""
    from peace.eval.update import PEACE_PRETRAIN_KEYS, reads

    cfg = PeaceConfig()
    path = tmp_path / "results.json"
    _document(path, cfg, ("SASRec",))
    changed = cfg.override(
        ['pretrain.served_loss="softmax"', "pretrain.served_weight=0.5", "pretrain.gamma=2.0"]
    )
    kept = kept_document(path, "toy", [0], changed, ("Tiger",))
    assert {r["model"] for r in kept["rows"]} == {"Popularity", "DeepFM", "SASRec"}
    assert all(reads("PEACE w/o GL", f"pretrain.{k}") for k in PEACE_PRETRAIN_KEYS)
    with pytest.raises(UpdateError, match="pretrain.lr"):  # every pre-trained model reads it
        kept_document(path, "toy", [0], cfg.override(["pretrain.lr=0.5"]), ("Tiger",))


def test_the_heads_affinity_is_read_by_peace_alone(tmp_path: Path) -> None:
    """finetune.affinity changes PEACE's head only; with it, the zero-shot score's keys reach
    PEACE's normal rows too."""
    from peace.eval.update import reads

    assert reads("PEACE", "finetune.affinity") and not reads("SASRec", "finetune.affinity")
    assert not reads("DeepFM", "finetune.affinity")
    assert not reads("PEACE", "eval.zero_shot_prior", zero_shot=False)
    assert reads("PEACE", "eval.zero_shot_prior", zero_shot=False, affinity="zero-shot")
    assert not reads("SASRec", "eval.zero_shot_prior", zero_shot=False, affinity="zero-shot")
    # "inner-prior" reads the prior, not the states
    assert reads("PEACE", "eval.zero_shot_prior", zero_shot=False, affinity="inner-prior")
    assert not reads("PEACE", "eval.zero_shot_states", zero_shot=False, affinity="inner-prior")
    assert reads("PEACE", "eval.zero_shot_states", zero_shot=False, affinity="zero-shot")
    cfg = PeaceConfig()
    path = tmp_path / "results.json"
    _document(path, cfg, ("SASRec",))
    changed = cfg.override(['finetune.affinity="zero-shot"'])
    kept = kept_document(path, "toy", [0], changed, ("Tiger",))
    assert {r["model"] for r in kept["rows"]} == {"Popularity", "DeepFM", "SASRec"}


def test_zero_shot_only_keeps_the_variants_normal_rows(tmp_path: Path) -> None:
    """``--zero-shot-only``: the listed variants' zero-shot rows, search-free pre-training
    choices and per-user zero-shot values are replaced; their normal rows, fine-tuning search,
    chosen fine-tuning values and per-user normal values are kept, and a key only the
    zero-shot score reads (eval.zero_shot_prior) may differ."""
    cfg = PeaceConfig()
    path = tmp_path / "results.json"
    rows = [{**_row("PEACE"), "setting": s} for s in ("normal", "zero-shot", "zero-shot-test")] + [
        _row("DeepFM")
    ]
    doc = {
        "dataset": "toy",
        "seeds": [0],
        "rows": rows,
        "search": [{"model": "PEACE (pre-training)"}, {"model": "PEACE (fine-tuning)"}],
        "chosen": {"PEACE": {"pretrain.lr": 0.005, "finetune.lr": 0.002}},
        "timings": {"0": {"PEACE pre-train": 3.0, "PEACE t1": 4.0}},
        "per_user": {"PEACE": {"normal": {"t1": [0.5]}, "zero-shot-test": {"t1": [0.1]}}},
        "runs": [{"command": "a", "models": ["PEACE", "DeepFM"], "wall_seconds": 10.0}],
        "config": json.loads(json.dumps(cfg.to_dict())),
    }
    path.write_text(json.dumps(doc))
    changed = cfg.override(["eval.zero_shot_prior=0.5"])
    with pytest.raises(UpdateError, match="zero_shot_prior"):  # a full rerun reads it
        kept_document(path, "toy", [0], changed, ("DeepFM",))
    kept = kept_document(path, "toy", [0], changed, ("PEACE",), zero_shot_only=True)
    assert sorted((r["model"], r["setting"]) for r in kept["rows"]) == [
        ("DeepFM", "normal"),
        ("PEACE", "normal"),
    ]
    assert kept["search"] == [{"model": "PEACE (fine-tuning)"}]
    assert kept["per_user"] == {"PEACE": {"normal": {"t1": [0.5]}}}
    assert [r["command"] for r in kept["runs"]] == ["a"]  # it still made kept rows
    new = {
        "rows": [{**_row("PEACE"), "setting": "zero-shot-test", "mean": 0.2}],
        "chosen": {"PEACE": {"pretrain.lr": 0.005}},
        "per_user": {"PEACE": {"zero-shot-test": {"t1": [0.2]}}},
        "timings": {"0": {"PEACE pre-train": 2.0}},
    }
    merged = merge_update(kept, new, {"command": "b", "models": ["PEACE"], "wall_seconds": 5.0})
    assert merged["chosen"]["PEACE"] == {"pretrain.lr": 0.005, "finetune.lr": 0.002}
    assert merged["per_user"]["PEACE"] == {
        "normal": {"t1": [0.5]},
        "zero-shot-test": {"t1": [0.2]},
    }
    assert merged["timings"]["0"] == {"PEACE pre-train": 2.0, "PEACE t1": 4.0}
    assert {(r["setting"], r["mean"]) for r in merged["rows"] if r["model"] == "PEACE"} == {
        ("normal", 0.5),
        ("zero-shot-test", 0.2),
    }
    # Without zero_shot_only the changed key refuses the listed model's normal rows: it is not
    # listed-and-kept there, so only DeepFM is checked; the PEACE rows are all dropped.
    assert {r["model"] for r in kept_document(path, "toy", [0], changed, ("PEACE",))["rows"]} == {
        "DeepFM"
    }


def test_report_embeddings_are_pre_trained_with_the_recorded_threads(
    tmp_path: Path, monkeypatch
) -> None:
    """`peace report` without embeddings.npz pre-trains PEACE again: with the thread count of the
    run that made PEACE's rows, not the process's, and gives the process its own back."""
    import numpy as np
    import torch

    import peace.flows.pretrain_cache
    from peace.eval.update import embeddings_for_report, recorded_threads

    env = {"threads": 1}
    doc = {
        "rows": [_row("PEACE"), _row("Tiger")],
        "chosen": {"PEACE": {"pretrain.lr": 0.005}},
        "runs": [
            {"models": ["PEACE", "PEACE w/o GL"], "environment": env},
            {"models": ["Tiger"], "environment": {"threads": 3}},
        ],
        "environment": {"threads": 3},
    }
    assert recorded_threads(doc, "PEACE") == 1
    assert recorded_threads(doc, "SASRec") == 3
    assert recorded_threads({"rows": []}, "PEACE") is None

    seen = []

    class Fake:
        def __init__(self) -> None:
            self.model = torch.nn.Module()
            self.model.prototypes = torch.nn.Embedding(2, 4)

        def entity_table(self) -> torch.Tensor:
            return torch.zeros(3, 4)

    def fake_pretrain(ds, cfg, out=None, show_progress=True, architecture="PEACE"):
        seen.append((torch.get_num_threads(), cfg.pretrain.lr))
        return Fake()

    monkeypatch.setattr(peace.flows.pretrain_cache, "pretrain", fake_pretrain)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = embeddings_for_report(tmp_path, {}, None, PeaceConfig(), doc, 0)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen == [(1, 0.005)]
    assert set(out) == {"PEACE"} and np.asarray(out["PEACE"][0]).shape == (2, 4)


def test_entity_mean_reads_what_the_peace_variants_read() -> None:
    """Entity mean is a PEACE variant without the PEACE prefix: PEACE's own keys reach its rows
    (kept otherwise on --update), and it re-runs with the other variants."""
    from peace.eval.update import PEACE_PRETRAIN_KEYS, reads

    for key in ("model.use_graph", "model.n_prototypes", "finetune.affinity"):
        assert reads("Entity mean", key) and not reads("SASRec", key), key
    assert all(reads("Entity mean", f"pretrain.{k}") for k in PEACE_PRETRAIN_KEYS)
    assert reads("Entity mean", "eval.zero_shot_prior")
    assert not reads("Entity overlap", "eval.zero_shot_prior")


def test_a_curve_that_does_not_repeat_names_the_machines_behind_it() -> None:
    """Another kind of CPU (or one whose kernels were not recorded) is named as a likely cause;
    the same machine, or a run of other models only, says nothing."""
    here = {"cpu": "AMD EPYC", "cpu_capability": "AVX2"}
    runs = [
        {"models": ["PEACE", "DeepFM"], "environment": {"cpu": "AMD EPYC"}},
        {"models": ["SASRec"], "environment": {"cpu": "Intel Xeon", "cpu_capability": "AVX512"}},
    ]
    said = machine_difference(runs, ["PEACE"], here)
    assert "AMD EPYC, kernels not recorded" in said and "kernels AVX2" in said
    assert "Intel Xeon" not in said  # SASRec's run made no PEACE row
    assert "ATEN_CPU_CAPABILITY" not in said  # the recorded kernels are not known
    runs[0]["environment"] = dict(here)
    assert machine_difference(runs, ["PEACE"], here) == ""
    assert machine_difference(runs, ["Tiger"], here) == ""


def test_a_record_made_with_other_threads_names_their_number() -> None:
    """Rows computed with one torch thread, replaced by a run with two on the same kind of CPU:
    the message names the thread counts and PEACE_THREADS=1 (section 169's run took the second
    and did not repeat the first); the same count says nothing, two recorded counts no setting."""
    here = {"cpu": "AMD EPYC", "cpu_capability": "AVX2"}
    runs = [{"models": ["ComiRec"], "environment": {**here, "threads": 1}}]
    said = machine_difference(runs, ["ComiRec"], {**here, "threads": 2})
    assert "with 1 torch thread(s) per process, this run with 2" in said
    assert said.endswith("PEACE_THREADS=1 (without --jobs) computes with 1.")
    assert "kernels" not in said  # the same CPU and kernels
    assert machine_difference(runs, ["ComiRec"], {**here, "threads": 1}) == ""
    runs.append({"models": ["ComiRec"], "environment": {**here, "threads": 4}})
    both = machine_difference(runs, ["ComiRec"], {**here, "threads": 2})
    assert "1 and 4 torch thread(s)" in both and "PEACE_THREADS" not in both
    assert machine_difference(runs, ["SASRec"], {**here, "threads": 2}) == ""


def test_a_record_of_lower_kernels_names_the_setting_that_runs_them() -> None:
    """A record made with AVX2 kernels on a CPU of the same name as this AVX512 one: the
    message names ATEN_CPU_CAPABILITY=avx2 (docs/experiments.md section 168); kernels this CPU
    cannot run, or another CPU's, get no such advice."""
    runs = [{"models": ["PEACE"], "environment": {"cpu": "AMD EPYC", "cpu_capability": "AVX2"}}]
    said = machine_difference(runs, ["PEACE"], {"cpu": "AMD EPYC", "cpu_capability": "AVX512"})
    assert said.endswith("with ATEN_CPU_CAPABILITY=avx2 set.")
    higher = machine_difference(runs, ["PEACE"], {"cpu": "AMD EPYC", "cpu_capability": "DEFAULT"})
    assert "kernels DEFAULT" in higher and "ATEN_CPU_CAPABILITY" not in higher
    other = machine_difference(runs, ["PEACE"], {"cpu": "Intel Xeon", "cpu_capability": "AVX512"})
    assert "Intel Xeon" in other and "ATEN_CPU_CAPABILITY" not in other
