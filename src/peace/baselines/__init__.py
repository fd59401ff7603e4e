"""The paper's competitors (Sec. 5.1.2, A.3), each behind PEACE's interface.

Every competitor is a :class:`peace.baselines.base.TransferModel`: it is pre-trained on the
source domains by :func:`peace.flows.pretrain.pretrain` (``architecture=NAME``) with the
entity-oriented strategy of A.3, then fine-tuned per target domain with the same DeepFM head as
PEACE (:class:`peace.flows.rankers.PeaceRanker`), or, for Tiger, applied zero-shot. DeepFM itself is
:class:`peace.flows.rankers.DeepFMRanker` (profile features only, no pre-training).
"""

from __future__ import annotations

from collections.abc import Callable

from peace.baselines.base import SourceContext, TransferModel
from peace.config import PeaceConfig


def _registry() -> dict[str, Callable[[SourceContext, PeaceConfig], TransferModel]]:
    from peace.baselines.comirec import ComiRec
    from peace.baselines.sasrec import SASRec

    registry: dict[str, Callable[[SourceContext, PeaceConfig], TransferModel]] = {
        "SASRec": SASRec,
        "ComiRec": ComiRec,
    }
    from peace.baselines.bert4rec import BERT4Rec
    from peace.baselines.paup import PAUP
    from peace.baselines.peterrec import PeterRec

    registry["BERT4Rec"] = BERT4Rec
    registry["PeterRec"] = PeterRec
    registry["PAUP"] = PAUP
    from peace.baselines.pcrec import PCRecD, PCRecL
    from peace.baselines.simgcl import SimGCL
    from peace.baselines.tiger import Tiger

    registry["SimGCL"] = SimGCL
    registry["PCRec-L"] = PCRecL
    registry["PCRec-D"] = PCRecD
    registry["Tiger"] = Tiger
    return registry


#: Pre-trained competitors fine-tuned with the DeepFM head (Table 2).
FINE_TUNED = (
    "SASRec",
    "BERT4Rec",
    "PeterRec",
    "PAUP",
    "ComiRec",
    "SimGCL",
    "PCRec-L",
    "PCRec-D",
)
#: Zero-shot competitors (Table 3).
ZERO_SHOT = ("Tiger",)


def competitor_names() -> list[str]:
    return list(_registry())


def build_competitor(name: str, ctx: SourceContext, cfg: PeaceConfig) -> TransferModel:
    """The competitor ``name`` for the id spaces and pre-training pairs of ``ctx``."""
    registry = _registry()
    if name not in registry:
        raise ValueError(f"unknown competitor {name!r}; choose from {sorted(registry)}.")
    return registry[name](ctx, cfg)
