"""PAUP (Zhu et al., SIGIR 2022): progressive self-attention with unsymmetrical positional encoding.

Followed, as the paper's abstract describes the model: a Transformer for next-item
recommendation whose self-attention is convolutional; a down-sampling convolution cuts the long
behaviour sequence into a series of local subsequences (segments), and every item attends to the
segments rather than to every other item, which gives locality-aware representations at nearly
linear cost (L x m scores instead of L x L); an unsymmetrical positional encoding. A.3: 2 layers,
2 heads, m = 5 segments, the unsymmetrical positional encoding.

Choices (details the abstract leaves open):

* Segments: the right-aligned sequence (left-padded to a multiple of m) is cut into m windows of
  w = ceil(L / m) positions; in every layer the down-sampling convolution (kernel w, stride w,
  d -> d channels, computed as one linear map of each window's w x d values) turns the layer's
  item states into m segment states. A window with no real token is not attended to.
* Unsymmetrical positional encoding: queries and keys are positioned by different tables, learned
  item positions (L of them, added to the token embeddings) on the query side and learned segment
  positions (m per layer, added to that layer's segment states) on the key side, so the encoding
  of "item i attends to segment j" is not a shared relative or absolute code.
* Layers: pre-norm item-to-segment multi-head attention and a position-wise feed-forward network
  (width d, GELU), each residual, then a final layer norm; dropout 0.2. The user vector is the last
  position's output (the most recent token); the last layer computes that position only, which
  changes nothing in it.
* Objective: next-item prediction from the last position, as for sequential recommenders; the
  entity-oriented strategy of A.3 replaces the next item by the record's entities (the pairs of
  the pre-training batch, binary cross-entropy of inner products), so ``"total"`` is ``"et"``. No
  auxiliary segment objective is added, as the abstract names none.
* The sequence is the user's entity tokens of all source domains, domain blocks in domain order
  (:func:`peace.baselines.base.left_align`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from peace.baselines.base import SourceContext
from peace.baselines.options import PAUPOptions
from peace.baselines.sequence import PreNormBlock, SequenceModel
from peace.config import PeaceConfig


class SegmentAttentionLayer(PreNormBlock):
    """One PAUP layer: items attend to the m segments of the sequence.

    Shapes:
        x ``[B, m * w, d]`` item states, keep ``[B, m * w, 1]`` (1 at real tokens) ->
        ``[B, Q, d]``, where Q is ``m * w`` or, with ``last_only``, 1 (the last position).
    """

    def __init__(self, dim: int, heads: int, segments: int, width: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.segments, self.width = heads, segments, width
        self.norm_in = nn.LayerNorm(dim)
        # the down-sampling convolution (kernel = stride = w), one linear map per window
        self.down = nn.Linear(width * dim, dim)
        self.segment_position = nn.Parameter(torch.empty(segments, dim))
        nn.init.normal_(self.segment_position, std=0.02)
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = self.feed_forward(dim, dim, nn.GELU())
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, keep: Tensor, segment_keep: Tensor, last_only: bool) -> Tensor:
        b, length, d = x.shape
        h = self.norm_in(x) * keep
        windows = h.reshape(b, self.segments, self.width * d)
        seg = self.down(windows) + self.segment_position  # [B, m, d]
        queries = h[:, -1:] if last_only else h
        x = x[:, -1:] if last_only else x
        q = self.split_heads(self.query(queries))[0]  # [B, H, Q, dh]
        k = self.split_heads(self.key(seg))[0]  # [B, H, m, dh]
        v = self.split_heads(self.value(seg))[0]
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)  # [B, H, Q, m]
        scores = scores.masked_fill(~segment_keep[:, None, None, :], float("-inf"))
        attended = self.dropout(scores.softmax(-1)) @ v  # [B, H, Q, dh]
        return self.residual(x, self.merge_heads(attended))


class PAUP(SequenceModel):
    """PAUP on entity sequences; the user vector is the last position's output ``[B, d]``."""

    def __init__(
        self, ctx: SourceContext, cfg: PeaceConfig, options: PAUPOptions = PAUPOptions()
    ) -> None:
        # linear in L: reads all of PEACE's H tokens per domain unless told otherwise
        d = cfg.model.dim
        super().__init__(ctx, d, options.per_domain or ctx.sequence_length)
        self.dim, self.segments = d, options.segments
        self.width = math.ceil(self.window.length / options.segments)
        self.length = self.width * options.segments  # L, left-padded to a multiple of m
        self.item_position = nn.Parameter(torch.empty(self.length, d))
        nn.init.normal_(self.item_position, std=0.02)
        self.layers = nn.ModuleList(
            SegmentAttentionLayer(d, options.heads, options.segments, self.width, options.dropout)
            for _ in range(options.layers)
        )
        self.norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(options.dropout)

    def encode_users(self, table: Tensor, users: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        tokens, mask = self.sequence(tokens, mask)
        extra = self.length - tokens.shape[1]
        if extra > 0:
            tokens = F.pad(tokens, (extra, 0), value=self.pad)
            mask = F.pad(mask, (extra, 0), value=False)
        keep = mask.unsqueeze(-1).to(table.dtype)
        segment_keep = mask.view(len(mask), self.segments, self.width).any(-1)  # [B, m]
        empty = ~segment_keep.any(1)
        # An empty history attends to its last (padding) segment only, and is zeroed afterwards.
        segment_keep[empty, -1] = True
        x = F.embedding(tokens, table) * math.sqrt(self.dim) + self.item_position
        x = self.dropout(x) * keep
        for i, layer in enumerate(self.layers):
            x = layer(x, keep, segment_keep, last_only=i == len(self.layers) - 1)
        return self.norm(x[:, -1]) * (~empty).unsqueeze(-1).to(x.dtype)

    # the name in result tables, and the paper the model follows
    display_name = "PAUP"
    reference = (
        "Zhu et al., Progressive Self-Attention Network with Unsymmetrical Positional Encoding "
        "for Sequential Recommendation, SIGIR 2022"
    )
