"""Deployment commands: the three flows of Sec. 4.5 and the online service.

``peace pretrain`` (pre-training flow), ``peace export`` (offline inference flow: a new store
version), ``peace finetune`` (fine-tuning flow: a published normal ranker), ``peace serve`` (the
HTTP ranking service), and ``peace store list|use`` to inspect and roll back store versions.
See ``docs/serving.md`` for the whole path with examples.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from peace.cli.common import fail as _fail
from peace.cli.common import load_config, writable_folder

# Options declared once: those several deploy commands share, and a few short ones.
Run = Annotated[Path, typer.Option("--run", help="Pre-training run folder.")]
Store = Annotated[Path, typer.Option("--store", help="Embedding store folder.")]
RunData = Annotated[
    Path | None,
    typer.Option("--data", help="Dataset folder (default: the one recorded in RUN/meta.json)."),
]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
Domain = Annotated[str, typer.Option("--domain", help="Target domain to fine-tune.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in --out.")]
ReloadInterval = Annotated[
    float, typer.Option("--reload-interval", help="Seconds between checks for a new version.")
]


def _dataset_of(run: Path, data: Path | None) -> Path:
    """The dataset folder: ``--data`` or the one recorded in ``RUN/meta.json``."""
    if data is not None:
        return data
    meta = run / "meta.json"
    if not meta.is_file():
        raise _fail(f"{meta}: missing; pass --data DIR or pre-train into {run} first.")
    return Path(json.loads(meta.read_text(encoding="utf-8"))["dataset"])


def _handled() -> tuple[type[BaseException], ...]:
    from peace.config import ConfigError
    from peace.data.contract import DataContractError
    from peace.flows.checkpoints import CheckpointError
    from peace.store import StoreError

    return (
        ConfigError,
        DataContractError,
        CheckpointError,
        StoreError,
        KeyError,
        ValueError,
        FileNotFoundError,
    )


@contextmanager
def _reported() -> Iterator[None]:
    """Turn the errors a user can fix (:func:`_handled`) into one clear message and exit 2."""
    try:
        yield
    except _handled() as exc:
        raise _fail(str(exc)) from None


def register(app: typer.Typer) -> None:
    """Add ``pretrain``, ``export``, ``finetune``, ``serve`` and ``store`` to ``app``."""

    @app.command("pretrain")
    def pretrain_cmd(
        data: Annotated[Path, typer.Option("--data", help="Dataset folder (data contract).")],
        out: Annotated[Path, typer.Option("--out", help="Run folder to write.")],
        config: Annotated[
            Path | None,
            typer.Option("--config", help="TOML configuration (default: the paper's A.3 values)."),
        ] = None,
        preset: Annotated[
            str | None,
            typer.Option(
                "--preset",
                help="A shipped configuration instead, e.g. quickstart (scaled for the small "
                "synthetic platform).",
            ),
        ] = None,
        set_: Annotated[
            list[str] | None,
            typer.Option("--set", help="Override a value, e.g. --set model.dim=32 (repeatable)."),
        ] = None,
        resume: Resume = False,
        warm_start: Annotated[
            Path | None,
            typer.Option(
                "--warm-start", help="Initialise from another run's weights (same id spaces)."
            ),
        ] = None,
        device: Annotated[
            str | None,
            typer.Option(
                "--device",
                help="Where PEACE trains: cpu or cuda[:N] (default: PEACE_DEVICE, else cpu). "
                "Under torchrun with cuda, each process takes the GPU of its local rank.",
            ),
        ] = None,
        quiet: Quiet = False,
    ) -> None:
        """Pre-training flow: pre-train PEACE on the source domains (Eq. 1-10) into RUN."""
        from peace.data.dataset import load_dataset
        from peace.flows.pretrain import pretrain

        if config is None and preset is None and resume and (out / "config.toml").is_file():
            config = out / "config.toml"  # a resumed run keeps its configuration
        cfg = load_config(config, set_, preset)
        with _reported():
            writable_folder(out)
            ds = load_dataset(data, profile_bins=cfg.finetune.profile_bins)
            result = pretrain(
                ds,
                cfg,
                out=out,
                show_progress=not quiet,
                resume=resume,
                warm_start=warm_start,
                device=device,
            )
        last = result.log[-1] if result.log else {}
        typer.echo(
            f"pre-trained {len(result.log)} epoch(s) into {out} "
            f"(cut-off {result.cutoff}, last loss {last.get('loss', float('nan')):.4f}, "
            f"held-out {last.get('valid_loss', float('nan')):.4f})"
        )

    @app.command("export")
    def export_cmd(
        run: Run,
        store: Store,
        data: RunData = None,
        as_of: Annotated[
            float | None,
            typer.Option("--as-of", help="Data cut-off timestamp (default: after all behaviour)."),
        ] = None,
        kept_only: Annotated[
            bool,
            typer.Option(
                "--kept-only",
                help='For a run pre-trained with eval.zero_shot_states = "evaluated": serve '
                "the kept state's zero-shot score (width d), not the states' mean (width S * d).",
            ),
        ] = False,
    ) -> None:
        """Offline inference flow: compute user, entity and item vectors; publish a version."""
        from peace.data.dataset import load_dataset
        from peace.flows.offline_inference import export

        with _reported():
            writable_folder(store, "--store")
            ds = load_dataset(_dataset_of(run, data))
            version = export(run, ds, store, as_of=as_of, kept_only=kept_only)
        typer.echo(f"published store version {version} in {store} (now CURRENT)")

    @app.command("finetune")
    def finetune_cmd(
        run: Run,
        store: Store,
        domain: Domain,
        data: RunData = None,
        set_: Annotated[
            list[str] | None,
            typer.Option(
                "--set", help="Override a fine-tuning value, e.g. --set finetune.epochs=10."
            ),
        ] = None,
        quiet: Quiet = False,
    ) -> None:
        """Fine-tuning flow: train a domain's normal ranker (Eq. 11-12) and publish it."""
        from peace.data.dataset import load_dataset
        from peace.flows.publish import finetune_and_publish

        with _reported():
            writable_folder(store, "--store")
            ds = load_dataset(_dataset_of(run, data))
            result = finetune_and_publish(
                run, ds, store, domain, show_progress=not quiet, overrides=list(set_ or [])
            )
        best = max((e.get("ndcg@10", float("nan")) for e in result.log), default=float("nan"))
        typer.echo(
            f"published normal ranker {result.version} of {domain!r} (store version "
            f"{result.store_version}; best validation NDCG@10 {best:.4f})"
        )

    @app.command("serve")
    def serve_cmd(
        store: Store,
        host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", help="Port to bind.")] = 8000,
        token: Annotated[
            str | None,
            typer.Option(
                "--token",
                envvar="PEACE_TOKEN",
                help="Bearer token required by every endpoint but /healthz (or $PEACE_TOKEN).",
            ),
        ] = None,
        threads: Annotated[int, typer.Option("--threads", help="torch threads per request.")] = 1,
        workers: Annotated[
            int,
            typer.Option(
                "--workers",
                min=1,
                help="Server processes sharing the port (each loads the store; about one per "
                "core).",
            ),
        ] = 1,
        max_candidates: Annotated[
            int, typer.Option("--max-candidates", help="Most candidates per rank request.")
        ] = 1000,
        max_k: Annotated[int, typer.Option("--max-k", help="Largest k of recommend.")] = 1000,
        exact_threshold: Annotated[
            int,
            typer.Option("--exact-threshold", help="Catalogues above this size use the ANN index."),
        ] = 2000,
        ann_pool: Annotated[
            int,
            typer.Option("--ann-pool", help="Candidates the ANN index proposes per recommend."),
        ] = 100,
        reload_interval: ReloadInterval = 0.5,
        max_launch_bytes: Annotated[
            int,
            typer.Option(
                "--max-launch-bytes", help="Largest body of a domain launch (default 32 MiB)."
            ),
        ] = 32 << 20,
    ) -> None:
        """Serve the store over HTTP (FastAPI + uvicorn; OpenAPI at /docs)."""
        try:
            from peace.serve.app import run_server
        except ImportError as exc:
            raise _fail(
                f"{exc}; install the serving extra: pip install 'peace-rec[serve]'"
            ) from None

        def announce() -> None:
            many = f", {workers} workers" if workers > 1 else ""
            typer.echo(f"serving {store} on http://{host}:{port}{many} (docs at /docs)", err=True)

        with _reported():
            run_server(
                store,
                host=host,
                port=port,
                token=token,
                threads=threads,
                announce=announce,
                workers=workers,
                max_launch_bytes=max_launch_bytes,
                max_candidates=max_candidates,
                max_k=max_k,
                exact_threshold=exact_threshold,
                ann_pool=ann_pool,
                reload_interval_s=reload_interval,
            )

    store_app = typer.Typer(
        help="Inspect the embedding store and roll versions back or forth.", no_args_is_help=True
    )
    app.add_typer(store_app, name="store")

    @store_app.command("list")
    def store_list(
        store: Store,
    ) -> None:
        """List published store versions and each domain's normal rankers."""
        from peace.store import list_rankers, list_versions, ranker_domains

        for v in list_versions(store):
            mark = "*" if v.get("current") else " "
            typer.echo(
                f"{mark} {v['version']}  created {v.get('created')}  "
                f"model {str(v.get('model_hash'))[:12]}  users {v.get('users')}"
            )
        for domain in ranker_domains(store):
            for r in list_rankers(store, domain):
                mark = "*" if r.get("current") else " "
                typer.echo(f"{mark} ranker {domain}/{r['version']}  store {r.get('store_version')}")

    @store_app.command("use")
    def store_use(
        store: Store,
        version: Annotated[
            str | None, typer.Option("--version", help="Version id to serve.")
        ] = None,
        domain: Annotated[
            str | None,
            typer.Option(
                "--domain", help="Switch this domain's normal ranker instead of the store version."
            ),
        ] = None,
        zero_shot: Annotated[
            bool,
            typer.Option(
                "--zero-shot", help="With --domain: serve the domain zero-shot (no normal ranker)."
            ),
        ] = False,
    ) -> None:
        """Point CURRENT at another version (a roll-back); running services pick it up."""
        from peace.store import set_current, set_current_ranker

        if zero_shot and domain is None:
            raise _fail("--zero-shot needs --domain.")
        if version is None and not zero_shot:
            raise _fail("give --version ID (see `peace store list`), or --domain D --zero-shot.")
        with _reported():
            if domain is None:
                set_current(store, str(version))
            else:
                set_current_ranker(store, domain, None if zero_shot else version)
        target = "zero-shot" if zero_shot else version
        typer.echo(f"CURRENT -> {target}" + (f" for {domain}" if domain else ""), err=True)


if __name__ == "__main__":  # pragma: no cover
    _app = typer.Typer(no_args_is_help=True)
    register(_app)
    _app(sys.argv[1:])
