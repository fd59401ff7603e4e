"""A synthetic online service platform: the default dataset of the library.

The generator plants a known structure that PEACE is meant to recover: latent *concepts* (think
"hotels", "hot pot", "car rental") own the entities of an entity graph, items of every domain are
tied to a concept through their entities, and users pick items of the concepts they are interested
in, in every domain alike. Source domains (``payment``, ``feed``, ``search``) are large and cover
the whole period; target domains (``travel``, ``rental``, ``dining``) launch later, are sparse,
cover a biased subset of the concepts and describe their items mostly with entities that source
items rarely use, so the entity graph is the bridge between the two. The full generative story is
in ``docs/synthetic.md``.

Everything is drawn from :func:`numpy.random.default_rng` generators derived from one
:class:`numpy.random.SeedSequence`, so a seed fixes every table. Interactions are generated and
written in chunks of users with :class:`pyarrow.parquet.ParquetWriter`, so the ``large`` size
streams to disk with modest memory.

The parts: :mod:`~peace.data.synthetic.params` (domains, sizes, the constants of the story),
:mod:`~peace.data.synthetic.world` (concepts and the entity graph),
:mod:`~peace.data.synthetic.catalog` (items, phi and item profiles),
:mod:`~peace.data.synthetic.users` (interests, profiles, interactions); this module runs them in
order and writes the tables.

Example::

    from peace.data.synthetic import generate

    summary = generate("data/synth-small", seed=0, size="small")
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from peace.data.contract import OPTIONAL_TABLES, REQUIRED_TABLES, write_table
from peace.data.synthetic.catalog import build_catalog, concept_traits
from peace.data.synthetic.draws import shuffled_labels
from peace.data.synthetic.params import (
    EPOCH,
    RELATIONS,
    SIZES,
    SOURCE_DOMAINS,
    TARGET_DOMAINS,
    SyntheticSize,
)
from peace.data.synthetic.params import SOURCE_PARTICIPATION as SOURCE_PARTICIPATION
from peace.data.synthetic.users import user_chunk
from peace.data.synthetic.world import build_world

__all__ = [
    "RELATIONS",
    "SIZES",
    "SOURCE_DOMAINS",
    "TARGET_DOMAINS",
    "SyntheticSize",
    "generate",
]

_INTERACTION_SCHEMA = pa.schema(
    [
        ("user", pa.string()),
        ("item", pa.string()),
        ("domain", pa.string()),
        ("timestamp", pa.int64()),
        ("label", pa.int8()),
    ]
)


def generate(out: str | Path, seed: int = 0, size: str = "small", progress: bool = False) -> dict:
    """Generate a synthetic service platform and write it to ``out`` in the data contract.

    Args:
        out: folder to write ``interactions``, ``domains``, ``item_entities``, ``triplets``,
            ``user_profiles`` and ``item_profiles`` to (Parquet); created if missing.
        seed: seed of every random draw; the same seed gives identical tables.
        size: ``small`` (seconds on a laptop), ``medium`` (~1M interactions) or ``large``
            (millions of interactions, streamed to disk).
        progress: print the stages and their timings to standard error.

    Returns:
        ``{"size", "seed", "users", "entities", "triplets", "items": {domain: n},
        "interactions": {domain: n}}``.

    Raises:
        ValueError: ``size`` is not one of :data:`SIZES`, or ``seed`` is negative.
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; valid sizes are {', '.join(SIZES)}.")
    if int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}.")
    spec = SIZES[size]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clock = _Clock(progress)

    graph_seq, catalog_seq, user_seq, concept_seq = np.random.SeedSequence(int(seed)).spawn(4)
    world = build_world(spec, np.random.default_rng(graph_seq))
    clock.tick(f"entity graph: {world.n_entities} entities, {len(world.triplets)} triplets")

    traits = concept_traits(spec.n_concepts, np.random.default_rng(concept_seq))
    domains, item_entities, item_profiles = build_catalog(
        spec, world, traits, np.random.default_rng(catalog_seq)
    )
    n_items = sum(len(d.item_concept) for d in domains)
    item_labels = shuffled_labels("i", n_items, np.random.default_rng(catalog_seq.spawn(1)[0]))
    clock.tick(f"catalogue: {n_items} items over {len(domains)} domains")

    counts = {d.name: 0 for d in domains}
    user_frames = []
    user_labels = shuffled_labels("u", spec.n_users, np.random.default_rng(user_seq.spawn(1)[0]))
    user_labels_pa = pa.array(user_labels, type=pa.string())
    item_labels_pa = pa.array(item_labels, type=pa.string())
    domain_names_pa = pa.array([d.name for d in domains], type=pa.string())
    starts = list(range(0, spec.n_users, spec.chunk_users))
    chunk_seqs = user_seq.spawn(len(starts))
    with pq.ParquetWriter(out / "interactions.parquet", _INTERACTION_SCHEMA) as writer:
        for k, (lo, chunk_seq) in enumerate(zip(starts, chunk_seqs, strict=True)):
            hi = min(lo + spec.chunk_users, spec.n_users)
            rows, profile = user_chunk(
                spec, world, traits, domains, lo, hi, np.random.default_rng(chunk_seq)
            )
            user, item, dom, ts = rows
            for j, d in enumerate(domains):
                counts[d.name] += int(np.count_nonzero(dom == j))
            table = pa.Table.from_arrays(
                [
                    pc.take(user_labels_pa, pa.array(user)),
                    pc.take(item_labels_pa, pa.array(item)),
                    pc.take(domain_names_pa, pa.array(dom)),
                    pa.array(ts + EPOCH, type=pa.int64()),
                    pa.array(np.ones(len(user), dtype=np.int8)),
                ],
                schema=_INTERACTION_SCHEMA,
            )
            writer.write_table(table)
            profile.insert(0, "user", user_labels[lo:hi])
            user_frames.append(profile)
            clock.tick(f"users {lo}..{hi - 1} ({k + 1}/{len(starts)}): {len(user)} interactions")

    heads, rels, tails = world.triplets.T
    tables = {
        "domains": pd.DataFrame(
            {"domain": [d.name for d in domains], "role": [d.role for d in domains]}
        ),
        "item_entities": pd.DataFrame(
            {
                "item": item_labels[item_entities[:, 0]],
                "entity": world.labels[item_entities[:, 1]],
                "rank": item_entities[:, 2].astype(np.int64),
            }
        ),
        "triplets": pd.DataFrame(
            {
                "head": world.labels[heads],
                "relation": np.array(RELATIONS, dtype=object)[rels],
                "tail": world.labels[tails],
            }
        ),
        "user_profiles": pd.concat(user_frames, ignore_index=True),
        "item_profiles": item_profiles.assign(item=item_labels[item_profiles["item"]]),
    }
    for name, frame in tables.items():
        _write_table(frame, out, name)
    clock.tick(f"tables written to {out}")

    return {
        "size": spec.name,
        "seed": int(seed),
        "users": spec.n_users,
        "entities": world.n_entities,
        "triplets": len(world.triplets),
        "items": {d.name: len(d.item_concept) for d in domains},
        "interactions": counts,
    }


class _Clock:
    """Prints stage timings to standard error when asked to."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.start = time.perf_counter()

    def tick(self, message: str) -> None:
        """Report one finished stage with the seconds elapsed since the start."""
        if self.enabled:
            print(f"[{time.perf_counter() - self.start:7.2f}s] {message}", file=sys.stderr)


def _write_table(frame: pd.DataFrame, out: Path, name: str) -> None:
    """Write one table of the contract as Parquet, with its id columns as strings."""
    columns = REQUIRED_TABLES.get(name) or OPTIONAL_TABLES[name]
    missing = [c for c in columns if c not in frame.columns]
    if missing:  # pragma: no cover - a bug in this module, not in user data
        raise AssertionError(f"table {name!r} lacks columns {missing}")
    write_table(frame, out, name)
