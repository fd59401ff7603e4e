"""``peace quickstart`` and ``peace benchmark``: the protocol of Sec. 5 in one command."""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import typer
from rich.table import Table

from peace.cli.common import (
    SET_OPTION,
    config_option,
    console,
    fail,
    load_config,
    open_dataset,
    output_file,
    output_folder,
)
from peace.config import PeaceConfig
from peace.data.dataset import Dataset
from peace.eval.protocol import (
    DEFAULT_MODELS,
    PEACE_VARIANTS,
    ZERO_SHOT_REFERENCES,
    chosen_splits,
    run_protocol,
)
from peace.eval.results import METRICS, environment, results_table, write_results


def print_tables(rows: list[dict], title: str, seeds: int | None = None) -> None:
    from rich.console import Console

    out = Console()
    for domain in sorted({r["domain"] for r in rows}):
        table = Table(title=f"{title}: {domain}")
        for col in ["model", "setting", *METRICS]:
            table.add_column(col, justify="left" if col in ("model", "setting") else "right")
        for line in results_table(rows, domain, seeds):
            table.add_row(*line)
        out.print(table)


def known_domains(ds: Dataset, cfg: PeaceConfig) -> None:
    """Refuse ``eval.domains`` that are not target domains of ``ds`` before any work."""
    try:
        chosen_splits(ds, cfg)
    except ValueError as exc:
        raise fail(str(exc)) from exc


