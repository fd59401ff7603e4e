"""Pre-training flow (Sec. 4.5): entity-oriented pre-training on the source domains (Eq. 1-10).

Every source record <u, i, y> before the cut-off T becomes |phi(i)| user-entity pairs <u, e, y>
(Sec. 4.1.2); ``neg_ratio`` negative items per positive are drawn from the same source domain
(DESIGN.md, decision 2). The user's history of a record is their source behaviour strictly before
the record's time. The user encoding (Eq. 1) is computed once per record and shared by all its
pairs; only the prototype-enhanced part (Eq. 8-9) and the decoder run per pair.

The last ``VALID_FRACTION`` of the pre-training records (by time, still before T) is held out.
Every ``pretrain.eval_every`` steps (or once per epoch) they are ranked against their source
domain's catalogue by the served zero-shot score; the state with the best held-out NDCG@10 is kept
(the held-out loss of Eq. 4 where there is nothing to rank). With ``pretrain.holdout_items``, a
share of each source domain's items is kept out of training and their records are ranked among
them instead. A kept-out item is as new as a target domain's item: it is in no user's history,
and the entities only kept-out items link to count as unseen (``model.unseen_entities``), also
when the run is served (from histories that hold every source item again, as after any
pre-training). No target-domain row is read here.

The parts: records, negatives and batches in :mod:`peace.flows.records`; held-out evaluation and
selection in :mod:`peace.flows.selection`; the run folder and :class:`Pretrained` in
:mod:`peace.flows.pretrained`; the models by name in :mod:`peace.models`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from peace.config import PeaceConfig, PretrainConfig
from peace.data.dataset import Dataset
from peace.data.history import HistoryIndex
from peace.data.splits import pretrain_cutoff, split_targets
from peace.flows import checkpoints, distributed
from peace.flows.checkpoints import CheckpointError
from peace.flows.pretrained import (
    Pretrained,
    dataset_fingerprint,
    load_states,
    load_weights,
    save_epoch,
    source_items_fingerprint,
)
from peace.flows.records import (
    NegativeSampler,
    batch_entity_table,
    make_batch,
    make_records,
    source_catalogue,
)
from peace.flows.selection import (
    VALID_FRACTION,
    evaluate_held_out,
    evaluations_since_best,
    make_held_out,
    selection_criterion,
)
from peace.models import build_context, build_model, held_out_items
from peace.nn.entity_encoder import NeighbourSampler
from peace.nn.peace import PretrainBatch, SourceCatalogue
from peace.utils import (
    adam,
    autocast,
    deterministic_on_cpu,
    progress,
    resolve_device,
    seed_everything,
)


def objective(
    model: torch.nn.Module,
    table: torch.Tensor,
    batch: PretrainBatch,
    catalogue: SourceCatalogue | None,
    pc: PretrainConfig,
    architecture: str = "PEACE",
) -> dict[str, torch.Tensor]:
    """One step's losses: Eq. 10 with the configured terms beyond the paper (L_served,
    ``pretrain.served_loss``; Eq. 4 on z_u, ``pretrain.universal_weight``; Eq. 4's own weight,
    ``pretrain.enhanced_weight``) for PEACE, a competitor's own pre-training losses otherwise.
    ``catalogue``: L_served's source items."""
    if architecture != "PEACE":  # a competitor's losses take no PEACE-only term
        return model.pretrain_losses(table, batch, pc.tau, pc.gamma)
    return model.pretrain_losses(
        table,
        batch,
        pc.tau,
        pc.gamma,
        pc.served_loss,
        pc.served_weight,
        catalogue,
        pc.universal_weight,
        pc.enhanced_weight,
    )


