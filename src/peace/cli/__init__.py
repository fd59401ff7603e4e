"""The ``peace`` command line.

Commands are grouped as the paper's flows are: ``data`` (synthetic platform, importers),
``pretrain`` / ``export`` / ``finetune`` / ``serve`` (Sec. 4.5), and ``quickstart`` /
``benchmark`` (Sec. 5 protocol).
"""

from __future__ import annotations

import typer

from peace.cli import data as data_cmd
from peace.cli import deploy as deploy_cmd
from peace.cli import experiments as experiments_cmd

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


def main() -> None:
    import torch

    from peace.utils import compute_threads

    torch.set_num_threads(compute_threads())
    app()