def quickstart(
    out: Path = typer.Option(Path("quickstart"), "--out", help="Folder for data and results."),
    data: Path = typer.Option(None, "--data", help="Dataset folder (default: synthetic small)."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Number of seeds (0, 1, ...)."),
    config: Path = config_option("quickstart"),
    set_: list[str] = SET_OPTION,
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Pre-train, fine-tune every target domain, rank zero-shot, and compare with references."""
    t0 = time.perf_counter()
    cfg = load_config(config, set_, preset="quickstart")
    output_folder(out)
    if data is None:
        from peace.data.synthetic import generate

        data = out / "data"
        if not (data / "interactions.parquet").exists():
            console.print(f"writing the synthetic platform (small, seed {cfg.seed}) to {data}")
            generate(data, seed=cfg.seed, size="small")
    ds = open_dataset(data)
    known_domains(ds, cfg)
    cfg.save(out / "config.toml")
    seed_list = [cfg.seed + k for k in range(seeds)]
    rows, timings = run_protocol(
        ds,
        cfg,
        seed_list,
        DEFAULT_MODELS + ZERO_SHOT_REFERENCES,
        show_progress=not quiet,
        log=lambda m: console.print(m),
    )
    wall = time.perf_counter() - t0
    write_results(
        out / "metrics.json",
        str(data),
        seed_list,
        rows,
        config=cfg.to_dict(),
        wall_seconds=round(wall, 1),
        timings=timings,
        environment=environment(),
    )
    print_tables(rows, "PEACE quickstart")
    console.print(f"wrote {out / 'metrics.json'}; wall time {wall:.1f}s")


QUICK = [
    "model.history_length=20",
    "pretrain.epochs=1",
    "pretrain.max_steps=30",
    "finetune.epochs=2",
    "finetune.min_steps=0",
    "finetune.patience_steps=0",
]


DEV_MODELS = (
    "PEACE",
    "Entity mean",
    "Popularity",
    "DeepFM",
    "Random",
    "Entity prior",
    "Profile prior",
    "Entity overlap",
)


def benchmark(
    data: Path = typer.Option(
        ..., "--data", help="Dataset folder (e.g. from `peace data import`)."
    ),
    out: Path = typer.Option(Path("reports/ml-1m"), "--out", help="Report folder."),
    seeds: int = typer.Option(3, "--seeds", min=1, help="Number of seeds (base seed, +1, ...)."),
    models: str = typer.Option("all", "--models", help="Comma-separated model names, or all."),
    jobs: int = typer.Option(
        1,
        "--jobs",
        min=1,
        help="Worker processes; model groups run side by side (the PEACE variants in up to "
        "this many groups, each searching PEACE).",
    ),
    update: bool = typer.Option(
        False,
        "--update",
        help="Keep the other models' rows of OUT/results.json (same data, seeds, configuration) "
        "and add or replace the rows of --models.",
    ),
    merge: list[Path] = typer.Option(
        [],
        "--merge",
        help="Run nothing: merge DIR/results.json (other models, same data, seeds and "
        "configuration, e.g. run on another machine, or OUT/partial/NAME of a stopped --jobs "
        "run) into OUT and rewrite the report.",
    ),
    zero_shot_only: bool = typer.Option(
        False,
        "--zero-shot-only",
        help="Only the zero-shot rows of the pre-trained models (no fine-tuning). With --update "
        "and the PEACE variants, their normal rows and chosen values are kept and pre-training "
        "uses those values: a change to the zero-shot score (e.g. eval.zero_shot_prior) is "
        "recorded without fine-tuning again. Refused when the pre-training does not repeat the "
        "recorded curves (the kept normal rows would come from other weights).",
    ),
    quick: bool = typer.Option(False, "--quick", help="Smoke run: tiny budgets, one candidate."),
    dev: bool = typer.Option(
        False,
        "--dev",
        help="Dev preset: one seed, three target domains (eval.domains, or the first three), "
        "the first search candidate of each model, and by default PEACE with the references "
        "(Entity mean, Popularity, DeepFM, Random, Entity prior, Profile prior, Entity overlap). "
        "Minutes, to judge a change.",
    ),
    config: Path = config_option("benchmark"),
    set_: list[str] = SET_OPTION,
    device: str | None = typer.Option(
        None,
        "--device",
        help="Where PEACE and its ablations pre-train: cpu or cuda[:N] (default: PEACE_DEVICE, "
        "else cpu). Competitors and fine-tuning run on the CPU.",
    ),
    pretrain_cache: Path | None = typer.Option(
        None,
        "--pretrain-cache",
        help="Keep every pre-training of PEACE and its variants in this folder and load it "
        "instead of pre-training again when the data, the configuration less [finetune] and the "
        "zero-shot priors, the seed, the pre-training code, torch and its thread count are all the "
        "same: an update after a change that only the heads read fine-tunes only. Rows are the "
        "same either way; competitors are pre-trained each time.",
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Tables 2-3 and the ablation: every model, every target domain, several seeds."""
    import os
    import shlex
    import sys

    from peace.eval.benchmark import ALL_MODELS, run_benchmark, run_threads
    from peace.eval.search import (
        COMPETITOR_PRETRAIN_CANDIDATES,
        FINETUNE_CANDIDATES,
        PRETRAIN_CANDIDATES,
    )
    from peace.eval.update import (
        ZERO_SHOT_SETTINGS,
        UpdateError,
        check_document,
        embeddings_for_report,
        empty_document,
        kept_document,
        load_embeddings,
        machine_difference,
        merge_update,
        moved_curves,
        save_embeddings,
    )
    from peace.flows.pretrained import data_identity
    from peace.utils import resolve_device

    if device is not None:
        try:
            resolve_device(device)
        except ValueError as exc:
            raise fail(f"--device: {exc}") from exc
        os.environ["PEACE_DEVICE"] = device  # read by every pre-training, worker processes too
    t0 = time.perf_counter()
    cfg = load_config(config, (QUICK if quick else []) + list(set_ or []), preset="benchmark")
    if dev and models == "all":
        models = ",".join(DEV_MODELS)
    chosen_models = ALL_MODELS if models == "all" else tuple(m.strip() for m in models.split(","))
    unknown = [m for m in chosen_models if m not in ALL_MODELS]
    if unknown:
        raise fail(f"--models: unknown {unknown}; choose from {list(ALL_MODELS)} or all.")
    output_folder(out)
    if pretrain_cache is not None:
        output_folder(pretrain_cache, "--pretrain-cache")
    ds = open_dataset(data)
    identity = data_identity(ds)  # recorded in results.json; --update and --merge compare it
    if dev:
        seeds = 1
        if not cfg.eval.domains:
            first = tuple(ds.domains[d] for d in ds.target_domains[:3])
            cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, domains=first))
    known_domains(ds, cfg)
    seed_list = [cfg.seed + k for k in range(seeds)]
    if merge:
        import json

        out.mkdir(parents=True, exist_ok=True)
        doc = None
        try:
            others = [json.loads((folder / "results.json").read_text()) for folder in merge]
            incoming = [tuple(sorted({r["model"] for r in o["rows"]})) for o in others]
        except (OSError, ValueError, KeyError) as exc:
            raise fail(f"--merge: {exc}") from exc
        for k, (folder, other) in enumerate(zip(merge, others, strict=True)):
            path = folder / "results.json"
            names = incoming[k]
            # Rows that this or a later folder replaces are not kept, so they need not match.
            replaced = tuple(sorted({m for later in incoming[k:] for m in later}))
            try:
                check_document(
                    other, path, ds.root.name, seed_list, cfg, list(names), data=identity
                )
                previous = (
                    kept_document(
                        out / "results.json", ds.root.name, seed_list, cfg, replaced, data=identity
                    )
                    if (out / "results.json").is_file()
                    else empty_document()
                )
            except (OSError, UpdateError) as exc:
                raise fail(f"--merge: {exc}") from exc
            runs = other.get("runs") or [
                {
                    "command": " && ".join(other.get("commands") or []),
                    "models": list(names),
                    "wall_seconds": other.get("wall_seconds"),
                    "environment": other.get("environment"),
                }
            ]
            doc = merge_update(previous, other, runs)
            for key in ("dataset", "seeds", "graph", "config", "data"):
                doc.pop(key, None)
            embeddings = embeddings_for_report(
                out, load_embeddings(folder), ds, cfg, doc, seed_list[0], pretrain_cache
            )
            _write_benchmark(out, ds, cfg, seed_list, doc, embeddings)
        return
    previous = None
    recorded_curves: dict = {}
    pinned = None  # --update --zero-shot-only: pre-train with the kept rows' chosen values
    # where the new rows are computed: this process's threads, or each worker's with --jobs
    here = {**environment(), "threads": run_threads(jobs)}
    if update:
        if zero_shot_only and any(m not in PEACE_VARIANTS for m in chosen_models):
            raise fail(
                "--update --zero-shot-only re-runs the PEACE variants' zero-shot rows; list "
                "only PEACE variants in --models."
            )
        try:
            previous = kept_document(
                out / "results.json",
                ds.root.name,
                seed_list,
                cfg,
                chosen_models,
                zero_shot_only,
                data=identity,
            )
        except UpdateError as exc:
            raise fail(str(exc)) from exc
        recorded_curves = previous.pop("replaced_curves", {})
        elsewhere = machine_difference(previous["runs"], list(chosen_models), here)
        if elsewhere and not zero_shot_only:  # --zero-shot-only stops on it where it matters
            console.print(f"note: the replaced rows may not repeat here.{elsewhere}")
        if zero_shot_only:
            values = previous["chosen"].get("PEACE", {})
            pinned = [{k: v for k, v in values.items() if k.startswith("pretrain.")}]
    out.mkdir(parents=True, exist_ok=True)
    command = "peace " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    partial = out / "partial"
    kept_folders: list[Path] = []

    def write_aside(folder: Path, group_doc: dict) -> None:
        """``group_doc``'s rows (and embeddings) as a results document in ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        save_embeddings(folder, group_doc.get("embeddings") or {})
        kept = {k: v for k, v in group_doc.items() if k not in ("rows", "seeds", "embeddings")}
        write_results(
            folder / "results.json",
            ds.root.name,
            seed_list,
            group_doc["rows"],
            **kept,
            commands=[command],
            environment=environment(),
            config=cfg.to_dict(),
            data=identity,
        )

    def keep_group(group_doc: dict) -> None:
        """A finished group's rows, mergeable with --merge should the run stop later."""
        names = sorted({r["model"] for r in group_doc["rows"]}) or ["no-rows"]
        folder = partial / "_".join(n.replace(" ", "-").replace("/", "") for n in names)
        kept_folders.append(folder)
        write_aside(folder, group_doc)
        console.print(f"kept {', '.join(names)} in {folder} (peace benchmark --merge {folder})")

    doc = run_benchmark(
        ds,
        cfg,
        seed_list,
        chosen_models,
        show_progress=not quiet and jobs == 1,
        log=lambda m: console.print(m),
        pretrain_candidates=pinned or (PRETRAIN_CANDIDATES[:1] if quick or dev else None),
        finetune_candidates=FINETUNE_CANDIDATES[:1] if quick or dev else None,
        competitor_candidates=COMPETITOR_PRETRAIN_CANDIDATES[:1] if quick or dev else None,
        jobs=jobs,
        on_group=keep_group if jobs > 1 else None,
        zero_shot_only=zero_shot_only,
        pretrain_cache=pretrain_cache,
    )
    moved = moved_curves(recorded_curves, doc.get("curves") or {}) if zero_shot_only else []
    if moved:  # other weights than the kept normal rows': keep the new rows aside, merge nothing
        aside = partial / "zero-shot-only"
        write_aside(aside, doc)
        raise fail(
            "--zero-shot-only: the pre-training of "
            + "; ".join(moved)
            + f" does not repeat the recorded one, so its zero-shot rows would come from other "
            f"weights than the kept normal rows. {out / 'results.json'} is unchanged (the new "
            f"rows are in {aside}); run the same command without --zero-shot-only to record "
            "both settings from the same pre-training."
            + machine_difference(previous["runs"], list(chosen_models), here)
        )
    embeddings = doc.pop("embeddings")
    doc.pop("seeds")
    env = dict(here)  # with --jobs, the worker processes' threads, as the rows were computed
    run_entry = {
        "command": command,
        "models": list(chosen_models),
        "settings": list(ZERO_SHOT_SETTINGS) if zero_shot_only else "all",
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "environment": env,
    }
    if previous is not None:
        doc = merge_update(previous, doc, run_entry)
        embeddings = embeddings_for_report(
            out, embeddings, ds, cfg, doc, seed_list[0], pretrain_cache
        )
    else:
        doc["runs"] = [run_entry]
        doc["commands"] = [command]
        doc["environment"] = env
    _write_benchmark(out, ds, cfg, seed_list, doc, embeddings)
    for folder in kept_folders:  # their rows are in results.json now; others' folders stay
        shutil.rmtree(folder, ignore_errors=True)
    if partial.is_dir() and not any(partial.iterdir()):
        partial.rmdir()


