"""``peace quickstart`` and ``peace benchmark``: the protocol of Sec. 5 in one command."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from peace.cli.common import CONFIG_OPTION, SET_OPTION, console, load_config, open_dataset
from peace.eval.protocol import DEFAULT_MODELS, run_protocol
from peace.eval.results import METRICS, environment, results_table, write_results


def print_tables(rows: list[dict], title: str) -> None:
    from rich.console import Console

    out = Console()
    for domain in sorted({r["domain"] for r in rows}):
        table = Table(title=f"{title}: {domain}")
        for col in ["model", "setting", *METRICS]:
            table.add_column(col, justify="left" if col in ("model", "setting") else "right")
        for line in results_table(rows, domain):
            table.add_row(*line)
        out.print(table)


def quickstart(
    out: Path = typer.Option(Path("quickstart"), "--out", help="Folder for data and results."),
    data: Path = typer.Option(None, "--data", help="Dataset folder (default: synthetic small)."),
    seeds: int = typer.Option(1, "--seeds", help="Number of seeds (0, 1, ...)."),
    config: Path = CONFIG_OPTION,
    set_: list[str] = SET_OPTION,
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Pre-train, fine-tune every target domain, rank zero-shot, and compare with references."""
    t0 = time.perf_counter()
    cfg = load_config(config, set_, preset="quickstart")
    out.mkdir(parents=True, exist_ok=True)
    if data is None:
        from peace.data.synthetic import generate

        data = out / "data"
        if not (data / "interactions.parquet").exists():
            console.print(f"writing the synthetic platform (small, seed {cfg.seed}) to {data}")
            generate(data, seed=cfg.seed, size="small")
    ds = open_dataset(data)
    cfg.save(out / "config.toml")
    seed_list = [cfg.seed + k for k in range(seeds)]
    rows, timings = run_protocol(
        ds, cfg, seed_list, DEFAULT_MODELS, show_progress=not quiet, log=lambda m: console.print(m)
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
]


def benchmark(
    data: Path = typer.Option(
        ..., "--data", help="Dataset folder (e.g. from `peace data import`)."
    ),
    out: Path = typer.Option(Path("reports/ml-1m"), "--out", help="Report folder."),
    seeds: int = typer.Option(3, "--seeds", help="Number of seeds (base seed, +1, ...)."),
    models: str = typer.Option("all", "--models", help="Comma-separated model names, or all."),
    quick: bool = typer.Option(False, "--quick", help="Smoke run: tiny budgets, one candidate."),
    config: Path = CONFIG_OPTION,
    set_: list[str] = SET_OPTION,
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Tables 2-3 and the ablation: every model, every target domain, several seeds."""
    import shlex
    import sys

    from peace.eval.benchmark import (
        ALL_MODELS,
        FINETUNE_CANDIDATES,
        PRETRAIN_CANDIDATES,
        data_statistics,
        run_benchmark,
    )

    cfg = load_config(config, (QUICK if quick else []) + list(set_ or []), preset="benchmark")
    chosen_models = ALL_MODELS if models == "all" else tuple(m.strip() for m in models.split(","))
    unknown = [m for m in chosen_models if m not in ALL_MODELS]
    if unknown:
        from peace.cli.common import fail

        raise fail(f"--models: unknown {unknown}; choose from {list(ALL_MODELS)} or all.")
    ds = open_dataset(data)
    out.mkdir(parents=True, exist_ok=True)
    seed_list = [cfg.seed + k for k in range(seeds)]
    doc = run_benchmark(
        ds,
        cfg,
        seed_list,
        chosen_models,
        show_progress=not quiet,
        log=lambda m: console.print(m),
        pretrain_candidates=PRETRAIN_CANDIDATES[:1] if quick else None,
        finetune_candidates=FINETUNE_CANDIDATES[:1] if quick else None,
    )
    embeddings = doc.pop("embeddings")
    doc.pop("seeds")
    statistics, graph = data_statistics(ds)
    command = "peace " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    written = write_results(
        out / "results.json",
        ds.root.name,
        seed_list,
        doc.pop("rows"),
        **doc,
        graph=graph,
        config=cfg.to_dict(),
        environment=environment(),
        commands=[command],
    )
    cfg.save(out / "config.toml")
    from peace.eval.report import write_report

    report = write_report(out, written, statistics, embeddings, seed=seed_list[0])
    print_tables(written["rows"], "benchmark")
    console.print(f"wrote {out / 'results.json'} and {report}; wall {doc['wall_seconds']:.0f}s")


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart)
    app.command("benchmark")(benchmark)
