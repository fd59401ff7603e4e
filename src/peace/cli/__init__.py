"""The ``peace`` command line.

Commands are grouped as the paper's flows are: ``data`` (synthetic platform, importers),
``pretrain`` / ``export`` / ``finetune`` / ``serve`` (Sec. 4.5), ``quickstart`` /
``benchmark`` (Sec. 5 protocol), and ``config`` (every key of a configuration and its value).
"""

from __future__ import annotations

from pathlib import Path

import typer

from peace.cli import data as data_cmd
from peace.cli import deploy as deploy_cmd
from peace.cli import experiments as experiments_cmd
from peace.cli.common import SET_OPTION, load_config

app = typer.Typer(
    name="peace",
    help="PEACE: transferable cross-domain recommendation through an entity graph.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
app.add_typer(data_cmd.app, name="data")
experiments_cmd.register(app)
deploy_cmd.register(app)


@app.command("config")
def config_cmd(
    preset: str = typer.Option(
        None,
        "--preset",
        help="A shipped preset, e.g. benchmark or quickstart (default: the paper's A.3 values).",
    ),
    config: Path = typer.Option(None, "--config", help="A TOML configuration file instead."),
    set_: list[str] = SET_OPTION,
) -> None:
    """Print a configuration as TOML: every key and its value, as --config reads it."""
    typer.echo(load_config(config, set_, preset).to_toml(), nl=False)


def main() -> None:
    import torch

    from peace.utils import compute_threads

    torch.set_num_threads(compute_threads())
    app()
