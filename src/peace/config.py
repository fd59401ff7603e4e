"""One typed configuration for PEACE.

Defaults are the paper's A.3 values (batch 512, d = 64, Adam with learning rate 1e-4, two GNN layers,
sequence length H = 200, MLPs with two ReLU hidden layers, tau = 0.2, gamma = 1.0, M = 10 interest
kernels, n = 900 prototypes, K = 160). A configuration loads from TOML, is overridable from the
command line (``--set model.n_prototypes=64``) and is saved beside every checkpoint and result, so
any reported number can be reproduced.

Example::

    cfg = PeaceConfig.from_toml("my.toml").override(["pretrain.epochs=3"])
    cfg.save("run/config.toml")
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints


class ConfigError(ValueError):
    """A configuration value or file that cannot be used; the message says which and why."""


@dataclass
class ModelConfig:
    """Sizes and switches of the PEACE network (Sec. 4, A.3)."""

    dim: int = 64
    """d: width of entity, interest, user and prototype vectors."""
    gnn_layers: int = 2
    """Graph attention layers of the entity encoder (A.3: 2)."""
    gnn_residual: bool = False
    """Each GAT layer adds its messages to its input (x + GAT(x)) instead of replacing it."""
    gat_heads: int = 1
    """Attention heads per graph attention layer (outputs are averaged, width stays d)."""
    use_relation_types: bool = True
    """Feed relation-type embeddings to the attention as edge features."""
    undirected: bool = True
    """Pass messages both ways along every triplet (DESIGN.md: the entity graph is undirected)."""
    history_length: int = 200
    """H: last H entity tokens per source domain (A.3: 200)."""
    n_interests: int = 10
    """M: interest kernels of Eq. 1 (A.3: 10)."""
    recency: bool = False
    """Each kernel of Eq. 1 adds a learned bias per recency slot (tokens counted back from the
    newest of each source domain) to its attention scores, so it can prefer recent behaviour."""
    interest_attention: bool = True
    """False scores every history token alike in Eq. 1, so each interest is the plain mean of the
    user's entity vectors: with one interest, no graph and no prototypes, the "Entity mean"
    reference, the simplest learned model of the same pre-training task."""
    attention_dim: int = 64
    """Rows of W^A in Eq. 1 and W in Eq. 2."""
    n_prototypes: int = 900
    """n: learnable prototypes of Eq. 5-9 (A.3: 900)."""
    top_k_prototypes: int = 160
    """K: prototypes kept by the mask of Eq. 8 (A.3: 160)."""
    mlp_hidden: tuple[int, int] = (64, 32)
    """Two ReLU hidden layers of every MLP (A.3)."""
    dropout: float = 0.0
    use_graph: bool = True
    """False gives the ablation "w/o GL": entity vectors are the input embeddings, no message passing."""
    use_cpl: bool = True
    """False gives the ablation "w/o CPL": no contrastive prototype loss (Eq. 7 dropped from Eq. 10)."""
    use_pea: bool = True
    """False gives the ablation "w/o PEA": Eq. 2 fuses the plain interests of Eq. 1."""
    user_prior: bool = False
    """Eq. 2 adds a learned vector shared by all users (z_u = fused interests + b), so the
    zero-shot score z_u . z_i can carry an item prior b . z_i learned through entities."""
    inductive_entities: bool = False
    """Entities that stand for a single item (linked to one item only, e.g. a movie's own graph
    node) share one learned input vector, so the GAT encodes them from their neighbourhood; a
    target item's own node, never seen in pre-training, then gets a trained encoding."""
    unseen_entities: Literal["keep", "zero"] = "keep"
    """Entities that phi links to no source-domain item (a new domain's own graph nodes and its
    other new entities, and graph entities no item links to) never get a training signal of their
    own. ``"zero"``: whenever the model is not training (held-out evaluation, both rankers,
    export), they enter the graph attention with a zero input, the mean of their random
    initialisation, so an encoding built from trained neighbours carries no noise from them."""
    entity_dropout: float = 0.0
    """In training, each entity's input is zeroed with this probability at every step (the whole
    vector, not rescaled), as an unseen entity's is when served (``unseen_entities = "zero"``):
    the graph attention learns to encode an entity whose neighbours are partly missing."""
    graph_max_item_share: float = 1.0
    """Edges of hub entities, linked to more than this share of the items' own nodes (and to at
    least 10 items), are left out of the graph attention, which then runs on fewer edges: a genre
    or language shared by most of the catalogue passes every item nearly the same message.
    phi's rule for the same hubs (``[phi] max_item_share``) keeps them out of the items'
    entities. 1.0 keeps every edge (the paper's graph). On ML-1M's validation domains, 0.05
    tied the full graph in zero-shot (docs/experiments.md, section 54)."""
    decoder_interactions: bool = False
    """Eq. 3's MLP also reads z_u * h_e and z_u . h_e beside z_u || h_e: an MLP over a
    concatenation learns additive terms (how popular an entity is, how active a user is)
    easily and user-entity products poorly, so Eq. 4 then teaches the user vector less about
    which entities the user chose."""
    degree_buckets: int = 0
    """When > 0, entity inputs add a learned vector per degree bucket floor(log2(1 + degree)) of
    the entity in the graph (capped at this many buckets): how richly an entity is described,
    which attention-averaged messages cannot tell."""
    graph_sampling: Literal["full", "sampled"] = "full"
    """Run the GAT on the whole entity graph each step, or on a sampled subgraph around the batch."""
    fanout: tuple[int, int] = (15, 10)
    """Neighbours sampled per hop when ``graph_sampling = "sampled"``."""


