"""PeterRec (Yuan et al., SIGIR 2020): a pre-trained NextItNet fine-tuned through model patches.

Followed: the NextItNet backbone PeterRec pre-trains, a stack of residual blocks of two dilated
causal 1-D convolutions (kernel 3), each followed by layer normalisation and ReLU, the block's
input added to its output; the user vector is the last position's output. Fine-tuning keeps the
pre-trained backbone frozen and trains small model patches only, residual bottleneck blocks
``x + W_up ReLU(W_down x)`` inserted in every residual block. A.3: kernel 3, 64 channels (d),
dilations [1, 4, 1, 4, 1, 4, 1, 4].

Choices: the eight dilations are those of the eight convolutions, two per residual block, so four
blocks of dilations (1, 4); the receptive field of the last position is then 1 + 2 * 20 = 41
tokens. The entity-oriented strategy of A.3 makes the tokens entities, and pre-training is the
entity-oriented objective every sequential competitor here shares: the last position's output
scores the record's entities by inner product with binary cross-entropy (``"et"``); NextItNet's
next-token loss at every earlier position is left out, as it would multiply the cost of a step by
the sequence length over the receptive field while the user vector reads the last position only.
Tokens embed into d channels with no positional embedding, as in NextItNet; each dilated
convolution is zero-padded on the left, and padding positions are reset to zero after every
convolution so that the amount of padding does not change the output. The patches are inserted
serially, one after each convolution's ReLU (two per block), with a bottleneck of 16 and a
zero-initialised output layer, so that they start as the identity; they are inactive during
pre-training. :meth:`PeterRec.patch_parameters` switches them on and returns them to that
identity start, so every fine-tuning (one per target domain) starts from the pre-trained backbone
alone. The user vector is computed from the last position's receptive field only: the same vector
as from the whole sequence, at a fraction of the cost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from peace.baselines.base import SourceContext
from peace.baselines.options import PeterRecOptions
from peace.baselines.sequence import SequenceModel
from peace.config import PeaceConfig


class ModelPatch(nn.Module):
    """A residual bottleneck ``x + W_up ReLU(W_down x)``, ``[..., d] -> [..., d]``.

    ``reset()`` draws ``W_down`` anew and zeroes ``W_up`` (and its bias): the patch is then the
    identity.
    """

    def __init__(self, dim: int, bottleneck: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        self.reset()

    @torch.no_grad()
    def reset(self) -> None:
        self.down.reset_parameters()
        self.up.weight.zero_()
        self.up.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.up(F.relu(self.down(x)))


class CausalConv(nn.Module):
    """A dilated causal convolution over channel-last sequences ``[B, L, d] -> [B, L, d]``.

    Output ``t`` reads inputs ``t - 2r, t - r, t`` (zeros before the start), kernel 3, dilation
    ``r``; computed as one linear map of the three shifted copies. With ``valid`` the input is not
    padded and only the outputs whose inputs all lie in it are computed: ``[B, L - 2r, d]``.
    """

    def __init__(self, dim: int, dilation: int, kernel: int = 3) -> None:
        super().__init__()
        self.dilation, self.kernel = dilation, kernel
        self.linear = nn.Linear(kernel * dim, dim)

    @property
    def reach(self) -> int:
        """How many earlier positions an output reads."""
        return (self.kernel - 1) * self.dilation

    def forward(self, x: Tensor, valid: bool = False) -> Tensor:
        r = self.dilation
        if not valid:
            x = F.pad(x, (0, 0, self.reach, 0))
        length = x.shape[1] - self.reach
        taps = [x[:, k * r : k * r + length] for k in range(self.kernel)]
        return self.linear(torch.cat(taps, -1))


class ResidualBlock(nn.Module):
    """NextItNet's residual block with two PeterRec patches: ``[B, L, d] -> [B, L, d]``.

    ``x -> conv(r1) -> LN -> ReLU -> [patch] -> conv(r2) -> LN -> ReLU -> [patch] -> + x``;
    ``keep`` ``[B, L, 1]`` zeroes padding positions after each convolution. With ``valid`` the
    output is the last ``L - reach`` positions, those whose inputs all lie in ``x``.
    """

    def __init__(self, dim: int, dilations: tuple[int, int], bottleneck: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList([CausalConv(dim, r) for r in dilations])
        self.norms = nn.ModuleList([nn.LayerNorm(dim), nn.LayerNorm(dim)])
        self.patches = nn.ModuleList([ModelPatch(dim, bottleneck), ModelPatch(dim, bottleneck)])

    @property
    def reach(self) -> int:
        return sum(conv.reach for conv in self.convs)

    def forward(self, x: Tensor, keep: Tensor, patched: bool, valid: bool = False) -> Tensor:
        h = x
        for conv, norm, patch in zip(self.convs, self.norms, self.patches, strict=True):
            h = F.relu(norm(conv(h, valid)))
            if patched:
                h = patch(h)
            h = h * keep[:, keep.shape[1] - h.shape[1] :]
        return x[:, x.shape[1] - h.shape[1] :] + h


class PeterRec(SequenceModel):
    """PeterRec on entity sequences; the user vector is the last position's output ``[B, d]``.

    ``patched`` (off until :meth:`patch_parameters`) switches the model patches on.
    """

    def __init__(
        self, ctx: SourceContext, cfg: PeaceConfig, options: PeterRecOptions = PeterRecOptions()
    ) -> None:
        d = cfg.model.dim
        super().__init__(ctx, d)
        self.num_entities = ctx.num_entities
        dilations = options.dilations
        if len(dilations) % 2:
            raise ValueError(f"PeterRec: dilations {dilations} must pair up, two per block.")
        pairs = [tuple(dilations[k : k + 2]) for k in range(0, len(dilations), 2)]
        self.blocks = nn.ModuleList([ResidualBlock(d, p, options.bottleneck) for p in pairs])
        self.patched = False

    def _encode(self, table: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        """Right-aligned ``[B, L]`` tokens -> outputs ``[B, L, d]`` (padding positions 0)."""
        keep = mask.unsqueeze(-1).to(table.dtype)
        h = F.embedding(tokens, table)
        for block in self.blocks:
            h = block(h, keep, self.patched)
        return h

    def _encode_last(self, table: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        """The last position's output alone ``[B, d]``, from its receptive field only.

        The last ``1 + reach`` tokens (left-padded if fewer) go through every convolution without
        padding; the result equals the last row of :meth:`_encode`.
        """
        field = 1 + sum(block.reach for block in self.blocks)
        short = field - tokens.shape[1]
        if short > 0:
            tokens = F.pad(tokens, (short, 0), value=self.pad)
            mask = F.pad(mask, (short, 0), value=False)
        keep = mask[:, -field:].unsqueeze(-1).to(table.dtype)
        h = F.embedding(tokens[:, -field:], table)
        for block in self.blocks:
            h = block(h, keep, self.patched, valid=True)
        return h[:, -1]

    def encode_users(self, table: Tensor, users: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        tokens, mask = self.sequence(tokens, mask)
        return self._encode_last(table, tokens, mask)

    def patch_parameters(self) -> list[nn.Parameter]:
        """Switch the model patches on, reset them to the identity, and return their parameters."""
        patches = [p for block in self.blocks for p in block.patches]
        for patch in patches:
            patch.reset()
        self.patched = True
        return [p for patch in patches for p in patch.parameters()]

    # the name in result tables, and the paper the model follows
    display_name = "PeterRec"
    reference = (
        "Yuan et al., Parameter-Efficient Transfer from Sequential Behaviors for User Modeling "
        "and Recommendation, SIGIR 2020"
    )