@deterministic_on_cpu
def pretrain(
    ds: Dataset,
    cfg: PeaceConfig,
    out: str | Path | None = None,
    show_progress: bool = True,
    resume: bool = False,
    warm_start: str | Path | None = None,
    architecture: str = "PEACE",
    device: str | torch.device | None = None,
) -> Pretrained:
    """Pre-train PEACE (or a competitor) on the source domains of ``ds`` (the pre-training flow).

    Args:
        ds: the dataset.
        cfg: the configuration (its seed fixes initialisation, sampling and order).
        out: run folder for the checkpoint, config and log; None keeps everything in memory.
        show_progress: progress bars.
        resume: continue an interrupted run in ``out`` from its last finished epoch.
        warm_start: a run folder whose weights initialise this run (new data, same id spaces).
        architecture: ``"PEACE"`` or a competitor, a name of :data:`peace.models.MODEL_NAMES`;
            every model sees the same records, batches and negatives, and is kept by the same
            held-out rule.
        device: where PEACE trains: ``cpu`` or ``cuda[:N]``; None reads ``PEACE_DEVICE``
            (default ``cpu``). Records, negatives and subgraphs are drawn on the CPU with the
            seeded generator either way; the returned model is on the CPU. Competitors train on
            the CPU (``PEACE_DEVICE`` does not apply to them). A GPU does not give the CPU's
            numbers bit for bit.
    """
    if device is None and architecture != "PEACE":
        device = "cpu"
    device = resolve_device(device)
    if device.type != "cpu" and architecture != "PEACE":
        raise ValueError(
            f"{architecture}: competitors pre-train on the CPU only; "
            f"--device {device} is for PEACE."
        )
    gen = seed_everything(cfg.seed)
    ranks = distributed.from_environment(device)  # a torchrun process group, or None
    if ranks is not None:
        device = ranks.device  # cuda: the GPU of this process's local rank
    pc = cfg.pretrain
    splits = split_targets(ds, cfg.eval.split)
    cutoff = pretrain_cutoff(splits, pc.cutoff)
    kept_out = held_out_items(ds, cfg)  # pretrain.holdout_items: new items, never trained
    history = HistoryIndex(ds, cfg.model.history_length, exclude_items=kept_out)
    records = make_records(ds, history, cutoff)
    if len(records) == 0:
        raise ValueError(
            f"{ds.root}: no source interaction before the pre-training cut-off {cutoff}; "
            "check the timestamps or set pretrain.cutoff."
        )
    n_valid = int(len(records) * VALID_FRACTION) if len(records) >= 200 else 0
    train = records.subset(np.arange(len(records) - n_valid))
    held_out = records.subset(np.arange(len(records) - n_valid, len(records)))
    cold = None
    allowed = None
    if kept_out is not None:
        allowed = ~kept_out
        cold = (kept_out, records.subset(np.flatnonzero(kept_out[records.items])))
        train = train.subset(np.flatnonzero(allowed[train.items]))
    context = None
    if architecture != "PEACE":
        context = build_context(
            ds, cfg, train.users, train.items, train.labels, history.sequence_length
        )
    model, graph = build_model(ds, cfg, architecture, context)
    model.to(device)
    placed = graph.to(device)  # the graph the model encodes; samplers keep the CPU copy
    item_entities = torch.as_tensor(ds.item_entities, dtype=torch.long)
    counts = np.bincount(train.items[train.labels > 0], minlength=ds.num_items)
    negatives = NegativeSampler(ds, counts, pc.negatives, pc.neg_alpha, allowed)
    source_position = torch.full((len(ds.domains),), -1, dtype=torch.long)
    source_position[ds.source_domains] = torch.arange(len(ds.source_domains))
    universal = architecture == "PEACE" and cfg.model.use_pea and pc.universal_weight > 0
    served = architecture == "PEACE" and pc.served_loss != "none"
    catalogue = source_catalogue(ds, allowed) if served else None
    sampled = cfg.model.graph_sampling == "sampled" and architecture == "PEACE"
    sampler = NeighbourSampler(graph, cfg.model.fanout) if sampled else None
    optimizer = adam(model.parameters(), pc.lr, pc.weight_decay, pc.fused_adam)

    def step_losses(batch: PretrainBatch) -> dict[str, torch.Tensor]:
        table, batch, cat = batch_entity_table(
            model, placed, batch, sampler, gen, catalogue, pc.served_sample
        )
        with autocast(device, pc.precision):  # the entity encoder above stays in float32
            return objective(model, table, batch, cat, pc, architecture)

    step_losses_of = distributed.objective(model, step_losses, ranks)
    run = Path(out) if out is not None else None
    writer = run if ranks is None or ranks.writes else None  # rank 0 writes the run folder
    show_progress = show_progress and (ranks is None or ranks.writes)
    log: list[dict] = []
    start_epoch = 0
    fingerprint = dataset_fingerprint(ds)
    if warm_start is not None:
        load_weights(model, Path(warm_start), fingerprint)
    if resume and run is not None:
        checkpoints.verify_run(run, ["trainer.pt", "log.json"])  # also ends a cut-short commit
    if resume and run is not None and (run / "trainer.pt").exists():
        try:
            state = torch.load(run / "trainer.pt", weights_only=True, map_location="cpu")
            load_weights(model, run, fingerprint, name="last.safetensors")
            optimizer.load_state_dict(state["optimizer"])
            gen.set_state(state["generator"])
            start_epoch = int(state["epoch"])
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - any unreadable trainer state
            raise checkpoints.damaged(run / "trainer.pt", exc) from None
        log = checkpoints.read_json(run / "log.json")

    held = make_held_out(
        ds, history, train, held_out, item_entities, negatives, cfg, source_position, cold
    )
    # eval.zero_shot_states = "evaluated": every evaluation's weights, for PEACE's zero-shot score
    keep_states = cfg.eval.zero_shot_states == "evaluated" and architecture == "PEACE"
    states = load_states(run, cfg, len(log)) if keep_states and run is not None and log else []
    unsaved: dict[int, dict[str, torch.Tensor]] = {}
    best = min((selection_criterion(e) for e in log), default=float("inf"))
    stale = evaluations_since_best(log)
    best_state = None
    improved_since_save = False
    steps = int(log[-1].get("step", 0)) if log else 0
    stop = False
    sums = {"total": 0.0, "et": 0.0, "cp": 0.0, "ip": 0.0, "uni": 0.0}
    n_batches = 0
    t0 = time.perf_counter()

    def evaluate(epoch: int) -> None:
        """One held-out evaluation: log it, keep the best state, count patience."""
        nonlocal best, best_state, stale, improved_since_save, stop, sums, n_batches, t0
        scores = evaluate_held_out(model, placed, ds, history, held, sampler, cfg, item_entities)
        sums = distributed.mean_over_ranks(sums, ranks)
        entry = {
            "epoch": epoch,
            "step": steps,
            "loss": sums["total"] / max(n_batches, 1),
            "loss_et": sums["et"] / max(n_batches, 1),
            "loss_cp": sums["cp"] / max(n_batches, 1),
            "loss_ip": sums["ip"] / max(n_batches, 1),
            **({"loss_uni": sums["uni"] / max(n_batches, 1)} if universal else {}),
            **scores,
            "valid_popularity_ndcg": held.popularity_ndcg,
            "seconds": time.perf_counter() - t0,
            "pairs": int(n_batches * pc.batch_size * (1 + pc.neg_ratio)),
        }
        log.append(entry)
        if keep_states:
            states.append({k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
            unsaved[len(log) - 1] = states[-1]
        ranked = "valid_ndcg" in entry  # a ranking measure: ties are no improvement
        if selection_criterion(entry) < best or (not ranked and selection_criterion(entry) <= best):
            best, stale, improved_since_save = selection_criterion(entry), 0, True
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if pc.patience and stale >= pc.patience:
                stop = True
        sums = dict.fromkeys(sums, 0.0)
        n_batches = 0
        t0 = time.perf_counter()

    # A resumed run that had already stopped (step budget or patience) trains no further.
    stop = bool(log) and (
        bool(pc.max_steps and steps >= pc.max_steps) or bool(pc.patience and stale >= pc.patience)
    )
    for epoch in range(start_epoch, pc.epochs):
        if stop:
            break
        model.train()
        order = torch.randperm(len(train), generator=gen).numpy()
        batches = range(0, len(train), pc.batch_size)
        evaluated = False
        for s in progress(
            batches,
            f"pre-train epoch {epoch + 1}/{pc.epochs}",
            total=len(batches),
            enabled=show_progress,
        ):
            batch = make_batch(
                item_entities,
                history,
                train,
                order[s : s + pc.batch_size],
                negatives,
                pc.neg_ratio,
                gen,
                source_position,
            )
            if ranks is not None:
                batch = distributed.shard(batch, ranks)
            losses = step_losses_of(batch)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimizer.step()
            for k, v in losses.items():
                sums[k] += float(v.detach())
            n_batches += 1
            steps += 1
            evaluated = False
            if pc.eval_every and steps % pc.eval_every == 0:
                evaluate(epoch + 1)
                evaluated = True
            if stop or (pc.max_steps and steps >= pc.max_steps):
                stop = True
                break
        if not evaluated:
            evaluate(epoch + 1)
        if writer is not None:
            save_epoch(
                writer,
                model,
                optimizer,
                gen,
                epoch + 1,
                log,
                cfg,
                ds,
                cutoff,
                best_state if improved_since_save else None,
                unsaved,
            )
            improved_since_save = False
            unsaved.clear()
        if stop:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    elif run is not None and (run / "model.safetensors").exists():
        load_weights(model, run, fingerprint)
    model.cpu().eval()  # later flows (fine-tuning, export, serving) run on the CPU
    sources = tuple(ds.domains[d] for d in ds.source_domains)
    if kept_out is not None:  # served, as a loaded run is, from every source item's behaviour
        history = HistoryIndex(ds, cfg.model.history_length)
    return Pretrained(
        model=model,
        graph=graph,
        history=history,
        config=cfg,
        cutoff=cutoff,
        log=log,
        source_domains=sources,
        source_items=source_items_fingerprint(ds),
        states=states,
    )
