"""``peace benchmark --update``: add or replace models in an existing benchmark report.

A benchmark of many models is long; adding a model should not mean running the others again.
With ``--update`` the rows, search trail, chosen values and timings of the models *not* listed in
``--models`` are kept from ``OUT/results.json``, provided it was made from the same dataset, the
same seeds and the same configuration; the listed models are run and their rows added (or
replaced). Every run is recorded in ``runs`` (command, models, wall time, environment), and the
report's wall time is their sum; a run whose models have all been run again is dropped.

The entity vectors and prototypes of PEACE and PEACE w/o CPL (the t-SNE section of the report)
are kept in ``OUT/embeddings.npz``; when that file is missing they are rebuilt by pre-training the
two variants again with the recorded chosen values and the first seed.

With ``--zero-shot-only`` the listed PEACE variants are pre-trained again and only their zero-shot
rows are replaced: their normal rows, fine-tuning search and chosen values are kept, and their
pre-training uses the values chosen by the run that made those rows. A key that only the
zero-shot score reads (``eval.zero_shot_prior``) may then differ for the kept normal rows.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from peace.config import PeaceConfig
from peace.data.dataset import Dataset
from peace.models import FINE_TUNED, PEACE_VARIANTS

EMBEDDED = ("PEACE", "PEACE w/o CPL")

# The [model] keys that models other than PEACE and its variants read: the width d, the history
# length and the head's MLP. The other [model] keys shape PEACE's encoders alone, so a change in
# them leaves the competitors' and references' rows valid and they are kept.
SHARED_MODEL_KEYS = frozenset({"dim", "history_length", "mlp_hidden"})

# The [pretrain] keys that only PEACE's pre-training reads: the served-score and universal-encoding
# terms of Eq. 10, which the competitors pre-train without (peace.flows.pretrain), and the
# temperature and weight of Eq. 7's prototype loss, which their losses take and ignore (each has
# its own options).
PEACE_PRETRAIN_KEYS = frozenset(
    {
        "served_loss",
        "served_weight",
        "served_sample",
        "universal_weight",
        "enhanced_weight",
        "tau",
        "gamma",
    }
)

# The [finetune] keys of the Eq. 11 head, which PEACE and every fine-tuned competitor share
# (footnote 6: the same head on each model's vectors); DeepFM reads the other [finetune] keys
# (its training schedule); popularity, the zero-shot references and the zero-shot competitors
# read none.
HEAD_KEYS = frozenset(
    {"freeze_encoders", "encoder_lr_scale", "interaction_features", "user_dropout"}
)

# The [eval] keys that only PEACE's zero-shot score reads (its normal rows too where the head
# reads that score, finetune.affinity = "zero-shot", except the profile prior, which the head
# never reads: its DeepFM has the profile fields).
PEACE_ZERO_SHOT_KEYS = frozenset(
    {"zero_shot_prior", "zero_shot_prior_counts", "zero_shot_states", "zero_shot_profile_prior"}
)

# The [finetune] keys that only PEACE's head reads: a competitor's zero-shot score has no prior
# and no evaluated states, so its head reads z_u . z_i under either finetune.affinity; and its
# user vectors are its states with no parameters between (user_parts() is empty), so
# finetune.tune_user_mlp finds nothing to fine-tune.
PEACE_HEAD_KEYS = frozenset({"affinity", "tune_user_mlp"})

#: the settings whose rows ``--zero-shot-only`` replaces
ZERO_SHOT_SETTINGS = ("zero-shot", "zero-shot-test")


def reads(model: str, key: str, zero_shot: bool = True, affinity: str = "inner") -> bool:
    """Whether the rows of ``model`` depend on configuration key ``key`` ("finetune.lr");
    ``zero_shot=False``: its normal rows only; ``affinity``: the run's ``finetune.affinity``."""
    section, _, name = key.partition(".")
    variant = model in PEACE_VARIANTS
    if section == "eval" and name in PEACE_ZERO_SHOT_KEYS:
        head = name != "zero_shot_profile_prior" and (
            affinity == "zero-shot" or (affinity == "inner-prior" and name != "zero_shot_states")
        )
        return variant and (zero_shot or head)
    if section == "finetune" and name in PEACE_HEAD_KEYS:
        return variant
    if section == "model" and name not in SHARED_MODEL_KEYS:
        return variant
    if section == "pretrain" and name in PEACE_PRETRAIN_KEYS:
        return variant
    if section == "finetune":  # popularity and the zero-shot rows train nothing on the target
        return variant or model in FINE_TUNED or (model == "DeepFM" and name not in HEAD_KEYS)
    return True