@dataclass
class TrainingConfig:
    """What every training section has: batch, Adam's learning rate and weight decay, epochs."""

    batch_size: int = 512
    """Records per optimiser step (A.3: 512)."""
    lr: float = 1e-4
    """Adam's learning rate."""
    weight_decay: float = 0.0
    """Adam's L2 weight decay."""
    epochs: int = 10
    """Passes over the training records."""
    fused_adam: bool = False
    """Adam as one fused kernel per parameter tensor (``torch.optim.Adam(fused=True)``): on a
    CPU about 5x faster than the default multi-tensor form, which matters when the entity table
    is large (1M entities: 0.08 s per step against 0.40 s, docs/performance.md). It rounds
    differently (about one unit in the last place per step), so a run is not bit for bit the
    one without it; off by default and in the benchmark preset, whose record was trained
    without it."""


@dataclass
class PretrainConfig(TrainingConfig):
    """Entity-oriented pre-training on the source domains (Eq. 3-4, 7, 10)."""

    tau: float = 0.2
    """Temperature of Eq. 7."""
    gamma: float = 1.0
    """Weight of the contrastive prototype loss in Eq. 10."""
    neg_ratio: int = 1
    """Negative items sampled per positive from the same source domain (DESIGN.md, decision 2)."""
    cutoff: str = "auto"
    """Pre-train on source rows strictly before this timestamp; "auto" = the earliest test-period
    start over the target domains (DESIGN.md, decision 1)."""
    max_steps: int = 0
    """Stop after this many optimiser steps (0 = no limit)."""
    negatives: Literal["uniform", "popularity", "mixed"] = "uniform"
    """How the ``neg_ratio`` negatives of Eq. 4 are drawn from the positive's source domain:
    ``uniform`` (the paper's form), ``popularity`` (in proportion to the item's count of positive
    pre-training records raised to ``neg_alpha``), or ``mixed`` (each negative one or the other
    with equal chance). Uniform negatives let a per-entity popularity table win Eq. 4; popularity
    negatives can only be told apart by knowing the user (DESIGN.md, decision 2)."""
    neg_alpha: float = 0.75
    """Smoothing exponent of popularity-drawn negatives (1 = raw frequency, 0 = uniform)."""
    served_loss: Literal["none", "softmax", "bce"] = "none"
    """A term of Eq. 10 on the score the zero-shot ranker serves (Sec. 4.4): the inner product of
    the universal encoding z_u (Eq. 2) and the item vector z_i (mean of the item's entities).
    ``softmax``: cross-entropy of the positive item against its source domain's whole catalogue
    (popularity stays in the score, as zero-shot ranking needs); ``bce``: binary cross-entropy on
    the record's item and its sampled negatives; ``none``: the paper's Eq. 10 alone."""
    served_weight: float = 1.0
    """Weight of the served-score term in Eq. 10."""
    universal_weight: float = 0.0
    """Weight of a term of Eq. 10 that scores Eq. 4's pairs with the universal encoding z_u
    (Eq. 3 on z_u || h_e) as well as with the prototype-enhanced user vector. z_u is what the
    zero-shot ranker and the normal head read; with PEA on, Eq. 4 alone reaches it only through
    Eq. 8-9. Without PEA the two vectors are one and the term is not added (0 = the paper's
    Eq. 10)."""
    enhanced_weight: float = 1.0
    """Weight of Eq. 4 scored with the prototype-enhanced user vector (the paper's term) while
    PEA is on. With the universal term beside it, ``enhanced_weight + universal_weight`` is Eq.
    4's whole weight in Eq. 10; 0.5 and 0.5 give Eq. 4 the weight it has without PEA, where it
    is one term of weight 1 (docs/experiments.md section 119)."""
    served_sample: int = 0
    """The softmax of L_served over this many source items drawn uniformly each step (plus each
    record's own item) instead of the whole catalogue (0, the preset): a sampled softmax whose
    cost, and in sampled-subgraph training the graph it encodes, no longer grows with the
    number of source items."""
    eval_every: int = 0
    """Score the held-out source records every this many steps (0 = once per epoch)."""
    patience: int = 0
    """Stop after this many held-out evaluations without a better held-out NDCG@10 (0 = never)."""
    holdout_items: float = 0.0
    """Share of each source domain's items kept out of pre-training (0 = none). When > 0, the
    held-out ranking that selects the kept state ranks the records of those items among them:
    new items, as in a new domain, rather than later records of items already trained on. The
    kept-out items are left out of users' histories, and the entities that only they link to
    are unseen entities (``model.unseen_entities``), as a new domain's are."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """Number format of the losses' forward pass. ``bf16``: the matrix products after the
    entity encoder (Eq. 1-9 and the decoders) run in bfloat16 under ``torch.autocast``, the
    losses and the optimiser's state stay in float32, and the graph attention keeps float32
    (its softmax over edges sums in the input's format). On CPUs with bfloat16 instructions
    (AVX512-BF16, AMX) and on GPUs the products take a fraction of the time; the losses agree
    with float32 to about three digits (docs/performance.md). Off by default and in the
    benchmark preset, whose record was trained in float32."""
    # TrainingConfig's values for pre-training (fields keep TrainingConfig's order)
    lr: float = 1e-4
    epochs: int = 10


@dataclass
class FinetuneConfig(TrainingConfig):
    """Fine-tuning on a target domain (Eq. 11-12)."""

    patience: int = 5
    """Early stopping on validation NDCG@10, checked every epoch."""
    patience_steps: int = 0
    """Early stopping also waits until this many optimiser steps have passed without improvement
    (0: ``patience`` epochs alone). A small domain's epoch is a few steps (ML-1M Documentary:
    9), so ``patience`` epochs alone can stop a ranker on a dip a few dozen steps in; domains
    whose ``patience`` epochs already hold this many steps are unaffected."""
    min_steps: int = 0
    """The budget holds at least this many optimiser steps: a domain whose ``epochs`` hold fewer
    trains for more epochs (early stopping still applies). 0: ``epochs`` alone. An epoch budget
    gives a small domain a few hundred steps and a large one thousands."""
    neg_ratio: int = 4
    freeze_encoders: bool = True
    """Lightweight mode of Sec. 4.5: only the MLP and DeepFM are trained."""
    encoder_lr_scale: float = 1.0
    """With ``freeze_encoders = false``: the pre-trained encoders train at ``lr`` times this, so
    fine-tuning adapts them without washing out what pre-training learned."""
    tune_user_mlp: bool = False
    """With frozen encoders, PEACE's head also trains its own copies of the MLP-based parts of the
    user encoder, Eq. 9's MLP and Eq. 2's attention, at ``lr`` (Sec. 4.5: "only MLP based
    components are fine-tuned"); the graph attention, Eq. 1 and the prototypes stay frozen, and
    so does the run. The copies are what the model's ``user_parts()`` returns; a competitor's is
    empty, so it trains nothing more. `peace finetune` publishes them beside the head and the
    service uses them for that domain's user vectors. docs/experiments.md sections 160-161."""
    deepfm_hidden: tuple[int, int, int] = (64, 32, 8)
    """DeepFM deep part (A.3: 64-32-8)."""
    fm_dim: int = 8
    """DeepFM latent dimension (A.3: 8)."""
    profile_bins: int = 10
    """Numeric profile columns are cut into this many quantile bins, then embedded."""
    interaction_features: bool = False
    """Eq. 11's MLP also sees the explicit user-item interactions z_u * z_i and the zero-shot
    score z_u . z_i, which an MLP over a concatenation learns poorly on its own."""
    affinity: Literal["inner", "inner-prior", "zero-shot"] = "inner"
    """The zero-shot score the head reads with ``interaction_features``: ``inner`` = z_u . z_i
    of the kept state; ``inner-prior`` = that plus the source-entity prior as the zero-shot score
    weighs it (``eval.zero_shot_prior``); ``zero-shot`` = PEACE's zero-shot score as its
    zero-shot ranker serves it, the mean over the evaluated states (``eval.zero_shot_states``)
    plus the prior, docs/experiments.md sections 78 and 80. A competitor, which has neither
    states nor a prior, reads z_u . z_i under every value."""
    user_dropout: float = 0.0
    """Share of training pairs whose user vector z_u^T (and z_u^T * z_i^T) the head sees as zeros
    (scaled as dropout is). The zero-shot score is kept. Without it the head can read z_u^T as a
    user identity and fit what users with many target rows already did (docs/experiments.md,
    section 15). Ranking is unchanged by it; it acts during fine-tuning only."""
    target_history: int = 0
    """The user attribute "behaviours in current domains" (Sec. 5.1.1): DeepFM's x_u holds the
    user's last ``target_history`` positive items of the target's training split before the
    row's time, as one multi-valued field sharing the item-id vectors; in the DeepFM reference
    and in Eq. 11's DeepFM alike. 0: off (profile fields only)."""
    target_history_gap: float = 0.0
    """Seconds between a row and the newest history item it may see: the history holds only
    items more than this long before the row's time, so that a training row does not read the
    items of its own session (docs/experiments.md sections 16 and 107)."""
    # TrainingConfig's values for fine-tuning (fields keep TrainingConfig's order)
    lr: float = 1e-3
    epochs: int = 30


@dataclass
class EvalConfig:
    """Protocol of A.2 and DESIGN.md decisions 1 and 9."""

    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    ks: tuple[int, ...] = (5, 10)
    domains: tuple[str, ...] = ()
    """Target domains to run and report (empty = all). The pre-training cut-off is computed over
    every target domain either way, so a subset gives the same pre-trained model."""
    zero_shot_scorer: Literal["inner", "inner-enhanced", "decoder"] = "inner"
    """Zero-shot score (Sec. 4.4): ``inner`` = universal user encoding . item vector;
    ``inner-enhanced`` = prototype-enhanced user vector . item vector; ``decoder`` = Eq. 3."""
    zero_shot_prior: float = 0.0
    """Weight w of the source-entity prior added to the zero-shot score: score(u, i) +
    w * prior(i), prior(i) the mean of log(1 + count) over the item's entities, counts of
    positive source rows before the pre-training cut-off (the *Entity prior* reference's own
    score; no user input, no target row). 0 serves the paper's score alone. It is a scoring
    weight, not a training one: checkpoint selection does not use it, and the served zero-shot
    ranker and the benchmark apply the run's value alike (docs/experiments.md section 42)."""
    zero_shot_prior_counts: Literal["rows", "users"] = "rows"
    """What the prior of ``zero_shot_prior`` counts per entity: ``rows``, the positive source
    rows (the *Entity prior* reference's counts), or ``users``, the distinct users with such a
    row (docs/experiments.md section 47)."""
    zero_shot_profile_prior: float = 0.0
    """Weight of the source profile prior added to the zero-shot score (0: none): for each item
    profile field (e.g. MovieLens' year bin and number of genres), the mean log(1 + distinct
    users before the pre-training cut-off) of the source items with the item's value, averaged
    over the fields (:func:`peace.flows.rankers.source_profile_prior`). What kind of item the
    source domains took up, read from the new item's profile; no user input, no target row. The
    zero-shot ranker alone adds it (the normal head's DeepFM reads the profile fields itself),
    and the served zero-shot ranker does the same (docs/experiments.md section 103)."""
    zero_shot_states: Literal["kept", "evaluated"] = "kept"
    """Which pre-trained weights PEACE's zero-shot score uses: ``kept``, the state the held-out
    rule keeps (the paper's single model); ``evaluated``, every state pre-training evaluated
    (each ``pretrain.eval_every`` steps and at each epoch's end): the run folder keeps them
    (``state-NNN.safetensors``) and the score is the mean of their served scores, the prior term
    added once. The kept state is one draw from a band of states whose zero-shot ranking differs
    by .01-.02 (docs/experiments.md sections 74 and 76). The normal ranker uses the kept state
    either way. ``peace export`` stores the states' vectors side by side, so the service serves
    the same mean as one inner product (``inner`` scorer only)."""


@dataclass
class PeaceConfig:
    """Everything a run needs; ``seed`` fixes every random choice."""

    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    # ------------------------------------------------------------------ I/O
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> PeaceConfig:
        return _build(cls, data, source, prefix="")

    @classmethod
    def from_toml(cls, path: str | Path) -> PeaceConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such configuration file; pass the path of a TOML file.")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc}); fix the syntax.") from exc
        return cls.from_dict(data, source=str(path))

    @classmethod
    def preset(cls, name: str) -> PeaceConfig:
        """A configuration shipped with peace (``peace/configs/NAME.toml``)."""
        path = Path(__file__).parent / "configs" / f"{name}.toml"
        if not path.is_file():
            shipped = sorted(p.stem for p in path.parent.glob("*.toml"))
            raise ConfigError(f"no preset named {name!r}; shipped presets: {shipped}.")
        return cls.from_toml(path)

    def to_toml(self) -> str:
        return _dump_toml(self.to_dict())

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_toml(), encoding="utf-8")

    def override(self, assignments: list[str]) -> PeaceConfig:
        """Return a copy with ``section.key=value`` assignments applied (values parsed as TOML)."""
        data = self.to_dict()
        for item in assignments:
            if "=" not in item:
                raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. model.dim=32.")
            key, raw = item.split("=", 1)
            try:
                value = tomllib.loads(f"v = {raw}")["v"]
            except tomllib.TOMLDecodeError:
                value = raw  # a bare string
            node = data
            parts = key.strip().split(".")
            for part in parts[:-1]:
                if part not in node or not isinstance(node[part], dict):
                    raise ConfigError(f"--set {item!r}: unknown section {part!r}.")
                node = node[part]
            if parts[-1] not in node:
                raise ConfigError(f"--set {item!r}: unknown key {parts[-1]!r}; see `peace config`.")
            node[parts[-1]] = value
        return PeaceConfig.from_dict(data, source="--set")