def _write_benchmark(out: Path, ds, cfg, seed_list: list[int], doc: dict, embeddings: dict) -> None:
    """results.json, config.toml, embeddings.npz and REPORT.md of a benchmark document."""
    from peace.eval.benchmark import data_statistics
    from peace.eval.protocol import target_history
    from peace.eval.report import write_report
    from peace.eval.update import save_embeddings
    from peace.flows.pretrained import data_identity

    save_embeddings(out, embeddings)
    statistics, graph = data_statistics(ds)
    doc.pop("data", None)
    written = write_results(
        out / "results.json",
        ds.root.name,
        seed_list,
        doc.pop("rows"),
        **doc,
        graph=graph,
        config=cfg.to_dict(),
        data=data_identity(ds),
    )
    cfg.save(out / "config.toml")
    history = target_history(ds, cfg)
    report = write_report(out, written, statistics, embeddings, seed_list[0], history)
    print_tables(written["rows"], "benchmark", len(seed_list))
    console.print(f"wrote {out / 'results.json'} and {report}; wall {written['wall_seconds']:.0f}s")


def report(
    data: Path = typer.Option(..., "--data", help="The dataset folder the benchmark ran on."),
    out: Path = typer.Option(Path("reports/ml-1m"), "--out", help="Report folder."),
    pretrain_cache: Path | None = typer.Option(
        None,
        "--pretrain-cache",
        help="Where OUT/embeddings.npz is missing, load PEACE and PEACE w/o CPL from the "
        "pre-trainings `peace benchmark --pretrain-cache` kept in this folder, where they match, "
        "instead of pre-training them again.",
    ),
) -> None:
    """Rewrite OUT/REPORT.md and its figures from OUT/results.json.

    Runs no model, unless OUT/embeddings.npz (the t-SNE section's vectors, not committed) is
    missing: then PEACE and PEACE w/o CPL are pre-trained again with the recorded choices, the
    first seed and the torch thread count of the run that made their rows (on a CPU the weights
    depend on it), or loaded from --pretrain-cache, and the file is written for the next time.
    """
    import json

    from peace.config import PeaceConfig
    from peace.eval.benchmark import data_statistics
    from peace.eval.protocol import target_history
    from peace.eval.report import write_report
    from peace.eval.update import (
        UpdateError,
        check_document,
        embeddings_for_report,
        save_embeddings,
    )
    from peace.flows.pretrained import data_identity

    path = out / "results.json"
    if not path.is_file() or not (out / "config.toml").is_file():
        raise fail(f"{out}: no results.json and config.toml; run peace benchmark --out {out}.")
    if pretrain_cache is not None:
        output_folder(pretrain_cache, "--pretrain-cache")
    doc = json.loads(path.read_text())
    cfg = PeaceConfig.from_toml(out / "config.toml")
    ds = open_dataset(data)
    try:
        check_document(doc, path, ds.root.name, doc.get("seeds", []), cfg, data=data_identity(ds))
    except UpdateError as exc:
        raise fail(str(exc)) from exc
    seed = doc["seeds"][0]
    embeddings = embeddings_for_report(out, {}, ds, cfg, doc, seed, pretrain_cache)
    save_embeddings(out, embeddings)
    statistics, _ = data_statistics(ds)
    written = write_report(out, doc, statistics, embeddings, seed, target_history(ds, cfg))
    console.print(f"wrote {written}")


