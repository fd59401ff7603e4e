"""Online rankers: the offline model's scores from stored vectors and a few small tensor ops.

* :class:`ZeroShotScorer` is the zero-shot ranker of Sec. 4.4/4.5, exactly
  :meth:`peace.nn.peace.PEACE.zero_shot_scores` with the run's ``eval.zero_shot_scorer``: by
  default (``inner``) the inner product of the universal user vector z_u (Eq. 2) and the item
  vector; ``inner-enhanced`` uses the prototype-enhanced user vector (Eq. 8-9, then Eq. 2) and
  ``decoder`` the Eq. 3 decoder. Its inputs are the user's stored interests z^A (Eq. 1) and
  universal vector and the stored item vectors; no graph, no history.
* :class:`NormalRanker` is a published fine-tuned ranker (Eq. 11): the same user vectors, the
  item vector and the DeepFM profile codes through :class:`peace.nn.heads.FineTuneHead`.
* :class:`UserVectors` are a known user's stored vectors, the input of both.

The approximate inner-product index that picks candidates from large catalogues is
:mod:`peace.serve.index`; a served domain (catalogue, rankers, index) is
:class:`peace.serve.domains.DomainState`.

The prototype-enhanced user vectors (used by the normal ranker, and by the zero-shot ranker in
the ``inner-enhanced`` and ``decoder`` modes) are the costly part. Item-side work is done once
per catalogue, not per request: the top-K prototypes of every item (Eq. 5 and 8 depend on the
item alone). A request then computes Eq. 8-9 on each item's K kept prototypes with the linear
steps merged once per loaded scorer, as the offline model does (:mod:`peace.nn.enhanced`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from peace.nn.enhanced import (
    TIE_TOLERANCE,
    FoldedWeights,
    ItemKeys,
    enhanced_user_vectors,
    item_keys,
)
from peace.nn.heads import FineTuneHead
from peace.nn.mlp import MLP
from peace.nn.peace import decoder_input, decoder_width
from peace.nn.prototypes import Prototypes
from peace.nn.user_encoder import AttentiveFusion
from peace.store import (
    USER_PARTS,
    StoreError,
    StoreVersion,
    column_array,
    load_manifest,
    read_arrow,
    string_array,
    verify_files,
)

CHUNK = 256
"""Candidates scored together; larger requests are processed in chunks (bounded memory)."""

RankerName = Literal["normal", "zero-shot", "popularity-fallback"]


# --------------------------------------------------------------------------- zero-shot ranker
ZeroShotMode = Literal["inner", "inner-enhanced", "decoder"]
ZERO_SHOT_MODES: tuple[str, ...] = ("inner", "inner-enhanced", "decoder")


class ZeroShotScorer(nn.Module):
    """The zero-shot ranker on stored vectors, for each scorer of ``eval.zero_shot_scorer``.

    * ``inner`` (default): the universal encoding z_u (Eq. 2 over the plain interests) . z_i;
    * ``inner-enhanced``: the prototype-enhanced user vector (Eq. 8-9, then Eq. 2) . z_i;
    * ``decoder``: the pre-training decoder of Eq. 3 on (enhanced user vector, z_i).

    Each equals :meth:`peace.nn.peace.PEACE.zero_shot_scores` with the same scorer. The normal
    ranker uses :meth:`user_vectors` (the enhanced vectors) whatever the mode.

    Args:
        dim: d.
        n_prototypes: n.
        top_k: K of Eq. 8.
        mlp_hidden: hidden widths of the Eq. 9 MLP (and of the Eq. 3 decoder).
        attention_dim: rows of W in Eq. 2.
        use_pea: prototype-enhanced attention on (off: Eq. 2 on the plain interests).
        mode: the zero-shot scorer.
        user_prior: Eq. 2 adds the learned vector shared by all users (``model.user_prior``).
        prior_weight: ``eval.zero_shot_prior``, the weight of the items' source-entity prior
            that a served domain adds to :meth:`scores` (:class:`peace.serve.domains.DomainState`).
        profile_weight: ``eval.zero_shot_profile_prior``, the weight of the items' source
            profile prior that a served domain adds as well; ``profile_fallback`` is the
            profile prior of an item added at run time (the store does not know its profile).
        states: S, the evaluated states whose inner scores the zero-shot score averages
            (``eval.zero_shot_states = "evaluated"``; ``inner`` only). A served domain then
            scores one inner product of the states' vectors side by side (``[*, S * d]``, the
            user's scaled by 1/S; :meth:`peace.serve.domains.DomainState.state_scores`).
        decoder_interactions: Eq. 3's MLP also reads z_u * h_e and z_u . h_e
            (``model.decoder_interactions``).
    """

    def __init__(
        self,
        dim: int,
        n_prototypes: int,
        top_k: int,
        mlp_hidden: tuple[int, ...],
        attention_dim: int,
        use_pea: bool = True,
        mode: str = "inner",
        user_prior: bool = False,
        prior_weight: float = 0.0,
        states: int = 1,
        profile_weight: float = 0.0,
        profile_fallback: float = 0.0,
        decoder_interactions: bool = False,
    ) -> None:
        super().__init__()
        if mode not in ZERO_SHOT_MODES:
            raise StoreError(f"zero-shot scorer {mode!r}: expected one of {ZERO_SHOT_MODES}.")
        if states > 1 and mode != "inner":
            raise StoreError(
                f"zero-shot scorer {mode!r}: the mean of {states} states is served for the "
                "'inner' scorer only."
            )
        self.dim, self.use_pea, self.mode, self.states = dim, use_pea, mode, int(states)
        self.prior_weight = float(prior_weight)
        self.profile_weight, self.profile_fallback = float(profile_weight), float(profile_fallback)
        self.prototypes = Prototypes(dim, n_prototypes, top_k, mlp_hidden)
        self.fusion = AttentiveFusion(dim, attention_dim, user_prior)
        self.decoder_interactions = bool(decoder_interactions)
        self.decoder = MLP(decoder_width(dim, self.decoder_interactions), mlp_hidden, 1)
        self._folded: FoldedWeights | None = None
        self.register_load_state_dict_post_hook(self._forget_folded)

    @staticmethod
    def _forget_folded(module: nn.Module, incompatible: Any) -> None:
        module._folded = None  # type: ignore[assignment]

    @classmethod
    def from_version(cls, version: StoreVersion, mode: str | None = None) -> ZeroShotScorer:
        """The scorer of a store version (weights from ``scorer.safetensors``); ``mode``
        defaults to the run's ``eval.zero_shot_scorer``."""
        dims = version.manifest["dims"]
        if mode is None:
            mode = (
                version.manifest.get("config", {}).get("eval", {}).get("zero_shot_scorer", "inner")
            )
        scorer = cls(
            int(dims["dim"]),
            int(dims["n_prototypes"]),
            int(dims["top_k_prototypes"]),
            tuple(dims["mlp_hidden"]),
            int(dims["attention_dim"]),
            bool(dims["use_pea"]),
            str(mode),
            bool(dims.get("user_prior", False)),
            version.prior_weight,
            version.zero_shot_states,
            version.profile_weight,
            version.profile_fallback,
            bool(dims.get("decoder_interactions", False)),
        )
        scorer.load_state_dict(version.scorer_state, strict=True)
        scorer.eval()
        scorer.requires_grad_(False)
        return scorer

    @property
    def weighs_items(self) -> bool:
        """Whether the zero-shot score adds a per-item term (a prior with a nonzero weight)."""
        return self.prior_weight != 0.0 or self.profile_weight != 0.0

    def prior_bias(self, prior: Tensor | None, n: int) -> Tensor:
        """``[n]`` w * prior: the source-entity prior term alone (what a normal ranker's head
        adds to its zero-shot score; zeros when w = 0)."""
        if self.prior_weight == 0.0:
            return torch.zeros(n)
        if prior is None:
            raise ValueError("this domain's zero-shot score weighs the prior of new items.")
        return self.prior_weight * prior

    def item_bias(self, prior: Tensor | None, profile_prior: Tensor | None, n: int) -> Tensor:
        """``[n]`` the per-item term the zero-shot score adds: w * prior + w_p * profile prior
        (a missing ``profile_prior``, as for items added at run time, is ``profile_fallback``)."""
        bias = self.prior_bias(prior, n)
        if self.profile_weight != 0.0:
            profile = (
                torch.full((n,), self.profile_fallback) if profile_prior is None else profile_prior
            )
            bias = bias + self.profile_weight * profile
        return bias

    @property
    def top_k(self) -> int:
        return self.prototypes.top_k

    @torch.no_grad()
    def item_keys(self, items: Tensor) -> ItemKeys | None:
        """Top-K prototypes of items ``[I, d]`` (Eq. 5, 8); None when PEA is off."""
        if not self.use_pea:
            return None
        return item_keys(self.prototypes, items)

    @torch.no_grad()
    def universal(self, interests: Tensor) -> Tensor:
        """Eq. 2 on the plain interests ``[*, M, d] -> [*, d]`` (target independent)."""
        return self.fusion(interests)

    @torch.no_grad()
    def user_vectors(
        self, interests: Tensor, items: Tensor, keys: ItemKeys | None = None
    ) -> Tensor:
        """One user's vector towards each item: ``[M, d]``, ``[C, d]`` -> ``[C, d]``.

        Equals ``PEACE.user_vectors(interests[None], items[None])[0]``. Large ``C`` is processed
        in chunks of :data:`CHUNK` items to bound memory.
        """
        c = items.shape[0]
        if not self.use_pea:
            return self.fusion(interests).unsqueeze(0).expand(c, -1)
        if c > CHUNK:
            return torch.cat(
                [
                    self.user_vectors(
                        interests,
                        items[s : s + CHUNK],
                        None if keys is None else keys.take(slice(s, s + CHUNK)),
                    )
                    for s in range(0, c, CHUNK)
                ]
            )
        if keys is not None:
            keys = ItemKeys(keys.top.unsqueeze(0), keys.ties.unsqueeze(0))
        return enhanced_user_vectors(
            self.prototypes, self.fusion, interests[None], items[None], keys, self.folded()
        )[0]

    def folded(self) -> FoldedWeights:
        """The merged weights (computed on first use, without autograd: the cache holds no
        graph; cleared when weights load)."""
        if self._folded is None:
            with torch.no_grad():
                self._folded = FoldedWeights.of(self.prototypes, self.fusion)
        return self._folded

    @torch.no_grad()
    def scores(
        self,
        interests: Tensor,
        items: Tensor,
        keys: ItemKeys | None = None,
        universal: Tensor | None = None,
    ) -> Tensor:
        """Zero-shot scores ``[C]`` of one user (interests ``[M, d]``, optionally their stored
        universal vector ``[d]``) for items ``[C, d]``."""
        if self.mode == "inner":
            z = self.universal(interests) if universal is None else universal
            return items @ z
        users = self.user_vectors(interests, items, keys)
        if self.mode == "decoder":
            pair = decoder_input(users, items, self.decoder_interactions)
            return self.decoder(pair).squeeze(-1)
        return (users * items).sum(-1)

    @torch.no_grad()
    def query(self, interests: Tensor, universal: Tensor | None = None) -> Tensor:
        """A single query vector for inner-product retrieval of candidates. ``inner``: z_u
        itself (retrieval is then exact up to the index's probing); otherwise the user vector
        enhanced towards the user's own universal vector (Eq. 8-9 with z_u as the target)."""
        z = self.universal(interests) if universal is None else universal
        if self.mode == "inner" or not self.use_pea:
            return z
        return self.user_vectors(interests, z.unsqueeze(0), None)[0]