# What each numeric key may hold: a value outside its range would fail deep inside a run (a
# zero width or batch divides by zero, a negative learning rate stops Adam) or silently train
# nonsense, so it fails at load, naming the key. Lists are checked element by element.
_AT_LEAST_ONE = (lambda v: v >= 1, "an integer >= 1")
_NON_NEGATIVE = (lambda v: v >= 0, "a number >= 0")
_POSITIVE = (lambda v: v > 0, "a number > 0")
_SHARE = (lambda v: 0 <= v < 1, "a share in [0, 1)")
RANGES: dict[str, tuple[Any, str]] = {
    **dict.fromkeys(
        [
            "model.dim",
            "model.gat_heads",
            "model.history_length",
            "model.n_interests",
            "model.attention_dim",
            "model.n_prototypes",
            "model.top_k_prototypes",
            "model.mlp_hidden",
            "model.fanout",
            "pretrain.batch_size",
            "pretrain.epochs",
            "finetune.batch_size",
            "finetune.epochs",
            "finetune.fm_dim",
            "finetune.profile_bins",
            "finetune.deepfm_hidden",
            "eval.ks",
        ],
        _AT_LEAST_ONE,
    ),
    **dict.fromkeys(
        [
            "model.gnn_layers",
            "model.degree_buckets",
            "pretrain.lr",
            "pretrain.weight_decay",
            "pretrain.gamma",
            "pretrain.neg_ratio",
            "pretrain.max_steps",
            "pretrain.neg_alpha",
            "pretrain.served_weight",
            "pretrain.universal_weight",
            "pretrain.enhanced_weight",
            "pretrain.served_sample",
            "pretrain.eval_every",
            "pretrain.patience",
            "finetune.lr",
            "finetune.weight_decay",
            "finetune.patience",
            "finetune.patience_steps",
            "finetune.min_steps",
            "finetune.neg_ratio",
            "finetune.encoder_lr_scale",
            "finetune.target_history",
            "finetune.target_history_gap",
            "eval.split",
        ],
        _NON_NEGATIVE,
    ),
    "pretrain.tau": _POSITIVE,
    **dict.fromkeys(
        [
            "model.dropout",
            "model.entity_dropout",
            "pretrain.holdout_items",
            "finetune.user_dropout",
        ],
        _SHARE,
    ),
    "model.graph_max_item_share": (lambda v: 0 < v <= 1, "a share in (0, 1]"),
}