class UpdateError(ValueError):
    """An existing report that cannot be extended by this run; the message says why."""


def _model_of(key: str, models: list[str]) -> str | None:
    """The longest model name that ``key`` (e.g. "PEACE w/o GL Horror") starts with."""
    hits = [m for m in models if key == m or key.startswith(m + " ")]
    return max(hits, key=len) if hits else None


def kept_document(
    path: Path,
    dataset: str,
    seeds: list[int],
    cfg: PeaceConfig,
    models: tuple[str, ...],
    zero_shot_only: bool = False,
    data: dict[str, str] | None = None,
) -> dict:
    """The part of the results document at ``path`` that belongs to models not in ``models``;
    with ``zero_shot_only``, also every row of ``models`` outside the zero-shot settings."""
    if not path.is_file():
        raise UpdateError(f"--update: {path} does not exist; run without --update first.")
    doc = json.loads(path.read_text())
    old_models = sorted({r["model"] for r in doc["rows"]})
    try:
        unlisted = [m for m in old_models if m not in models]
        check_document(doc, path, dataset, seeds, cfg, unlisted, data=data)
        if zero_shot_only:  # the listed models' normal rows are kept: they must fit too
            listed = [m for m in old_models if m in models]
            check_document(doc, path, dataset, seeds, cfg, listed, zero_shot=False, data=data)
    except UpdateError as exc:
        raise UpdateError(f"--update: {exc}") from None
    variants = [m for m in old_models if m in PEACE_VARIANTS]
    rerun = [m for m in variants if m in models]
    if rerun and len(rerun) != len(variants):
        raise UpdateError(
            f"--update: the PEACE variants share PEACE's search; run all of {variants} or none "
            f"(got {rerun})."
        )
    kept = [m for m in old_models if m not in models]
    # Models with rows kept: with zero_shot_only, the listed ones too (their normal rows).
    holders = old_models if zero_shot_only else kept

    def kept_row(row: dict) -> bool:
        return row["model"] in kept or (zero_shot_only and row["setting"] not in ZERO_SHOT_SETTINGS)

    timings = {
        seed: {k: v for k, v in t.items() if _model_of(k, old_models) in holders}
        for seed, t in (doc.get("timings") or {}).items()
    }
    runs = doc.get("runs") or [
        {
            "command": " && ".join(doc.get("commands") or []),
            "models": old_models,
            "wall_seconds": doc.get("wall_seconds"),
            "environment": doc.get("environment"),
        }
    ]
    # A run all of whose models are replaced made none of the kept rows: its time is not counted.
    runs = [r for r in runs if set(r.get("models") or old_models) & set(holders)]
    per_user = {
        m: v if m in kept else {s: u for s, u in v.items() if s not in ZERO_SHOT_SETTINGS}
        for m, v in (doc.get("per_user") or {}).items()
        if m in holders
    }
    search = [
        t
        for t in doc.get("search", [])
        if t["model"].split(" (")[0] in kept or (zero_shot_only and "(fine-tuning)" in t["model"])
    ]
    return {
        "rows": [r for r in doc["rows"] if kept_row(r)],
        "search": search,
        "chosen": {m: v for m, v in (doc.get("chosen") or {}).items() if m in holders},
        "timings": timings,
        "variants": {m: v for m, v in (doc.get("variants") or {}).items() if m in holders},
        "references": [m for m in doc.get("references", []) if m in kept],
        "per_user": {m: v for m, v in per_user.items() if v},
        "curves": {m: v for m, v in (doc.get("curves") or {}).items() if m in kept},
        "runs": runs,
        # --zero-shot-only pre-trains the listed models again and keeps their normal rows: the
        # recorded curves say whether it repeats the pre-training behind them
        "replaced_curves": {
            m: v for m, v in (doc.get("curves") or {}).items() if zero_shot_only and m in models
        },
    }


