"""``peace data``: the synthetic platform, importers, and dataset checks."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from peace.cli.common import console, fail, open_dataset, output_folder
from peace.data.contract import DataContractError

app = typer.Typer(help="Create, import and check datasets.", no_args_is_help=True)
import_app = typer.Typer(
    help="Import users' data into a peace dataset folder.", no_args_is_help=True
)
app.add_typer(import_app, name="import")


@app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="Folder to write the dataset to."),
    seed: int = typer.Option(0, "--seed", help="Seed fixing every random choice."),
    size: str = typer.Option("small", "--size", help="small | medium | large."),
) -> None:
    """Write the synthetic service platform (3 source, 3 target domains) to OUT."""
    from peace.data.synthetic import generate

    t0 = time.perf_counter()
    output_folder(out)
    try:
        summary = generate(out, seed=seed, size=size, progress=True)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    console.print(f"wrote {out} in {time.perf_counter() - t0:.1f}s: {summary}")


@app.command("check")
def check(data: Path = typer.Argument(..., help="Dataset folder.")) -> None:
    """Validate a dataset folder against the data contract and print its statistics."""
    ds = open_dataset(data)
    console.print(ds.summary().to_string(index=False))
    console.print(
        f"{ds.num_users} users, {ds.num_items} items, {ds.num_entities} entities, "
        f"{len(ds.triplets)} triplets, {ds.num_relations} relations: the dataset is valid."
    )


@import_app.command("movielens")
def import_movielens_cmd(
    movielens: Path = typer.Option(..., "--movielens", help="Folder with ratings.dat etc."),
    kg: Path = typer.Option(..., "--kg", help="Folder with kg.txt, item_index2entity_id.txt."),
    out: Path = typer.Option(..., "--out", help="Dataset folder to write."),
    cut: Path = typer.Option(None, "--cut", help="TOML domain cut (default: the paper-like cut)."),
) -> None:
    """Import MovieLens-1M with its Satori knowledge graph."""
    from peace.data.importers.movielens import import_movielens

    output_folder(out)
    try:
        report = import_movielens(movielens, kg, out, cut)
    except DataContractError as exc:
        raise fail(str(exc)) from exc
    typer.echo(report.format())


@import_app.command("recbole")
def import_recbole_cmd(
    atomic: Path = typer.Option(..., "--atomic", help="Folder of RecBole atomic files."),
    out: Path = typer.Option(..., "--out", help="Dataset folder to write."),
    domain_field: str = typer.Option(None, "--domain-field", help="Item field naming the domain."),
    domain_map: Path = typer.Option(None, "--domain-map", help="File mapping items to domains."),
    targets: str = typer.Option(None, "--targets", help="Comma-separated target domains."),
) -> None:
    """Import RecBole atomic files (.inter, .item, .user, .kg, .link)."""
    from peace.data.importers.recbole import import_recbole

    target_list = [t.strip() for t in targets.split(",")] if targets else None
    output_folder(out)
    try:
        report = import_recbole(
            atomic, out, domain_field=domain_field, domain_map=domain_map, targets=target_list
        )
    except DataContractError as exc:
        raise fail(str(exc)) from exc
    typer.echo(report.format())