def mean_entity_vectors(entity_vectors: Tensor, rows: Tensor) -> Tensor:
    """Item vectors from entity rows ``[I, 3]`` (-1 = none): mean of the entities' vectors.

    The same operations as :func:`peace.flows.rankers.item_vectors` (Sec. 4.4, footnote 4), so an
    item added at run time gets the vector the offline flow would have given it.
    """
    valid = (rows >= 0).unsqueeze(-1).float()
    vecs = entity_vectors[rows.clamp(min=0)] * valid
    return vecs.sum(1) / valid.sum(1).clamp(min=1.0)


# --------------------------------------------------------------------------- normal ranker
class NormalRanker:
    """A published fine-tuned ranker of one domain (Eq. 11), loaded without pickle.

    Attributes:
        manifest: the ranker's manifest (domain, store version, model hash, sizes, metrics).
        head: the :class:`FineTuneHead` with its trained weights.
        user_parts: the ranker's own Eq. 9 MLP and Eq. 2 attention weights
            (``finetune.tune_user_mlp``; None: the store version's serve it).
    """

    def __init__(
        self,
        path: Path,
        manifest: dict[str, Any],
        head: FineTuneHead,
        user_rows: dict[str, int],
        user_codes: Tensor,
        item_rows: dict[str, int],
        item_codes: Tensor,
        user_parts: dict[str, Tensor] | None = None,
    ) -> None:
        self.path, self.manifest, self.head = path, manifest, head
        self.user_parts = user_parts
        self.user_scorer: ZeroShotScorer | None = None
        """What computes the user vectors of Eq. 8-9 and Eq. 2 (:meth:`bind`)."""
        self.user_rows, self.user_codes = user_rows, user_codes  # [U + 1, F_u]
        self.item_rows, self.item_codes = item_rows, item_codes  # [I + 1, F_i]
        # The last row of each code table is "unknown" (all zero codes).
        self.user_fields = user_codes.shape[1]
        self.prior_weight = float(manifest["head"].get("affinity_prior", 0.0))
        """The weight of the catalogue's prior in the head's zero-shot score (0: z_u . z_i)."""
        self.affinity_states = int(manifest["head"].get("affinity_states", 1))
        """S: the head's zero-shot score is the mean over S evaluated states' inner products
        (1: the kept state's z_u . z_i)."""
        with torch.no_grad():  # DeepFM's item fields, once per ranker
            self.item_sums = head.deepfm.field_sums(item_codes, self.user_fields)

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @classmethod
    def load(cls, folder: str | Path, verify: bool = True) -> NormalRanker:
        """Read a ranker folder written by :func:`peace.flows.publish.finetune_and_publish`."""
        folder = Path(folder)
        manifest = load_manifest(folder)
        if manifest.get("kind") != "normal-ranker":
            raise StoreError(f"{folder}: not a published normal ranker.")
        if verify:
            verify_files(folder, manifest)
        h = manifest["head"]
        head = FineTuneHead(
            int(h["dim"]),
            [int(c) for c in h["cardinalities"]],
            tuple(h["mlp_hidden"]),
            int(h["fm_dim"]),
            tuple(h["deepfm_hidden"]),
            bool(h.get("interactions", False)),
        )
        head.load_state_dict(load_file(str(folder / "head.safetensors")), strict=True)
        head.eval()
        head.requires_grad_(False)
        fu, fi = int(h["user_fields"]), int(h["item_fields"])
        users = read_arrow(folder / "user_codes.arrow")
        ucodes = column_array(users, "codes", (fu,), np.int64)
        user_codes = torch.from_numpy(np.vstack([ucodes, np.zeros((1, fu), np.int64)]))
        user_rows = {u: i for i, u in enumerate(string_array(users, "user"))}
        items = read_arrow(folder / "item_codes.arrow")
        icodes = column_array(items, "codes", (fi,), np.int64)
        item_codes = torch.from_numpy(np.vstack([icodes, np.zeros((1, fi), np.int64)]))
        item_rows = {it: i for i, it in enumerate(string_array(items, "item"))}
        parts = load_file(str(folder / USER_PARTS)) if h.get("user_parts") else None
        return cls(folder, manifest, head, user_rows, user_codes, item_rows, item_codes, parts)

    def bind(self, scorer: ZeroShotScorer) -> NormalRanker:
        """Compute user vectors with ``scorer`` (the store version's zero-shot scorer), or, for
        a ranker with its own Eq. 9 MLP and Eq. 2 attention, with a copy of it holding those.

        Raises:
            StoreError: the ranker's parts do not fit the scorer, or its prototypes P differ
                from the store version's (P chooses the items' keys of Eq. 8).
        """
        if self.user_parts is None:
            self.user_scorer = scorer
            return self
        own = copy.deepcopy(scorer)
        try:
            missing, unexpected = own.load_state_dict(self.user_parts, strict=False)
        except RuntimeError as exc:
            msg = f"{self.path / USER_PARTS}: does not fit the store version ({exc})"
            raise StoreError(msg) from exc
        foreign = [k for k in missing if not k.startswith("decoder.")] + list(unexpected)
        if foreign or not torch.equal(own.prototypes.weight, scorer.prototypes.weight):
            raise StoreError(
                f"{self.path / USER_PARTS}: not the store version's prototypes and parts "
                f"({foreign[:3] or 'prototypes P differ'}); publish the ranker again."
            )
        own.requires_grad_(False)
        own.eval().folded()  # merged once here, not on the first request
        self.user_scorer = own
        return self

    def user_vectors(
        self, scorer: ZeroShotScorer, interests: Tensor, items: Tensor, keys: ItemKeys | None
    ) -> Tensor:
        """The head's user vectors ``[C, d]``: :meth:`ZeroShotScorer.user_vectors` of the bound
        scorer (``scorer``, the store version's, when none is bound)."""
        own = self.user_scorer
        if own is None:
            if self.user_parts is not None:
                raise StoreError(f"{self.path}: a ranker with its own user parts needs bind().")
            own = scorer
        return own.user_vectors(interests, items, keys)

    def code_rows(self, items: list[str]) -> Tensor:
        """Rows of ``item_codes`` for item ids (unknown items -> the all-zero row)."""
        unknown = len(self.item_codes) - 1
        return torch.as_tensor([self.item_rows.get(i, unknown) for i in items], dtype=torch.long)

    @torch.no_grad()
    def scores(
        self,
        user: str,
        user_vecs: Tensor,
        item_vecs: Tensor,
        code_rows: Tensor,
        universal: Tensor | None = None,
        bias: Tensor | None = None,
        states: Tensor | None = None,
    ) -> Tensor:
        """Eq. 11 logits ``[C]`` (sigmoid gives the probability); ``universal`` ``[d]`` is the
        user's universal encoding, needed by a head with interaction features; ``bias`` ``[C]``
        the items' weighted prior, needed by a head whose zero-shot score adds it
        (``prior_weight``, ``finetune.affinity = "zero-shot"``); ``states`` ``[C]`` the mean
        over the S evaluated states of z_u . z_i
        (:meth:`peace.serve.domains.DomainState.state_scores`), needed by a head whose zero-shot
        score is that mean (``affinity_states`` = S > 1)."""
        row = self.user_rows.get(user, len(self.user_codes) - 1)
        deepfm = self.head.deepfm
        user_sums = deepfm.field_sums(self.user_codes[row : row + 1], 0)  # broadcast over C
        profile = deepfm.combine(user_sums, self.item_sums.take(code_rows))  # [C, 1 + h]
        affinity = None
        if self.head.interactions:
            if universal is None:
                raise StoreError("this ranker's head needs the user's universal encoding.")
            if self.affinity_states > 1:
                if states is None:
                    raise StoreError(
                        f"{self.path}: this ranker's head reads the mean of "
                        f"{self.affinity_states} evaluated states' zero-shot scores, and the "
                        "store version serves none; export the run again."
                    )
                affinity = states
            else:
                affinity = item_vecs @ universal
            if self.prior_weight != 0.0:
                if bias is None:
                    raise StoreError(
                        f"{self.path}: this ranker's head reads the zero-shot score with the "
                        "source-entity prior, and the store version serves none; export the run "
                        "again with its eval.zero_shot_prior."
                    )
                affinity = affinity + bias
        return self.head.score(user_vecs, item_vecs, profile, affinity)


