"""End to end over real HTTP: pretrain -> export -> serve -> rank (zero-shot) -> finetune ->
rank (normal, picked up without restart), through the CLI commands and a uvicorn server on
loopback."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import typer
import uvicorn
from safetensors.torch import load_file
from typer.testing import CliRunner

from peace.cli import deploy
from peace.config import PeaceConfig
from peace.data.dataset import load_dataset
from peace.flows.pretrained import load_pretrained
from peace.flows.rankers import PeaceRanker, TargetDomain, ZeroShotRanker, zero_shot_prior
from peace.serve.app import create_app
from peace.store import current_rankers, ranker_path

TOKEN = "e2e-token"


def cli() -> typer.Typer:
    app = typer.Typer(no_args_is_help=True)
    deploy.register(app)
    return app


def test_every_command_has_help() -> None:
    runner = CliRunner()
    for command in (
        ["pretrain"],
        ["export"],
        ["finetune"],
        ["serve"],
        ["store", "list"],
        ["store", "use"],
    ):
        result = runner.invoke(cli(), [*command, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage" in result.output


def test_help_reflows_each_paragraph() -> None:
    """A command's help joins the lines of its docstring's paragraphs (no break mid-sentence)."""
    from peace.cli import app

    result = CliRunner().invoke(app, ["report", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "(the t-SNE section's vectors, not committed) is missing: then PEACE" in result.output


def test_cli_errors_are_messages_not_tracebacks(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli(), ["export", "--run", str(tmp_path / "none"), "--store", str(tmp_path / "store")]
    )
    assert result.exit_code == 2 and "meta.json" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


class _Server:
    """uvicorn on 127.0.0.1, on a socket bound before start (no port race), in a thread."""

    def __init__(self, app: object) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> str:
        self.thread.start()
        for _ in range(300):  # at most 30 s
            if self.server.started:
                break
            time.sleep(0.1)
        assert self.server.started, "uvicorn did not start"
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


def test_pretrain_export_serve_finetune_serve(
    toy_dir: Path, tiny_config: PeaceConfig, tmp_path: Path
) -> None:
    run, store, cfg_path = tmp_path / "run", tmp_path / "store", tmp_path / "tiny.toml"
    # the benchmark preset's scores: the zero-shot score as the mean over the evaluated states
    # plus the prior, and the head reading it
    tiny_config.override(
        [
            'eval.zero_shot_states="evaluated"',
            "eval.zero_shot_prior=1.0",
            "finetune.interaction_features=true",
            'finetune.affinity="zero-shot"',
        ]
    ).save(cfg_path)
    runner = CliRunner()
    result = runner.invoke(
        cli(),
        [
            "pretrain",
            "--data",
            str(toy_dir),
            "--out",
            str(run),
            "--config",
            str(cfg_path),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli(), ["export", "--run", str(run), "--store", str(store)])
    assert result.exit_code == 0, result.output

    ds = load_dataset(toy_dir)
    pre = load_pretrained(run, ds)
    assert len(pre.states) == 2  # served as one inner product of the states side by side
    target = TargetDomain(ds, ds.domain_index("t1"))
    items = [str(i) for i in ds.items[target.catalogue]]
    users = [0, 5, 11]
    prior = zero_shot_prior(ds, pre, pre.config)
    assert prior[0] == 1.0
    zero_shot = ZeroShotRanker(pre, target, "inner", *prior)
    offline_zs = zero_shot(
        torch.as_tensor(users),
        zero_shot.states(np.array(users), np.full(3, np.inf)),
        torch.arange(len(items)).expand(3, -1),
    )

    app = create_app(store, token=TOKEN, reload_interval_s=0.1)
    with (
        _Server(app) as base,
        httpx.Client(
            base_url=base, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as http,
    ):
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
        assert httpx.get(f"{base}/v1/domains", timeout=10).status_code == 401
        for k, u in enumerate(users):
            r = http.post("/v1/domains/t1/rank", json={"user": str(ds.users[u]), "items": items})
            assert r.status_code == 200, r.text
            assert r.json()["ranker"] == "zero-shot"
            assert np.allclose(r.json()["scores"], offline_zs[k].numpy(), atol=1e-5)
        # an item launched at run time with a catalogue item's entities scores as that item
        entities = [str(ds.entities[e]) for e in ds.item_entities[target.catalogue[0]] if e >= 0]
        r = http.post(
            "/v1/domains", json={"domain": "t9", "items": [{"item": "x", "entities": entities}]}
        )
        assert r.status_code == 201, r.text
        for k, u in enumerate(users):
            r = http.post("/v1/domains/t9/rank", json={"user": str(ds.users[u]), "items": ["x"]})
            assert r.json()["ranker"] == "zero-shot"
            assert np.allclose(r.json()["scores"], offline_zs[k, :1].numpy(), atol=1e-5)

        result = runner.invoke(
            cli(),
            ["finetune", "--run", str(run), "--store", str(store), "--domain", "t1", "--quiet"],
        )
        assert result.exit_code == 0, result.output
        published = current_rankers(store)["t1"]

        body: dict = {}
        for _ in range(300):  # bounded: the service notices the pointer within ~0.1 s
            body = http.post(
                "/v1/domains/t1/rank", json={"user": str(ds.users[users[0]]), "items": items}
            ).json()
            if body["ranker"] == "normal":
                break
            time.sleep(0.1)
        assert body["ranker"] == "normal" and body["ranker_version"] == published

        # The offline ranker with the published weights gives the same scores.
        normal = PeaceRanker(pre, target, pre.config, prior)
        assert normal.zero_shot is not None  # the head read the zero-shot ranker's score
        normal.head.load_state_dict(
            load_file(str(ranker_path(store, "t1", published) / "head.safetensors"))
        )
        normal.eval()
        with torch.no_grad():
            offline_n = normal(
                torch.as_tensor(users),
                normal.states(np.array(users), np.full(3, np.inf)),
                torch.arange(len(items)).expand(3, -1),
            )
        for k, u in enumerate(users):
            r = http.post("/v1/domains/t1/rank", json={"user": str(ds.users[u]), "items": items})
            assert r.json()["ranker"] == "normal"
            assert np.allclose(r.json()["scores"], offline_n[k].numpy(), atol=1e-5)

        r = http.get("/v1/domains/t1/recommend", params={"user": str(ds.users[0]), "k": 3})
        assert r.status_code == 200 and r.json()["ranker"] == "normal"
        assert len(r.json()["items"]) == 3
        r = http.post("/v1/domains/t2/rank", json={"user": str(ds.users[0]), "items": ["t2_i0"]})
        assert r.json()["ranker"] == "zero-shot"
        r = http.post("/v1/domains/t1/rank", json={"user": "new-user", "items": items[:3]})
        assert r.json()["ranker"] == "popularity-fallback"
        metrics = http.get("/metrics").text
        assert 'peace_ranker_used_total{ranker="normal"}' in metrics


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (["store", "list"], 0),
        (["store", "use"], 2),
        (["store", "use", "--zero-shot"], 2),
        (["store", "use", "--version", "nope"], 2),
        (["store", "use", "--domain", "t1", "--zero-shot"], 2),  # an empty store has no t1
    ],
)
def test_store_commands(command: list[str], code: int, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli(), [*command, "--store", str(tmp_path)])
    assert result.exit_code == code, result.output