def evaluate(
    data: Path = typer.Option(..., "--data", help="The dataset folder the run was trained on."),
    run: str = typer.Option(
        ...,
        "--run",
        help="A pre-training run folder (peace pretrain), or several, comma-separated, each "
        "with its own --against run.",
    ),
    domains: str = typer.Option(
        "", "--domains", help="Comma-separated target domains (default: every target domain)."
    ),
    prior_weights: str = typer.Option(
        None,
        "--prior-weights",
        help="Comma-separated weights of the source-entity prior in the served score, one "
        "scorer each; the first is the one the others are tested against (default: 0 and the "
        "run's eval.zero_shot_prior).",
    ),
    references: bool = typer.Option(
        True,
        "--references/--no-references",
        help="Score Random, Entity prior, Profile prior, Entity overlap.",
    ),
    against: str = typer.Option(
        None,
        "--against",
        help="Another run of the same dataset (e.g. the preset's run of the same seed), scored "
        "with the first prior weight and tested per user against the --run; comma-separated, "
        "one per --run, to judge a change over several seeds.",
    ),
    out: Path = typer.Option(None, "--out", help="Write the scores and per-user values as JSON."),
    normal: bool = typer.Option(
        False,
        "--normal",
        help="Fine-tune and score the run's normal ranker (Eq. 11-12) instead: validation / test "
        "NDCG@10, tested per user against the --against run's (which may be the same run).",
    ),
    set_: list[str] = typer.Option(
        None,
        "--set",
        help="With --normal: a [finetune] or [eval] value for the --run's ranker (not the "
        "--against run's), e.g. --set finetune.user_dropout=0.3.",
    ),
    valid: bool = typer.Option(
        False,
        "--valid",
        help="Score the zero-shot rankers on each domain's validation split instead of all of "
        "its rows (valid / test, as --normal prints): a dataset's own targets without their "
        "test rows in the first column.",
    ),
) -> None:
    """Score a pre-trained run zero-shot on chosen domains, paired per user with references.

    The served score at each prior weight (plus the run's own profile term) beside the
    references (Random, Entity prior, Profile prior, Entity overlap), each tested per user
    against the first; with --against, beside another run's. With --normal, the run's
    fine-tuned normal ranker instead, beside the --against run's.
    """
    import json

    from peace.eval.normal import evaluate_normal
    from peace.eval.zero_shot import (
        against_name,
        evaluate_run,
        pairs_summary,
        settings_of,
        summary,
    )
    from peace.flows.checkpoints import CheckpointError
    from peace.flows.pretrained import load_pretrained

    if out is not None:
        output_file(out)
    runs = [Path(r.strip()) for r in run.split(",") if r.strip()]
    bases = [Path(r.strip()) for r in (against or "").split(",") if r.strip()]
    if not runs:
        raise fail("--run: give a pre-training run folder.")
    if len(runs) > 1 and len(bases) != len(runs):
        raise fail(
            f"--run names {len(runs)} runs and --against {len(bases)}: give one --against run "
            "per --run (the same order, e.g. the same seeds), or a single --run."
        )
    if len(runs) == 1 and len(bases) > 1:
        raise fail(f"--against names {len(bases)} runs for one --run: give one.")
    if set_ and not normal:
        raise fail("--set changes the normal ranker's head: pass it with --normal.")
    if valid and normal:
        raise fail("--valid is for the zero-shot rankers; --normal prints valid / test already.")
    if normal and prior_weights is not None:
        raise fail(
            "--prior-weights weighs the zero-shot score; the normal ranker reads the run's own "
            "eval.zero_shot_prior (change it with --set eval.zero_shot_prior=W)."
        )
    chosen: list[float] = []
    if prior_weights is not None:
        try:
            chosen = [float(w) for w in prior_weights.split(",") if w.strip()]
        except ValueError:
            chosen = []
        if not chosen:
            raise fail(
                f"--prior-weights {prior_weights!r}: expected comma-separated numbers, e.g. 0,0.5."
            )
    names = [d.strip() for d in domains.split(",") if d.strip()]
    ds = open_dataset(data)
    targets = [ds.domains[d] for d in ds.target_domains]
    unknown = [n for n in names if n not in targets]
    if unknown:
        sources = [n for n in unknown if n in ds.domains]
        why = f" (source domains, seen in pre-training: {', '.join(sources)})" if sources else ""
        raise fail(
            f"--domains: {unknown} are not target domains of {data}{why}; choose from {targets}."
        )
    docs = []
    for k, folder in enumerate(runs):
        base_folder = bases[k] if bases else None
        try:
            pre = load_pretrained(folder, ds)
            base = None if base_folder is None else load_pretrained(base_folder, ds)
            default = [0.0, pre.config.eval.zero_shot_prior]
            weights = [0.0] if normal else chosen or list(dict.fromkeys(default))
            if normal:
                doc = evaluate_normal(ds, pre, names, base, set_ or ())
            else:
                doc = evaluate_run(
                    ds,
                    pre,
                    names,
                    weights,
                    ZERO_SHOT_REFERENCES if references else (),
                    against=base,
                    valid=valid,
                )
        except (CheckpointError, ValueError, FileNotFoundError) as exc:
            raise fail(str(exc)) from exc
        settings = settings_of(doc)
        kind = "normal" if normal else "zero-shot"
        table = Table(title=f"{kind} NDCG@10 ({' / '.join(settings)}), {folder}")
        for col in ["scorer", *doc["domains"], "mean", f"{settings[1]} vs first (p)"]:
            table.add_column(col, justify="left" if col == "scorer" else "right")
        for line in summary(doc):
            table.add_row(*line)
        console.print(table)
        if base_folder is not None:
            t = next(t for t in doc["tests"] if t["scorer"] == against_name(weights[0]))
            low, high = (-v for v in reversed(t["interval"]))
            console.print(
                f"{folder} minus {base_folder}, {settings[1]} NDCG@10 (mean over the domains): "
                f"{-t['difference']:+.4f}, p {t['p_value']:.2g}, 95% interval [{low:+.4f}, "
                f"{high:+.4f}], {t['users']} users"
            )
        doc = {"run": str(folder), "dataset": str(data), **doc}
        if base_folder is not None:
            doc["against"] = str(base_folder)
        if set_:
            doc["set"] = list(set_)
        docs.append(doc)
    result: dict = docs[0]
    if len(docs) > 1:
        pooled = pairs_summary(docs)
        console.print(pairs_table(docs, pooled))
        console.print(
            f"mean of {pooled['pairs']} pairs, each run minus its --against run, NDCG@10 "
            + ", ".join(
                f"{s} {pooled['difference'][s]:+.4f} (ahead in {pooled['ahead'][s]})"
                for s in settings_of(docs[0])
            )
        )
        result = {"dataset": str(data), "summary": pooled, "pairs": docs}
    if out is not None:
        out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        console.print(f"wrote {out}")


