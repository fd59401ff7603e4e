"""Fine-tuning flow output (Sec. 4.5): train a target domain's normal ranker and publish it.

"With accumulated interactions, as well as the profile data, PEACE would load the pre-trained
parameters for fine-tuning, and then upload the well-trained model to the normal ranker."

:func:`finetune_and_publish` loads a pre-trained run, trains the normal ranker of one target
domain (Eq. 11-12, :func:`peace.flows.finetune.fit_ranker`) on the domain's chronological
training split, keeps the epoch with the best validation NDCG@10, and publishes:

    STORE/rankers/<domain>/<version>/
        manifest.json       domain, the store version and model hash it was trained on, sizes,
                            training log, per-file sha256
        head.safetensors    the FineTuneHead weights (MLP and DeepFM of Eq. 11)
        user_parts.safetensors  with ``finetune.tune_user_mlp``: the head's fine-tuned copies of
                            Eq. 9's MLP and Eq. 2's attention (P as in the store version), which
                            the service uses for this domain's user vectors in place of the
                            store version's
        user_codes.arrow    user -> profile codes x_u
        item_codes.arrow    item -> profile codes x_i (the item id is one of the fields)
    STORE/rankers/<domain>/CURRENT      the version served (swapped atomically)

Publication is atomic like a store version's (temporary folder, fsync, rename, pointer swap).
The ranker is trained in the lightweight mode of Sec. 4.5 (frozen pre-trained encoders), so the
vectors of the store version it was trained on stay valid for it; the service uses it only with a
store version computed from the same checkpoint (same ``model_hash``).

Example::

    result = finetune_and_publish("runs/r1", ds, "store", "travel")
    result.version, result.log[-1]
    peace.store.list_rankers("store", "travel")       # published rankers; roll back with
                                                       # peace.store.set_current_ranker
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from safetensors.torch import save_file

from peace.data.dataset import Dataset
from peace.data.splits import split_target
from peace.flows.finetune import fit_ranker, ranking_task
from peace.flows.offline_inference import model_hash
from peace.flows.pretrained import dataset_fingerprint, load_pretrained
from peace.flows.rankers import PeaceRanker, TargetDomain, zero_shot_prior
from peace.store import (
    FORMAT,
    POINTER,
    USER_PARTS,
    StoreError,
    StoreVersion,
    code_column,
    current_version,
    new_version_id,
    publish_folder,
    ranker_root,
    write_arrow,
    write_pointer,
)

__all__ = ["PublishResult", "finetune_and_publish"]


@dataclass
class PublishResult:
    """What :func:`finetune_and_publish` trained and where it went."""

    version: str
    """Id of the published ranker."""
    store_version: str
    """The store version it was trained against."""
    path: Path
    ranker: PeaceRanker
    """The trained offline ranker (same weights as the published head)."""
    target: TargetDomain
    log: list[dict[str, Any]] = field(default_factory=list)


def finetune_and_publish(
    run: str | Path,
    ds: Dataset,
    store: str | Path,
    domain: str,
    show_progress: bool = False,
    make_current: bool = True,
    overrides: list[str] | None = None,
) -> PublishResult:
    """Fine-tune the normal ranker of ``domain`` and publish it next to the current store version.

    Args:
        run: the pre-training run the store's current version was exported from.
        ds: the dataset (its target domain ``domain`` provides the training rows).
        store: the store folder.
        domain: a target domain of ``ds``.
        show_progress: progress bars.
        make_current: point ``STORE/rankers/<domain>/CURRENT`` at the new ranker.
        overrides: ``section.key=value`` changes to the run's configuration (``finetune.*``).

    Raises:
        StoreError: no store version, or one exported from another checkpoint.
        KeyError / ValueError: unknown domain, or a source domain.
    """
    run, store = Path(run), Path(store)
    store_version = current_version(store)
    if store_version is None:
        raise StoreError(f"{store}: no published version; run `peace export` before fine-tuning.")
    version = StoreVersion.open(store, store_version, verify=False)
    digest = model_hash(run)
    if version.model_hash != digest:
        raise StoreError(
            f"{store}: the current version {store_version} was exported from another checkpoint "
            f"than {run}; run `peace export --run {run} --store {store}` first."
        )
    if version.manifest.get("dataset_fingerprint") != dataset_fingerprint(ds):
        raise StoreError(f"{store}: the current version was exported from another dataset.")
    d = ds.domain_index(domain)
    if ds.roles[d] != "target":
        raise ValueError(
            f"domain {domain!r} is a source domain; fine-tune a target domain "
            f"({[ds.domains[t] for t in ds.target_domains]})."
        )

    pre = load_pretrained(run, ds)
    cfg = pre.config.override(["finetune.freeze_encoders=true", *(overrides or [])])
    if not cfg.finetune.freeze_encoders:
        raise ValueError(
            "finetune.freeze_encoders=false: the published ranker must keep the "
            "pre-trained encoders frozen (lightweight mode of Sec. 4.5)."
        )
    if cfg.finetune.target_history > 0:
        raise ValueError(
            f"finetune.target_history = {cfg.finetune.target_history}: the service does not "
            "store users' target-domain histories yet; publish with finetune.target_history=0."
        )
    split = split_target(ds, d, cfg.eval.split)
    if len(split.train) == 0:
        raise ValueError(f"domain {domain!r} has no training rows; serve it zero-shot.")
    target = TargetDomain(ds, d)
    # The run's own prior term, which the store version exported from it serves.
    prior = zero_shot_prior(ds, pre, pre.config)
    ranker = PeaceRanker(pre, target, cfg, prior)
    prior_affinity = ranker.zero_shot is not None
    states = ranker.zero_shot.n_states if ranker.zero_shot is not None else 1
    if states > 1 and states != version.zero_shot_states:
        raise StoreError(
            f"{store}: the head would read the mean of {states} evaluated states' zero-shot "
            f"scores and store version {store_version} serves {version.zero_shot_states}; "
            "export the run without --kept-only, or fine-tune with --set "
            'finetune.affinity="inner-prior" (the kept state\'s score plus the prior).'
        )
    valid_task = ranking_task(split.valid, seen=split.train)
    log = fit_ranker(
        ranker,
        target,
        split.train,
        valid_task,
        cfg.finetune,
        cfg.seed,
        cfg.eval.ks,
        show_progress=show_progress,
    )
    ranker.eval()

    head_state = {k: v.detach().contiguous().clone() for k, v in ranker.head.state_dict().items()}
    parts = ranker.user_parts
    parts_state = (
        None
        if parts is None
        else {k: v.detach().contiguous().clone() for k, v in parts.state_dict().items()}
    )
    fc = cfg.finetune
    up, ip = ds.user_profiles, ds.item_profiles
    user_columns = list(up.columns) if up else []
    item_columns = [*(ip.columns if ip else []), "item_id"]
    root = ranker_root(store, domain)
    rid = new_version_id(root, digest)

    def build(tmp: Path) -> dict[str, Any]:
        save_file(head_state, str(tmp / "head.safetensors"), metadata={"domain": domain})
        if parts_state is not None:
            save_file(parts_state, str(tmp / USER_PARTS), metadata={"domain": domain})
        write_arrow(
            tmp / "user_codes.arrow",
            pa.table(
                {
                    "user": pa.array([str(u) for u in ds.users], pa.string()),
                    "codes": code_column(target.user_codes.numpy()),
                }
            ),
            sync=False,  # publish_folder flushes every file
        )
        write_arrow(
            tmp / "item_codes.arrow",
            pa.table(
                {
                    "item": pa.array([str(i) for i in ds.items[target.catalogue]], pa.string()),
                    "codes": code_column(target.item_codes.numpy()),
                }
            ),
            sync=False,  # publish_folder flushes every file
        )
        created = datetime.now(UTC)
        best = max(
            (e for e in log if np.isfinite(e.get("ndcg@10", np.nan))),
            key=lambda e: e["ndcg@10"],
            default=None,
        )
        return {
            "format": FORMAT,
            "kind": "normal-ranker",
            "version": rid,
            "domain": domain,
            "store_version": store_version,
            "model_hash": digest,
            "dataset_fingerprint": dataset_fingerprint(ds),
            "created": created.isoformat(timespec="seconds"),
            "created_unix": created.timestamp(),
            "run": str(run.resolve()),
            "train_rows": int(len(split.train)),
            "train_until": float(split.train["timestamp"].max()),
            "head": {
                "dim": cfg.model.dim,
                "cardinalities": [int(c) for c in target.cardinalities],
                "mlp_hidden": list(cfg.model.mlp_hidden),
                "fm_dim": fc.fm_dim,
                "deepfm_hidden": list(fc.deepfm_hidden),
                "interactions": bool(fc.interaction_features),
                # the head's zero-shot score adds the store's prior term (finetune.affinity)
                "affinity_prior": prior[0] if prior_affinity else 0.0,
                # ... and is the mean over the run's evaluated states (eval.zero_shot_states)
                "affinity_states": states,
                "user_fields": len(user_columns),
                "item_fields": len(item_columns),
                "user_columns": user_columns,
                "item_columns": item_columns,
                # the user vectors come from the ranker's own Eq. 9 MLP and Eq. 2 attention
                "user_parts": parts_state is not None,
            },
            "finetune": {
                k: (list(v) if isinstance(v, tuple) else v)
                for k, v in cfg.to_dict()["finetune"].items()
            },
            "best_epoch": None if best is None else best["epoch"],
            "log": [
                {
                    k: (
                        float(v)
                        if isinstance(v, float) and np.isfinite(v)
                        else (None if isinstance(v, float) else v)
                    )
                    for k, v in e.items()
                }
                for e in log
            ],
        }

    path = publish_folder(root, rid, build)
    if make_current:
        write_pointer(root / POINTER, rid)
    return PublishResult(
        version=rid, store_version=store_version, path=path, ranker=ranker, target=target, log=log
    )