def moved_curves(recorded: dict[str, list[dict]], curves: dict[str, list[dict]]) -> list[str]:
    """The models whose first seed's pre-training curve in ``curves`` is not the one in
    ``recorded`` (each described by the first evaluation that differs); a model missing from
    either is not compared."""
    moved = []
    for name, old in recorded.items():
        new = curves.get(name)
        if not old or not new:
            continue
        for a, b in zip(old, new, strict=False):
            if a != b:
                moved.append(
                    f"{name} (step {b.get('step', '?'):g}: held-out NDCG@10 "
                    f"{a.get('valid_ndcg')} recorded, {b.get('valid_ndcg')} now)"
                )
                break
        else:
            if len(old) != len(new):
                moved.append(f"{name} ({len(old)} evaluations recorded, {len(new)} now)")
    return moved


def machine_difference(runs: list[dict], models: list[str], now: dict) -> str:
    """Sentences on how the runs that recorded ``models`` ran, where that may be why their rows
    do not repeat: another kind of CPU, or one whose kernels were not recorded, and the setting
    that runs the recorded kernels where this CPU has them too; another number of torch threads
    per process (``now["threads"]``: what this run's rows are computed with)."""
    then = [r.get("environment") or {} for r in runs if set(r.get("models") or []) & set(models)]
    return _kernel_difference(then, now) + _thread_difference(then, now)


def _thread_difference(then: list[dict], now: dict) -> str:
    recorded = sorted({int(e["threads"]) for e in then if e.get("threads")})
    here = now.get("threads")
    if not recorded or here is None or recorded == [here]:
        return ""
    counts = " and ".join(str(t) for t in recorded)
    said = (
        f" The recorded rows of these models were computed with {counts} torch thread(s) per "
        f"process, this run with {here}: sums split over another number of threads round "
        "differently."
    )
    if len(recorded) == 1:
        said += f" PEACE_THREADS={recorded[0]} (without --jobs) computes with {recorded[0]}."
    return said


def _kernel_difference(then: list[dict], now: dict) -> str:
    fields = ("cpu", "cpu_capability")
    kinds = {tuple(e.get(f, "not recorded") for f in fields) for e in then}
    here = tuple(now.get(f, "not recorded") for f in fields)
    if not kinds or kinds == {here}:
        return ""
    recorded = "; ".join(f"{c}, kernels {k}" for c, k in sorted(kinds))
    said = (
        f" The recorded rows of these models were made on {recorded}; this run is on "
        f"{here[0]}, kernels {here[1]}: the same seed gives the same weights only on the same "
        "kind of CPU."
    )
    # torch on an x86 CPU runs any kernel level up to its own (ATEN_CPU_CAPABILITY picks one)
    levels = ("DEFAULT", "AVX2", "AVX512")
    below = levels[: levels.index(here[1])] if here[1] in levels else ()
    runnable = {k for c, k in kinds if c == here[0] and k in below}
    if len(runnable) == 1:
        said += (
            " This CPU also runs the recorded kernels: run the command again with "
            f"ATEN_CPU_CAPABILITY={runnable.pop().lower()} set."
        )
    return said


def empty_document() -> dict:
    """What :func:`kept_document` returns for a report that does not exist yet."""
    return {
        "rows": [],
        "search": [],
        "chosen": {},
        "timings": {},
        "variants": {},
        "references": [],
        "per_user": {},
        "curves": {},
        "runs": [],
    }


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(f"{prefix}{key}: {x!r} there, {y!r} here")
    return out