def pairs_table(docs: list[dict], pooled: dict) -> Table:
    """Each run minus its --against run per domain (both settings: all / test zero-shot, valid /
    test normal), the mean over the pairs and how many pairs the run leads."""
    from peace.eval.zero_shot import (
        AGAINST,
        against_difference,
        domain_differences,
        settings_of,
    )

    settings = settings_of(docs[0])

    def cell(values: dict[str, float]) -> str:
        return " / ".join(f"{values[s]:+.4f}" for s in settings)

    domains = docs[0]["domains"]
    table = Table(title=f"each run minus its --against run, NDCG@10 ({' / '.join(settings)})")
    for col in ["run", *domains, "mean", f"{settings[1]} p"]:
        table.add_column(col, justify="left" if col == "run" else "right")
    for doc in docs:
        per_domain = domain_differences(doc)
        p = next(t["p_value"] for t in doc["tests"] if t["scorer"].endswith(AGAINST))
        table.add_row(
            doc["run"],
            *(cell({s: per_domain[s][d] for s in settings}) for d in domains),
            cell(against_difference(doc)),
            f"{p:.2g}",
        )
    by_domain = pooled["domains"]
    table.add_row(
        f"mean of {pooled['pairs']}",
        *(cell({s: by_domain[s][d]["difference"] for s in settings}) for d in domains),
        cell(pooled["difference"]),
        "",
    )
    table.add_row(
        "ahead in",
        *(" / ".join(str(by_domain[s][d]["ahead"]) for s in settings) for d in domains),
        " / ".join(str(pooled["ahead"][s]) for s in settings),
        "",
    )
    return table


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart)
    app.command("benchmark")(benchmark)
    app.command("report")(report)
    app.command("evaluate")(evaluate)