def _check_range(key: str, value: Any, where: str) -> None:
    rule = RANGES.get(key)
    if rule is None:
        return
    accepts, expected = rule
    for v in value if isinstance(value, tuple) else (value,):
        if not accepts(v):
            raise ConfigError(f"{where} = {_toml_value(value)}: expected {expected}.")
    if key == "eval.split" and abs(sum(value) - 1.0) > 1e-6:
        raise ConfigError(
            f"{where} = {_toml_value(value)}: the train, validation and test fractions must sum "
            "to 1, e.g. [0.7, 0.15, 0.15]."
        )


def _build(cls: type, data: dict[str, Any], source: str, prefix: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {[prefix + k for k in unknown]}; "
            f"valid keys here are {sorted(prefix + k for k in known)}."
        )
    kwargs: dict[str, Any] = {}
    defaults = cls()
    hints = get_type_hints(cls)
    for name, value in data.items():
        default = getattr(defaults, name)
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: [{prefix}{name}] must be a table.")
            kwargs[name] = _build(type(default), value, source, prefix=f"{prefix}{name}.")
        else:
            where = f"{source}: {prefix}{name}"
            kwargs[name] = _coerce(value, default, where, hints[name])
            _check_range(prefix + name, kwargs[name], where)
    return cls(**kwargs)


def _coerce(value: Any, default: Any, where: str, hint: Any = None) -> Any:
    if get_origin(hint) is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise ConfigError(f"{where} = {value!r}: expected one of {list(choices)}.")
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} = {value!r}: expected true or false.")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} = {value!r}: expected an integer.")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} = {value!r}: expected a number.")
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} = {value!r}: expected a list like {list(default)}.")
        element = get_args(hint)[0] if get_args(hint) else None
        if element in (int, float):
            # Each element is checked like a scalar of its annotated type (ints become floats).
            return tuple(_coerce(v, element(), f"{where}[{k}]") for k, v in enumerate(value))
        return tuple(value)
    if isinstance(default, str) and not isinstance(value, str):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # e.g. pretrain.cutoff=978300760, a timestamp written bare
        raise ConfigError(f"{where} = {value!r}: expected a string.")
    return value


def _dump_toml(data: dict[str, Any]) -> str:
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables:
        lines.append("")
        lines.append(f"[{name}]")
        for key, value in table.items():
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")