@dataclass(frozen=True)
class UserVectors:
    """A known user's stored vectors."""

    id: str
    interests: Tensor
    """[M, d] interest vectors z^A (Eq. 1)."""
    universal: Tensor
    """[d] universal vector z_u (Eq. 2)."""
    zero_shot: Tensor | None = None
    """[S * d] the S evaluated states' z_u side by side, scaled by 1/S
    (:attr:`peace.store.StoreVersion.user_zero_shot`); None when the kept state is served."""

    @classmethod
    def of(cls, version: StoreVersion, user: str, row: int) -> UserVectors:
        """The stored vectors of ``user`` at ``row`` of ``version``."""
        states = version.user_zero_shot
        return cls(
            user,
            version.interests[row],
            version.universal[row],
            None if states is None else states[row],
        )


__all__ = [
    "CHUNK",
    "TIE_TOLERANCE",
    "FoldedWeights",
    "InnerProductIndex",
    "ItemKeys",
    "NormalRanker",
    "RankerName",
    "UserVectors",
    "ZeroShotScorer",
    "ZeroShotMode",
    "faiss_available",
    "mean_entity_vectors",
]

# The approximate index lives in peace.serve.index; its names are importable from here too.
from peace.serve.index import InnerProductIndex, faiss_available  # noqa: E402
