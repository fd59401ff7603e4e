"""Helpers shared by the command modules: configuration loading and clear failures."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from peace.config import ConfigError, PeaceConfig
from peace.data.contract import DataContractError
from peace.data.dataset import Dataset, load_dataset

console = Console(stderr=True)


def config_option(preset: str) -> typer.models.OptionInfo:
    """``--config`` of a command whose configuration, without it, is the shipped ``preset``."""
    return typer.Option(
        None,
        "--config",
        help=f"TOML configuration (default: the {preset} preset, peace/configs/{preset}.toml).",
    )


SET_OPTION = typer.Option(
    None, "--set", help="Override a configuration value, e.g. --set model.n_prototypes=64."
)


def fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def load_config(
    config: Path | None, assignments: list[str] | None, preset: str | None = None
) -> PeaceConfig:
    try:
        if config is not None:
            cfg = PeaceConfig.from_toml(config)
        elif preset is not None:
            cfg = PeaceConfig.preset(preset)
        else:
            cfg = PeaceConfig()
        return cfg.override(list(assignments or []))
    except ConfigError as exc:
        raise fail(str(exc)) from exc


def open_dataset(path: Path) -> Dataset:
    try:
        return load_dataset(path)
    except DataContractError as exc:
        raise fail(str(exc)) from exc
