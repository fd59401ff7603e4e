"""BERT4Rec (Sun et al., CIKM 2019): bidirectional self-attention trained by the cloze task.

Followed: a bidirectional Transformer (multi-head self-attention and a position-wise feed-forward
network with GELU, each residual with layer normalisation, dropout) over the item (here: entity)
sequence with learned positional embeddings; pre-training by the cloze task, where a share of the
sequence's tokens is replaced by a [MASK] token and each masked token is predicted from both sides
by a softmax over the whole vocabulary, its logits being a GELU projection of the output times the
shared token embeddings plus a bias; at inference a [MASK] is appended after the last token and
its output is the user vector. A.3: 2 layers, 2 heads, learned positions, d = 64.

Choices: the entity-oriented strategy of A.3 makes the vocabulary the entities (the cloze softmax
runs over all |E| entity rows), and the appended [MASK] is trained on the pairs of the
pre-training batch: its output scores the record's entities by inner product with binary
cross-entropy (``"et"``); ``"total"`` is ``et + cloze``. Each real token is masked with
probability 0.2 (the paper's share for MovieLens); the cloze loss is the mean cross-entropy over a
uniform draw of at most ``max_masked`` (5) of each sequence's masked tokens, which keeps the
|E|-way softmax cheap. Masking draws from torch's global generator, which the trainer seeds, and
happens only in training mode. Layers are pre-norm with a final layer norm, the feed-forward width
equals d (as SASRec's here), token embeddings are scaled by sqrt(d) before the positions are
added, and dropout is 0.1 on the hidden states but none on the attention probabilities, so that
attention runs in PyTorch's fused kernel (about half the step time on a CPU;
``attention_dropout`` sets it). The last layer computes only the outputs that are read (the
appended [MASK], and the masked positions in pre-training); the others cannot change them. The
sequence is the user's entity tokens of all source domains, domain blocks in domain order
(:func:`peace.baselines.base.left_align`), followed by the [MASK], so L + 1 positions in all.

Sequence length: the last 20 entity tokens of each source domain (``per_domain``, see
:mod:`peace.baselines.sequence`), and the [MASK].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from peace.baselines.base import SourceContext, entity_loss
from peace.baselines.options import BERT4RecOptions
from peace.baselines.sequence import PreNormBlock, SequenceModel, add_recent_positions
from peace.config import PeaceConfig


class EncoderLayer(PreNormBlock):
    """A pre-norm bidirectional Transformer layer whose outputs may be a subset of positions.

    Shapes:
        x ``[B, N, d]``, keys ``[B, N]`` (True: a real position to attend to), select ``[B, Q]``
        positions or None (all) -> ``[B, Q, d]`` (``[B, N, d]`` without ``select``).
    """

    def __init__(self, dim: int, heads: int, dropout: float, attention_dropout: float) -> None:
        super().__init__()
        self.heads, self.p = heads, attention_dropout
        self.norm_attn = nn.LayerNorm(dim)
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = self.feed_forward(dim, dim, nn.GELU())
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, keys: Tensor, select: Tensor | None = None) -> Tensor:
        d = x.shape[-1]
        h = self.norm_attn(x)
        if select is not None:
            index = select.unsqueeze(-1).expand(-1, -1, d)
            x, hq = x.gather(1, index), h.gather(1, index)
        else:
            hq = h
        q = self.split_heads(self.query(hq))[0]  # [B, H, Q, dh]
        k, v = self.split_heads(self.key_value(h), parts=2)
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=keys[:, None, None, :], dropout_p=self.p if self.training else 0.0
        )
        return self.residual(x, self.merge_heads(attended))


class BERT4Rec(SequenceModel):
    """BERT4Rec on entity sequences; the user vector is the appended [MASK]'s output ``[B, d]``."""

    def __init__(
        self, ctx: SourceContext, cfg: PeaceConfig, options: BERT4RecOptions = BERT4RecOptions()
    ) -> None:
        super().__init__(ctx, cfg.model.dim, options.per_domain, extra_tokens=1)  # [MASK]: |E| + 1
        d = cfg.model.dim
        self.mask_id = ctx.pad + 1
        self.mask_rate, self.max_masked = options.mask_rate, options.max_masked
        self.position = nn.Embedding(self.window.length + 1, d)
        self.layers = nn.ModuleList(
            EncoderLayer(d, options.heads, options.dropout, options.attention_dropout)
            for _ in range(options.blocks)
        )
        self.norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(options.dropout)
        self.projection = nn.Linear(d, d)  # the cloze head: GELU(W h + b) E^T + b^O
        self.output_bias = nn.Parameter(torch.zeros(ctx.num_entities))

    def encoder_table(self, graph: object | None = None) -> Tensor:
        """Entity rows and the padding row ``[|E| + 1, d]`` (the [MASK] row is not in it)."""
        return self.embedding.table()[: self.pad + 1]

    def _encode(self, table: Tensor, tokens: Tensor, mask: Tensor, select: Tensor) -> Tensor:
        """Right-aligned ``[B, L]`` tokens (ids up to [MASK]) and an appended [MASK]; the outputs
        ``[B, Q, d]`` at positions ``select`` ``[B, Q]`` of the L + 1."""
        lookup = torch.cat([table, self.embedding.weight[self.mask_id :]])
        tokens = torch.cat([tokens, tokens.new_full((len(tokens), 1), self.mask_id)], 1)
        keys = torch.cat([mask, mask.new_ones(len(mask), 1)], 1)
        x = self.dropout(add_recent_positions(F.embedding(tokens, lookup), self.position))
        for i, layer in enumerate(self.layers):
            x = layer(x, keys, select if i == len(self.layers) - 1 else None)
        return self.norm(x)

    def encode_users(self, table: Tensor, users: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        tokens, mask = self.sequence(tokens, mask)
        last = torch.full((len(tokens), 1), tokens.shape[1])
        return self._encode(table, tokens, mask, last)[:, 0]

    def _cloze_positions(self, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Which tokens to mask ``[B, L]`` (each real one with probability ``mask_rate``), and
        the ones to predict: positions ``[B, K]`` and whether each is masked ``[B, K]``, a uniform
        draw of at most K = ``max_masked`` masked tokens per row."""
        draws = torch.rand(mask.shape).masked_fill(~mask, 2.0)
        masked = draws < self.mask_rate
        values, positions = draws.topk(min(self.max_masked, mask.shape[1]), dim=1, largest=False)
        return masked, positions, values < self.mask_rate

    def pretrain_losses(self, table: Tensor, batch, tau: float, gamma: float) -> dict[str, Tensor]:
        tokens, mask = self.sequence(batch.tokens, batch.mask)
        if not self.training:  # held-out pairs: no masking, the entity loss alone
            loss = entity_loss(self.encode_users(table, None, tokens, mask), table, batch)
            return {"et": loss, "total": loss}
        masked, positions, chosen = self._cloze_positions(mask)
        answers = tokens.gather(1, positions)[chosen]  # [N]
        corrupted = tokens.masked_fill(masked, self.mask_id)
        last = torch.full((len(tokens), 1), tokens.shape[1])
        out = self._encode(table, corrupted, mask, torch.cat([positions, last], 1))  # [B, K+1, d]
        et = entity_loss(out[:, -1], table, batch)
        if len(answers) == 0:
            return {"et": et, "total": et}
        hidden = F.gelu(self.projection(out[:, :-1][chosen]))  # [N, d]
        logits = hidden @ table[: self.pad].T + self.output_bias  # [N, |E|]
        cloze = F.cross_entropy(logits, answers)
        return {"et": et, "total": et + cloze}

    # the name in result tables, and the paper the model follows
    display_name = "BERT4Rec"
    reference = (
        "Sun et al., BERT4Rec: Sequential Recommendation with Bidirectional Encoder "
        "Representations from Transformer, CIKM 2019"
    )