def _with_defaults(config: dict, defaults: dict) -> dict:
    """``config`` with the keys it lacks taken from ``defaults`` (nested)."""
    out = dict(config)
    for key, value in defaults.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = _with_defaults(out[key], value)
    return out


def check_document(
    doc: dict,
    path: Path,
    dataset: str,
    seeds: list[int],
    cfg: PeaceConfig,
    models: list[str] | None = None,
    zero_shot: bool = True,
    data: dict[str, str] | None = None,
) -> None:
    """Raise :class:`UpdateError` unless ``doc`` is for this dataset, seeds and configuration.

    ``models``: the models whose rows are used (default: all); a key that none of them
    :func:`reads` may differ (``zero_shot=False``: only their normal rows are used).
    ``data``: the dataset's :func:`peace.flows.pretrained.data_identity`, compared with the
    document's when both are known (two cuts of one dataset may share a folder name).
    """
    if doc.get("dataset") != dataset:
        raise UpdateError(
            f"{path} is for dataset {doc.get('dataset')!r}, not {dataset!r}; "
            "pass the same --data or another --out."
        )
    recorded = doc.get("data")
    if data is not None and recorded is not None and recorded != data:
        raise UpdateError(
            f"{path} was made from other data of the same name ({recorded}, here {data}): "
            "another cut or import of it; pass the same --data or another --out."
        )
    if list(doc.get("seeds", [])) != list(seeds):
        raise UpdateError(
            f"{path} has seeds {doc.get('seeds')}, this run {seeds}; pass the same --seeds and seed."
        )
    current = json.loads(json.dumps(cfg.to_dict()))
    defaults = json.loads(json.dumps(PeaceConfig().to_dict()))
    # A key the document predates ran with that key's default: it is not a difference.
    diff = sorted(_differences(_with_defaults(doc.get("config") or {}, defaults), current))
    if models is not None:  # a difference reads "model.dim: 64 there, 32 here"
        affinity = cfg.finetune.affinity
        diff = [
            d for d in diff if any(reads(m, d.split(":")[0], zero_shot, affinity) for m in models)
        ]
    if diff:
        raise UpdateError(
            f"{path} was made with another configuration ({', '.join(diff[:5])}); "
            "pass the same --config/--set or another --out."
        )


def same_trial(a: dict, b: dict) -> bool:
    """Whether two search entries are one candidate tried twice with the same outcome (two
    merged runs that each searched PEACE for their variants): model, candidate, criterion and
    value alike; the seconds may differ."""
    return all(a.get(k) == b.get(k) for k in ("model", "candidate", "criterion", "value"))


def join_search(kept: list[dict], new: list[dict]) -> list[dict]:
    """``kept`` then the entries of ``new`` that no kept entry already lists (:func:`same_trial`);
    one whose value differs is listed beside it."""
    return kept + [e for e in new if not any(same_trial(e, k) for k in kept)]


