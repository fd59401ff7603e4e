"""The hyperparameters of every competitor, in one place (A.3 and the choices each model's module
documents).

Each competitor takes its options as one frozen dataclass (``SASRec(ctx, cfg,
SASRecOptions(blocks=3))``); the defaults are the values the benchmark runs. The graph models share
:class:`GraphOptions` (and :class:`ContrastiveOptions` for those with a contrastive term).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SASRecOptions:
    """SASRec (:mod:`peace.baselines.sasrec`)."""

    blocks: int = 2
    """Causal self-attention blocks (A.3: 2)."""
    heads: int = 1
    """Attention heads per block."""
    dropout: float = 0.2
    """Dropout of the hidden states and the attention probabilities."""
    per_domain: int = 20
    """Most recent entity tokens read per source domain."""


@dataclass(frozen=True)
class BERT4RecOptions:
    """BERT4Rec (:mod:`peace.baselines.bert4rec`)."""

    blocks: int = 2
    """Bidirectional Transformer layers (A.3: 2)."""
    heads: int = 2
    """Attention heads per layer (A.3: 2)."""
    dropout: float = 0.1
    """Dropout of the hidden states."""
    attention_dropout: float = 0.0
    """Dropout of the attention probabilities (0 keeps PyTorch's fused attention kernel)."""
    mask_rate: float = 0.2
    """Probability that a real token is masked for the cloze task."""
    max_masked: int = 5
    """Most masked tokens per sequence whose cloze loss is taken."""
    per_domain: int = 20
    """Most recent entity tokens read per source domain."""


@dataclass(frozen=True)
class PAUPOptions:
    """PAUP (:mod:`peace.baselines.paup`)."""

    layers: int = 2
    """Item-to-segment attention layers (A.3: 2)."""
    heads: int = 2
    """Attention heads per layer (A.3: 2)."""
    segments: int = 5
    """m, the segments the sequence is cut into (A.3: 5)."""
    dropout: float = 0.2
    """Dropout of the hidden states and the attention probabilities."""
    per_domain: int | None = None
    """Most recent entity tokens read per source domain (None: all H; PAUP is linear in L)."""


@dataclass(frozen=True)
class ComiRecOptions:
    """ComiRec-SA (:mod:`peace.baselines.comirec`)."""

    interests: int = 8
    """K, the interest vectors of a user (A.3: 8)."""


@dataclass(frozen=True)
class PeterRecOptions:
    """PeterRec (:mod:`peace.baselines.peterrec`)."""

    dilations: tuple[int, ...] = (1, 4, 1, 4, 1, 4, 1, 4)
    """Dilations of the convolutions, two per residual block (A.3)."""
    bottleneck: int = 16
    """Width of the model patches' bottleneck."""


@dataclass(frozen=True)
class GraphOptions:
    """What every graph model (:mod:`peace.baselines.graph`) has."""

    layers: int = 2
    """Propagation layers (A.3: 2)."""
    l2: float = 1e-4
    """Weight of the L2 term on the batch's input rows (A.3: 1e-4)."""


@dataclass(frozen=True)
class ContrastiveOptions(GraphOptions):
    """A graph model with a contrastive term."""

    cl_weight: float = 1e-4
    """lambda, the weight of the InfoNCE term (chosen by the held-out criterion)."""
    cl_tau: float = 0.2
    """Temperature of the InfoNCE term (A.3: 0.2)."""


@dataclass(frozen=True)
class SimGCLOptions(ContrastiveOptions):
    """SimGCL (:mod:`peace.baselines.simgcl`)."""

    cl_weight: float = 1e-3
    """lambda, the weight of the InfoNCE term (chosen by the held-out criterion)."""
    eps: float = 0.1
    """Length of the noise added at every layer."""
    skip_input: bool = True
    """Leave the input embeddings (layer 0) out of the final mean, as SimGCL does."""


@dataclass(frozen=True)
class PCRecLOptions(ContrastiveOptions):
    """PCRec-L (:mod:`peace.baselines.pcrec`)."""

    drop_rate: float = 0.2
    """Probability that a view drops an interaction (a graph edge or a history token)."""


@dataclass(frozen=True)
class PCRecDOptions(ContrastiveOptions):
    """PCRec-D (:mod:`peace.baselines.pcrec`)."""

    factors: int = 8
    """K, the disentangled channels of d / K dimensions (A.3: 8)."""
    iterations: int = 3
    """Routing iterations per layer."""
    sample: int = 8
    """Neighbours (or history tokens) a node samples per layer in training."""


@dataclass(frozen=True)
class TigerOptions(GraphOptions):
    """Tiger (:mod:`peace.baselines.tiger`)."""

    discarded: int = 1
    """C, the bottom user layers left out of the user's representation (A.3: 1)."""
