"""The typed configuration: A.3 defaults, TOML round trip, overrides and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from peace.config import ConfigError, PeaceConfig


def test_defaults_are_the_papers_a3_values() -> None:
    cfg = PeaceConfig()
    assert cfg.pretrain.batch_size == 512
    assert cfg.finetune.batch_size == 512
    assert cfg.model.dim == 64
    assert cfg.pretrain.lr == 1e-4
    assert cfg.model.gnn_layers == 2
    assert cfg.model.history_length == 200
    assert cfg.pretrain.tau == 0.2
    assert cfg.pretrain.gamma == 1.0
    assert cfg.model.n_interests == 10
    assert cfg.model.n_prototypes == 900
    assert cfg.model.top_k_prototypes == 160
    assert len(cfg.model.mlp_hidden) == 2  # MLPs with two ReLU hidden layers
    assert cfg.finetune.deepfm_hidden == (64, 32, 8) and cfg.finetune.fm_dim == 8
    assert cfg.eval.split == (0.7, 0.15, 0.15) and cfg.eval.ks == (5, 10)
    assert cfg.model.use_graph and cfg.model.use_cpl and cfg.model.use_pea


def test_toml_round_trip(tmp_path: Path) -> None:
    cfg = PeaceConfig(seed=7).override(
        [
            "model.dim=32",
            "model.mlp_hidden=[16, 8]",
            "model.use_pea=false",
            "model.graph_sampling=sampled",
            "pretrain.lr=0.003",
            'pretrain.cutoff="1000.5"',
            "eval.ks=[1, 5, 20]",
            "eval.zero_shot_scorer=decoder",
        ]
    )
    path = tmp_path / "config.toml"
    cfg.save(path)
    loaded = PeaceConfig.from_toml(path)
    assert loaded == cfg
    assert loaded.to_toml() == cfg.to_toml()
    assert PeaceConfig.from_toml(_write(tmp_path, PeaceConfig().to_toml())) == PeaceConfig()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_partial_toml_keeps_defaults(tmp_path: Path) -> None:
    cfg = PeaceConfig.from_toml(_write(tmp_path, "seed = 3\n[model]\ndim = 16\n"))
    assert cfg.seed == 3 and cfg.model.dim == 16
    assert cfg.model.n_prototypes == 900 and cfg.pretrain == PeaceConfig().pretrain


@pytest.mark.parametrize(
    ("assignment", "check"),
    [
        ("model.dim=32", lambda c: c.model.dim == 32),
        ("model.mlp_hidden=[16, 8]", lambda c: c.model.mlp_hidden == (16, 8)),
        ("finetune.deepfm_hidden=[8,4,2]", lambda c: c.finetune.deepfm_hidden == (8, 4, 2)),
        ("model.use_graph=false", lambda c: c.model.use_graph is False),
        ("finetune.freeze_encoders=true", lambda c: c.finetune.freeze_encoders is True),
        ("pretrain.lr=1e-3", lambda c: c.pretrain.lr == 1e-3),
        ("pretrain.lr=1", lambda c: c.pretrain.lr == 1.0 and isinstance(c.pretrain.lr, float)),
        ("eval.split=[1, 0, 0]", lambda c: c.eval.split == (1.0, 0.0, 0.0)),
        ("eval.zero_shot_scorer=decoder", lambda c: c.eval.zero_shot_scorer == "decoder"),
        ('eval.zero_shot_scorer="decoder"', lambda c: c.eval.zero_shot_scorer == "decoder"),
        ("eval.zero_shot_prior=0.5", lambda c: c.eval.zero_shot_prior == 0.5),
        ("pretrain.cutoff=978300760", lambda c: float(c.pretrain.cutoff) == 978300760),
        (" seed = 5", lambda c: c.seed == 5),
    ],
)
def test_override(assignment: str, check) -> None:
    base = PeaceConfig()
    cfg = base.override([assignment])
    assert check(cfg)
    assert base == PeaceConfig()  # the original is untouched


def test_override_applies_in_order() -> None:
    cfg = PeaceConfig().override(["model.dim=8", "model.dim=12", "pretrain.epochs=1"])
    assert cfg.model.dim == 12 and cfg.pretrain.epochs == 1


@pytest.mark.parametrize(
    ("assignment", "words"),
    [
        ("model.dimension=32", ["unknown key 'dimension'"]),
        ("modle.dim=32", ["unknown section 'modle'"]),
        ("model.dim.x=1", ["unknown section 'dim'"]),
        ("model.dim", ["expected section.key=value"]),
        ("model.dim=3.5", ["model.dim = 3.5", "expected an integer"]),
        ("model.dim=true", ["model.dim = True", "expected an integer"]),
        ("model.dim=wide", ["model.dim = 'wide'", "expected an integer"]),
        ("model.use_pea=1", ["model.use_pea = 1", "expected true or false"]),
        ("pretrain.lr=fast", ["pretrain.lr = 'fast'", "expected a number"]),
        ("model.mlp_hidden=64", ["model.mlp_hidden = 64", "expected a list"]),
        ("model.mlp_hidden=['a', 'b']", ["model.mlp_hidden[0] = 'a'", "expected an integer"]),
        ("eval.ks=[5, 2.5]", ["eval.ks[1] = 2.5", "expected an integer"]),
        ("model.graph_sampling=everything", ["expected one of ['full', 'sampled']"]),
        ("eval.zero_shot_scorer=dot", ["expected one of ['inner', 'inner-enhanced', 'decoder']"]),
        ("model=3", ["[model] must be a table"]),
        ("model.dim=0", ["model.dim = 0", "expected an integer >= 1"]),
        ("model.mlp_hidden=[64, 0]", ["model.mlp_hidden = [64, 0]", "an integer >= 1"]),
        ("pretrain.batch_size=0", ["pretrain.batch_size = 0", "an integer >= 1"]),
        ("pretrain.lr=-0.001", ["pretrain.lr = -0.001", "expected a number >= 0"]),
        ("pretrain.tau=0", ["pretrain.tau = 0.0", "expected a number > 0"]),
        ("model.entity_dropout=1", ["model.entity_dropout = 1.0", "a share in [0, 1)"]),
        ("model.graph_max_item_share=0", ["a share in (0, 1]"]),
        ("eval.split=[0.5, 0.2, 0.2]", ["eval.split = [0.5, 0.2, 0.2]", "must sum to 1"]),
        ("eval.ks=[0, 10]", ["eval.ks = [0, 10]", "an integer >= 1"]),
    ],
)
def test_override_errors(assignment: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        PeaceConfig().override([assignment])
    for word in words:
        assert word in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[model]\ndimm = 3\n", ["unknown key(s) ['model.dimm']", "model.dim"]),
        ("colour = 'red'\n", ["unknown key(s) ['colour']", "'model'"]),
        ("[model]\ndim = '64'\n", ["model.dim = '64'", "expected an integer"]),
        ("[pretrain]\nbatch_size = 1.5\n", ["pretrain.batch_size = 1.5", "expected an integer"]),
        ("[model]\nuse_cpl = 'yes'\n", ["model.use_cpl = 'yes'", "expected true or false"]),
        ("[pretrain]\ncutoff = true\n", ["pretrain.cutoff = True", "expected a string"]),
        ("model = 1\n", ["[model] must be a table"]),
        ("[model\ndim = 1\n", ["not valid TOML", "fix the syntax"]),
        ("[finetune]\nepochs = -3\n", ["finetune.epochs = -3", "expected an integer >= 1"]),
    ],
)
def test_toml_errors_name_the_file_and_the_key(tmp_path: Path, text: str, words) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        PeaceConfig.from_toml(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    for word in words:
        assert word in message, message


def test_missing_file_and_unknown_preset(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        PeaceConfig.from_toml(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="no preset named 'nope'"):
        PeaceConfig.preset("nope")


def test_dict_round_trip() -> None:
    cfg = PeaceConfig().override(["model.fanout=[4, 3]", "finetune.patience=2"])
    data = cfg.to_dict()
    assert data["model"]["fanout"] == (4, 3)
    assert PeaceConfig.from_dict(data) == cfg


def test_the_edges_of_each_range_load() -> None:
    """The smallest values the ranges admit (frozen training at lr 0, no weight decay, no
    negatives in fine-tuning, a whole-graph share of 1) are configurations, not errors."""
    cfg = PeaceConfig().override(
        [
            "pretrain.lr=0.0",
            "finetune.lr=0",
            "finetune.neg_ratio=0",
            "pretrain.max_steps=0",
            "model.dropout=0",
            "model.graph_max_item_share=1",
            "model.dim=1",
            "eval.split=[0.8, 0.1, 0.1]",
        ]
    )
    assert cfg.model.dim == 1 and cfg.pretrain.lr == 0.0 and cfg.finetune.neg_ratio == 0
    for name in ("benchmark", "quickstart"):  # the shipped presets lie in their ranges
        PeaceConfig.preset(name)


def test_peace_config_prints_what_config_reads(tmp_path: Path) -> None:
    """`peace config`, which the unknown-key message points to, prints every key; its output
    is a configuration file that loads to the same values."""
    from typer.testing import CliRunner

    from peace.cli import app

    result = CliRunner().invoke(app, ["config", "--preset", "benchmark", "--set", "model.dim=32"])
    assert result.exit_code == 0, result.output
    path = _write(tmp_path, result.output)
    expected = PeaceConfig.preset("benchmark").override(["model.dim=32"])
    assert PeaceConfig.from_toml(path) == expected
    assert "top_k_prototypes = 4" in result.output and "tune_user_mlp = true" in result.output
    unknown = CliRunner().invoke(app, ["config", "--set", "model.nope=1"])
    assert unknown.exit_code == 2 and "see `peace config`" in unknown.output