def merge_update(previous: dict, new: dict, run: dict | list[dict]) -> dict:
    """The kept document plus a new document; ``run`` describes the run(s) that made it. A
    search entry already kept (:func:`same_trial`) is listed once; one whose value differs is
    listed beside it."""
    out = dict(new)
    out["rows"] = sorted(
        previous["rows"] + new["rows"],
        key=lambda r: (r["model"], r["setting"], r["domain"], r["metric"]),
    )
    out["search"] = join_search(previous["search"], new.get("search", []))
    old_chosen, new_chosen = previous["chosen"], new.get("chosen", {})
    # models in a fixed order (the kept ones, then the new ones), so that the same merge writes
    # the same file whatever the process's string hashing
    out["chosen"] = {
        m: {**old_chosen.get(m, {}), **new_chosen.get(m, {})}
        for m in dict.fromkeys([*old_chosen, *new_chosen])
    }
    old_users, new_users = previous.get("per_user", {}), new.get("per_user", {})
    out["per_user"] = {  # per model and setting: a zero-shot-only run keeps the normal ones
        m: {**old_users.get(m, {}), **new_users.get(m, {})}
        for m in dict.fromkeys([*old_users, *new_users])
    }
    out["curves"] = {**previous.get("curves", {}), **new.get("curves", {})}
    timings = {seed: dict(t) for seed, t in previous["timings"].items()}
    for seed, t in new.get("timings", {}).items():
        timings.setdefault(seed, {}).update(t)
    out["timings"] = timings
    out["variants"] = {**previous["variants"], **new.get("variants", {})}
    out["references"] = previous["references"] + [
        m for m in new.get("references", []) if m not in previous["references"]
    ]
    runs = run if isinstance(run, list) else [run]
    out["runs"] = previous["runs"] + runs
    out["commands"] = [r["command"] for r in out["runs"]]
    out["environment"] = runs[-1].get("environment")
    out["wall_seconds"] = round(sum(float(r.get("wall_seconds") or 0) for r in out["runs"]), 1)
    return out


def save_embeddings(out: Path, embeddings: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    if not embeddings:
        return
    arrays = {}
    for name, (entities, prototypes) in embeddings.items():
        arrays[f"{name}|entities"] = np.asarray(entities, dtype=np.float32)
        arrays[f"{name}|prototypes"] = np.asarray(prototypes, dtype=np.float32)
    np.savez_compressed(out / "embeddings.npz", **arrays)


def load_embeddings(out: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    path = out / "embeddings.npz"
    if not path.is_file():
        return {}
    with np.load(path) as fh:
        names = {k.split("|")[0] for k in fh.files}
        return {n: (fh[f"{n}|entities"], fh[f"{n}|prototypes"]) for n in names}


def embeddings_for_report(
    out: Path,
    embeddings: dict[str, tuple[np.ndarray, np.ndarray]],
    ds: Dataset,
    cfg: PeaceConfig,
    doc: dict,
    seed: int,
    pretrain_cache: Path | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """This run's embeddings, completed from ``embeddings.npz``, from the pre-trainings kept in
    ``pretrain_cache`` (:mod:`peace.flows.pretrain_cache`), or by pre-training again.

    A model pre-trained again runs with the torch thread count of the run that made its rows
    (:func:`recorded_threads`): on a CPU, sums split over another number of threads round
    differently, and the weights, hence the t-SNE section, would differ from the record's. The
    thread count is in the kept pre-trainings' key too, so the benchmark's own are found."""
    import torch

    from peace.eval.protocol import variant_config
    from peace.eval.search import apply_values
    from peace.flows.pretrain_cache import pretrain_or_load

    result = dict(embeddings)
    stored = load_embeddings(out)
    have_rows = {r["model"] for r in doc["rows"]}
    for name in EMBEDDED:
        if name in result or name not in have_rows:
            continue
        if name in stored:
            result[name] = stored[name]
            continue
        values = doc["chosen"].get("PEACE", {})
        vcfg = variant_config(dataclasses.replace(apply_values(cfg, values), seed=seed), name)
        threads = torch.get_num_threads()
        torch.set_num_threads(recorded_threads(doc, name) or threads)
        try:
            pre = pretrain_or_load(ds, vcfg, pretrain_cache)[0]
            result[name] = (
                pre.entity_table()[:-1].numpy(),
                pre.model.prototypes.weight.detach().numpy().copy(),
            )
        finally:
            torch.set_num_threads(threads)
    return result


def recorded_threads(doc: dict, model: str) -> int | None:
    """The torch threads of the last listed run that made ``model``'s rows (its environment in
    ``runs``), else of the document's own environment; None where neither says."""
    for run in reversed(doc.get("runs") or []):
        if model in run.get("models", []):
            return (run.get("environment") or {}).get("threads")
    return (doc.get("environment") or {}).get("threads")
