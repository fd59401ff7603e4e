"""Helpers shared by the command modules: configuration loading and clear failures."""

from __future__ import annotations

import os
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


class OutputError(ValueError):
    """A folder or file that a command would write cannot be written there; says which and the
    fix."""


def writable_folder(path: Path, option: str = "--out") -> Path:
    """Create the folder ``path`` (parents too) and check that it takes files, before any work.

    A command that would write into a file's place, under a file, or into a folder it may not
    write fails here with :class:`OutputError`, not after its training.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(
            f"{option} {path}: a file is there, not a folder; give a folder path (it is created "
            "if missing) or move the file away."
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"{option} {path}: cannot create the folder ({exc.strerror}); give a folder path "
            "whose parents are folders you can write to."
        ) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(
            f"{option} {path}: the folder is not writable; give one you can write to or "
            "change its permissions."
        )
    return path


def output_folder(path: Path, option: str = "--out") -> Path:
    """:func:`writable_folder`, or a clear failure (exit 2)."""
    try:
        return writable_folder(path, option)
    except OutputError as exc:
        raise fail(str(exc)) from exc


def output_file(path: Path, option: str = "--out") -> Path:
    """The file ``path`` writable (its folder created), or a clear failure before any work."""
    if path.is_dir():
        raise fail(
            f"{option} {path}: a folder is there; give a file path, e.g. {path / 'scores.json'}."
        )
    output_folder(path.parent, f"{option} {path}: its folder")
    return path
